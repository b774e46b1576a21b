"""Accuracy of top-K lists: Recall@K, NDCG@K, MRR@K and hit rate (DESIGN.md section 5).

Conventions (binary relevance, ranks r counted from 1):

- Recall@K = |relevant in L_u| / |relevant| per query (hit@K with one positive);
- NDCG@K = DCG/IDCG with gain 1 and discount 1/log2(r+1), IDCG over min(|relevant|, K);
- MRR@K = 1/r of the first relevant item in the top K, 0 if none;
- HitRate@K = 1 if any relevant item is in the top K.

Each is a mean over queries that have at least one relevant item **in the candidate
set**; positives missing from the candidate set cannot be retrieved, so they are left
out of the denominators and counted (``missing_positives``) instead.

>>> import tensorflow as tf
>>> top = tf.constant([[3, 1, 7]])          # ranks 1..3
>>> pos = tf.constant([[1, 9, -1]])         # relevant: items 1 and 9 (-1 pads)
>>> t = accuracy_terms(top, pos, ks=(3,))
>>> [round(float(t[3][name][0]), 4) for name in ("recall", "ndcg", "mrr", "hit")]
[0.5, 0.3869, 0.5, 1.0]
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Sequence

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import LastCall, TopKMetric
from tfrs_diag.metrics.topk import MISSING

ACCURACY_NAMES = ("recall", "ndcg", "mrr", "hit_rate")


def discounts(k: int) -> tf.Tensor:
    """1/log2(r+1) for r = 1..k."""
    return tf.constant([1.0 / math.log2(r + 1) for r in range(1, k + 1)], tf.float32)


_positives_in_order = contextvars.ContextVar("positives_in_order", default=False)


@contextlib.contextmanager
def positives_in_search_order():
    """Within this block (at trace time), positives rows are promised ascending with
    negative pads last, so the hit matrix skips its sort. `TopKEvaluator` builds them so.

    >>> import tensorflow as tf
    >>> with positives_in_search_order():
    ...     hits = hit_matrix(tf.constant([[5, 2, 9]]), tf.constant([[2, 9, -1]]))
    >>> hits.numpy().tolist()
    [[0.0, 1.0, 1.0]]
    """
    token = _positives_in_order.set(True)
    try:
        yield
    finally:
        _positives_in_order.reset(token)


def hit_matrix(top_indices: tf.Tensor, positives: tf.Tensor) -> tf.Tensor:
    """[B, K] float: 1 where the item at that rank is one of the query's positives."""
    return _hit_matrix(tf.cast(top_indices, tf.int32), tf.cast(positives, tf.int32))


@LastCall
def _hit_matrix(top_indices, positives):
    # Binary search in each query's sorted positives: O(B K log P) rather than the
    # O(B K P) all-pairs comparison (P reaches hundreds for heavy users).
    top = tf.cast(top_indices, tf.int32)
    pos = tf.where(positives >= 0, positives, tf.int32.max)  # pads and missing sort last, never match
    sorted_pos = pos if _positives_in_order.get() else tf.sort(pos, axis=1)
    at = tf.minimum(tf.searchsorted(sorted_pos, top, side="left"), tf.shape(sorted_pos)[1] - 1)
    found = tf.gather(sorted_pos, at, batch_dims=1)
    return tf.cast(tf.equal(found, top), tf.float32)


def accuracy_terms(top_indices: tf.Tensor, positives: tf.Tensor, ks: Sequence[int]) -> dict:
    """Per-query accuracy at each K (prefixes of one top-max(ks) list).

    Returns ``{k: {"recall", "ndcg", "mrr", "hit"} -> [B]}`` plus under the keys
    ``"valid"`` ([B] bool, queries with a positive in the candidate set),
    ``"num_relevant"`` ([B]) and ``"missing"`` ([B], positives not in the candidates).
    """
    return _accuracy_terms(tf.cast(top_indices, tf.int32), tf.cast(positives, tf.int32), tuple(ks))


@LastCall
def _accuracy_terms(top_indices, positives, ks) -> dict:
    pos = positives
    num_relevant = tf.reduce_sum(tf.cast(pos >= 0, tf.float32), axis=1)
    missing = tf.reduce_sum(tf.cast(tf.equal(pos, MISSING), tf.float32), axis=1)
    hits = _hit_matrix(top_indices, pos)
    k_max = max(ks)
    disc = discounts(k_max)
    denom = tf.maximum(num_relevant, 1.0)
    first_hit = tf.argmax(hits, axis=1, output_type=tf.int32)  # 0 when no hit; masked below
    out: dict = {"valid": num_relevant > 0, "num_relevant": num_relevant, "missing": missing}
    for k in ks:
        h = hits[:, :k]
        n_hits = tf.reduce_sum(h, axis=1)
        ideal = tf.cumsum(disc[:k])  # ideal DCG for 1..k relevant items
        idcg = tf.gather(ideal, tf.cast(tf.minimum(tf.maximum(num_relevant, 1.0), k), tf.int32) - 1)
        any_hit = n_hits > 0
        out[k] = {
            "recall": n_hits / denom,
            "ndcg": tf.reduce_sum(h * disc[:k], axis=1) / idcg,
            "mrr": tf.where(any_hit & (first_hit < k), 1.0 / tf.cast(first_hit + 1, tf.float32), 0.0),
            "hit": tf.cast(any_hit, tf.float32),
        }
    return out


def stack_terms(terms: dict, ks: Sequence[int]) -> tf.Tensor:
    """[B, len(ks), 4] of (recall, ndcg, mrr, hit) per query, zero for invalid queries."""
    valid = tf.cast(terms["valid"], tf.float32)[:, None]
    per_k = [tf.stack([terms[k]["recall"], terms[k]["ndcg"], terms[k]["mrr"], terms[k]["hit"]], axis=1) * valid
             for k in ks]
    return tf.stack(per_k, axis=1)


class RankingAccuracy(TopKMetric):
    """Streaming Recall@K, NDCG@K, MRR@K and hit rate; several K from one search.

    >>> import tensorflow as tf
    >>> m = RankingAccuracy(ks=(1, 3))
    >>> m.update_state(tf.constant([[3, 1, 7], [2, 0, 5]]), tf.constant([[1, -1], [4, -1]]))
    >>> r = m.result()
    >>> float(r["hit_rate_at_1"]), float(r["hit_rate_at_3"]), float(r["mrr_at_3"])
    (0.0, 0.5, 0.25)
    """

    def __init__(self, ks: Sequence[int] = (10,), name: str = "ranking_accuracy", **kwargs):
        super().__init__(ks, name=name, **kwargs)
        self.sums = self.add_weight(name="sums", shape=(len(self.ks), 4), initializer="zeros")
        self.queries = self.add_weight(name="queries", shape=(), initializer="zeros")
        self.missing = self.add_weight(name="missing_positives", shape=(), initializer="zeros")
        self.empty = self.add_weight(name="queries_without_positives", shape=(), initializer="zeros")

    def update_state(self, top_indices, positives=None, user_group=None, exclude=None, sample_weight=None):
        self.check_no_weights(sample_weight)
        if positives is None:
            raise ValueError("RankingAccuracy needs positives: the held-out relevant items of each query")
        terms = accuracy_terms(self.check_top(top_indices), positives, self.ks)
        self.sums.assign_add(tf.reduce_sum(stack_terms(terms, self.ks), axis=0))
        valid = tf.cast(terms["valid"], tf.float32)
        self.queries.assign_add(tf.reduce_sum(valid))
        self.empty.assign_add(tf.reduce_sum(1.0 - valid))
        self.missing.assign_add(tf.reduce_sum(terms["missing"]))

    def result(self):
        q = tf.maximum(self.queries, 1.0)
        out = {}
        for j, k in enumerate(self.ks):
            for m, name in enumerate(ACCURACY_NAMES):
                out[f"{name}_at_{k}"] = self.sums[j, m] / q
        out["evaluated_queries"] = self.queries
        out["missing_positives"] = self.missing
        return out

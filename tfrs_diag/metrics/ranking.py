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
>>> [round(float(x), 4) for x in t.per_query[0, 0]]     # recall, ndcg, mrr, hit
[0.5, 0.3869, 0.5, 1.0]
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import LastCall, TopKMetric, prefix_matrix, searchable_positives
from tfrs_diag.metrics.topk import MISSING

ACCURACY_NAMES = ("recall", "ndcg", "mrr", "hit_rate")


def discount_values(k: int) -> np.ndarray:
    """1/log2(r+1) for r = 1..k, float64 (for constants built on the host)."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def discounts(k: int) -> tf.Tensor:
    """1/log2(r+1) for r = 1..k."""
    return tf.constant(discount_values(k), tf.float32)


def hit_matrix(top_indices: tf.Tensor, positives: tf.Tensor) -> tf.Tensor:
    """[B, K] float: 1 where the item at that rank is one of the query's positives."""
    return _hit_matrix(tf.cast(top_indices, tf.int32), tf.cast(positives, tf.int32))


@LastCall
def _hit_matrix(top_indices, positives):
    # Binary search in each query's sorted positives: O(B K log P) rather than the
    # O(B K P) all-pairs comparison (P reaches hundreds for heavy users).
    top = tf.cast(top_indices, tf.int32)
    sorted_pos = searchable_positives(positives)  # pads and missing are int32 max: never match
    at = tf.minimum(tf.searchsorted(sorted_pos, top, side="left"), tf.shape(sorted_pos)[1] - 1)
    found = tf.gather(sorted_pos, at, batch_dims=1)
    return tf.cast(tf.equal(found, top), tf.float32)


class AccuracyTerms(NamedTuple):
    """Per-query accuracy of one batch of top-K lists (see `accuracy_terms`)."""

    per_query: tf.Tensor  # [B, len(ks), 4]: ACCURACY_NAMES per K; 0 for queries without a valid positive
    valid: tf.Tensor  # [B] float: 1 where the query has a positive in the candidate set
    missing: tf.Tensor  # [B] float: positives whose id is not in the candidate set


def accuracy_terms(top_indices: tf.Tensor, positives: tf.Tensor, ks: Sequence[int]) -> AccuracyTerms:
    """Per-query Recall, NDCG, MRR and hit at each K (prefixes of one top-max(ks) list)."""
    return _accuracy_terms(tf.cast(top_indices, tf.int32), tf.cast(positives, tf.int32), tuple(ks))


@LastCall
def _accuracy_terms(top_indices, positives, ks) -> AccuracyTerms:
    sorted_pos = searchable_positives(positives)
    b = tf.shape(sorted_pos)[0]
    # Valid positives come first in each searchable row: their count is where int32 max starts.
    num_relevant = tf.cast(tf.searchsorted(sorted_pos, tf.fill([b, 1], tf.int32.max))[:, 0], tf.float32)
    missing = tf.reduce_sum(tf.cast(tf.equal(positives, MISSING), tf.float32), axis=1)
    hits = _hit_matrix(top_indices, positives)
    nk = len(ks)
    disc = discount_values(max(ks))
    # Hit counts and DCG at every K in one matmul: [B, K] @ [K, 2 nk].
    sums = tf.matmul(hits, tf.concat([prefix_matrix(ks), prefix_matrix(ks, disc)], axis=1))
    n_hits, dcg = sums[:, :nk], sums[:, nk:]
    ideal = tf.constant(np.cumsum(disc), tf.float32)  # IDCG of 1..K relevant
    ks_f = tf.constant(ks, tf.float32)[None, :]
    idcg = tf.gather(ideal, tf.cast(tf.minimum(tf.maximum(num_relevant, 1.0)[:, None], ks_f), tf.int32) - 1)
    any_hit = n_hits > 0
    # The first hit of the whole list is within K whenever there is a hit within K.
    first_hit = tf.argmax(hits, axis=1, output_type=tf.int32)
    mrr = tf.where(any_hit, 1.0 / tf.cast(first_hit + 1, tf.float32)[:, None], 0.0)
    valid = tf.cast(num_relevant > 0, tf.float32)
    per_query = tf.stack([n_hits / tf.maximum(num_relevant, 1.0)[:, None], dcg / idcg, mrr,
                          tf.cast(any_hit, tf.float32)], axis=2) * valid[:, None, None]
    return AccuracyTerms(per_query, valid, missing)


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
        self.sums.assign_add(tf.reduce_sum(terms.per_query, axis=0))
        valid = tf.reduce_sum(terms.valid)
        self.queries.assign_add(valid)
        self.empty.assign_add(tf.cast(tf.shape(terms.valid)[0], tf.float32) - valid)
        self.missing.assign_add(tf.reduce_sum(terms.missing))

    def result_blocks(self):
        return [([f"{name}_at_{k}" for k in self.ks for name in ACCURACY_NAMES],  # sums is [K, metric]
                 lambda: self.sums / tf.maximum(self.queries, 1.0)),
                (["evaluated_queries", "missing_positives"], lambda: tf.stack([self.queries, self.missing]))]

"""Which top-K slots hold a relevant item, and the per-query accuracy that follows (docs/design.md section 5).

Conventions (binary relevance, ranks r counted from 1):

- Recall@K = |relevant in L_u| / |relevant| per query (hit@K with one positive);
- NDCG@K = DCG/IDCG with gain 1 and discount 1/log2(r+1), IDCG over min(|relevant|, K);
- MRR@K = 1/r of the first relevant item in the top K, 0 if none;
- HitRate@K = 1 if any relevant item is in the top K.

Each is a mean over queries that have at least one relevant item **in the candidate
set**; positives missing from the candidate set cannot be retrieved, so they are left
out of the denominators and counted (``missing_positives``) instead.

These are plain tensor functions; `tfrs_diag.metrics.batch.TopKBatch` calls them once per
step and shares the results between the metric families.

>>> import tensorflow as tf
>>> top = tf.constant([[3, 1, 7]])                                  # ranks 1..3
>>> pos = searchable_positives(tf.constant([[1, 9, -1]]), in_search_order=False)   # relevant: 1, 9
>>> t = accuracy_terms(hit_matrix(top, pos), relevant_counts(pos), ks=(3,))
>>> [round(float(x), 4) for x in t.per_query[0, 0]]                # recall, ndcg, mrr, hit
[0.5, 0.3869, 0.5, 1.0]
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import prefix_matrix

ACCURACY_NAMES = ("recall", "ndcg", "mrr", "hit_rate")


def discount_values(k: int) -> np.ndarray:
    """1/log2(r+1) for r = 1..k, float64 (for constants built on the host)."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def discounts(k: int) -> tf.Tensor:
    """1/log2(r+1) for r = 1..k."""
    return tf.constant(discount_values(k), tf.float32)


def searchable_positives(positives: tf.Tensor, in_search_order: bool) -> tf.Tensor:
    """[B, P] int32: each row's positives ascending, pads and missing ids as int32 max (last).

    The hit matrix searches it, relevant-item counts bincount it (int32 max falls outside
    every catalog) and the number of valid positives is the position of the first int32
    max. ``in_search_order`` promises rows already ascending with negative entries last
    (as `tfrs_diag.evaluate` builds them), which skips the sort.

    >>> searchable_positives(tf.constant([[9, -1, 2]]), in_search_order=False).numpy().tolist()
    [[2, 9, 2147483647]]
    """
    pos = tf.cast(positives, tf.int32)
    pos = tf.where(pos >= 0, pos, tf.int32.max)
    return pos if in_search_order else tf.sort(pos, axis=1)


def relevant_counts(searchable: tf.Tensor) -> tf.Tensor:
    """[B] float: how many positives of each query are in the candidate set."""
    b = tf.shape(searchable)[0]
    # Valid positives come first in each searchable row: their count is where int32 max starts.
    return tf.cast(tf.searchsorted(searchable, tf.fill([b, 1], tf.int32.max))[:, 0], tf.float32)


def hit_matrix(top_indices: tf.Tensor, searchable: tf.Tensor) -> tf.Tensor:
    """[B, K] float: 1 where the item at that rank is one of the query's ``searchable`` positives."""
    # Binary search in each query's sorted positives: O(B K log P) rather than the
    # O(B K P) all-pairs comparison (P reaches hundreds for heavy users).
    top = tf.cast(top_indices, tf.int32)
    at = tf.minimum(tf.searchsorted(searchable, top, side="left"), tf.shape(searchable)[1] - 1)
    found = tf.gather(searchable, at, batch_dims=1)
    return tf.cast(tf.equal(found, top), tf.float32)


class AccuracyTerms(NamedTuple):
    """Per-query accuracy of one batch of top-K lists (see `accuracy_terms`)."""

    per_query: tf.Tensor  # [B, len(ks), 4]: ACCURACY_NAMES per K; 0 for queries without a valid positive
    valid: tf.Tensor  # [B] float: 1 where the query has a positive in the candidate set


def accuracy_terms(hits: tf.Tensor, num_relevant: tf.Tensor, ks: Sequence[int]) -> AccuracyTerms:
    """Per-query Recall, NDCG, MRR and hit at each K (prefixes of one top-max(ks) list).

    ``hits`` is the [B, max(ks)] `hit_matrix`, ``num_relevant`` the [B] `relevant_counts`.
    """
    ks = tuple(ks)
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
    return AccuracyTerms(per_query, valid)

"""`RankingAccuracy`: streaming Recall@K, NDCG@K, MRR@K and hit rate (docs/design.md section 5).

The per-query definitions and their conventions are in `tfrs_diag.metrics.relevance`.
"""

from __future__ import annotations

from typing import Sequence

from tfrs_diag._keras import tf
from tfrs_diag.metrics.family import TopKMetric
from tfrs_diag.metrics.relevance import ACCURACY_NAMES


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

    def accumulate(self, batch):
        batch.require_positives("RankingAccuracy")
        self.check_top(batch)
        terms = batch.accuracy_terms(self.ks)
        self.sums.assign_add(tf.reduce_sum(terms.per_query, axis=0))
        valid = tf.reduce_sum(terms.valid)
        self.queries.assign_add(valid)
        self.empty.assign_add(tf.cast(tf.shape(terms.valid)[0], tf.float32) - valid)
        self.missing.assign_add(tf.reduce_sum(batch.missing_positives))

    def result_blocks(self):
        return [([f"{name}_at_{k}" for k in self.ks for name in ACCURACY_NAMES],  # sums is [K, metric]
                 lambda: self.sums / tf.maximum(self.queries, 1.0)),
                (["evaluated_queries", "missing_positives"], lambda: tf.stack([self.queries, self.missing]))]

"""Catalog-side metrics of top-K lists: coverage, Gini, entropy, novelty, ILD, ARP, APLT.

Definitions follow docs/design.md section 5; ``c(i)`` is how often item i appears over all
lists, ``N = sum c(i)``, ``I`` the catalog, ``phi(i)`` item i's share of training
interactions:

- ItemCoverage@K = |union L_u| / |I| (a fraction, not a count as in Elliot);
- Gini@K = sum_j (2j - |I| - 1) c_(j) / (|I| N) over counts sorted ascending over all of I
  (zeros included): 0 when every item is recommended equally, -> 1 when concentrated
  (Elliot reports 1 - Gini);
- Entropy@K = -sum p_i log2 p_i with p_i = c(i)/N, also divided by log2 |I| (RecBole
  divides by the number of distinct recommended items instead);
- Novelty@K = mean over recommended slots of -log2 phi(i); items never seen in training
  use the smallest non-zero phi (as if seen once) so the mean stays finite;
- ILD@K = mean over queries of 1 - mean_{i<j in L_u} cos(e_i, e_j), computed in O(Kd) per
  query as sum_{i<j} cos = (||sum_i e_i||^2 - K) / 2 for unit vectors;
- ARP@K = mean over queries of mean phi(i) over L_u;
- APLT@K = mean over queries of |L_u ∩ Tail| / |L_u| (tail: items outside the head, the
  most popular items covering 80% of training interactions).

>>> import numpy as np
>>> float(gini(np.array([0.0, 0.0, 0.0, 4.0])))   # one item takes everything: (|I|-1)/|I|
0.75
>>> float(gini(np.array([2.0, 2.0, 2.0, 2.0])))
0.0
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import bincount, check_vector, k_segments, names_at, prefix_matrix
from tfrs_diag.metrics.family import TopKMetric


def gini(counts) -> tf.Tensor:
    """Gini index of non-negative ``counts`` over the whole catalog (last axis; 0 if all zero)."""
    c = tf.sort(tf.cast(counts, tf.float64), axis=-1)
    n = tf.cast(tf.shape(c)[-1], tf.float64)
    total = tf.reduce_sum(c, axis=-1)
    j = tf.range(1, tf.shape(c)[-1] + 1, dtype=tf.float64)
    value = tf.reduce_sum((2.0 * j - n - 1.0) * c, axis=-1) / tf.maximum(n * total, 1e-300)
    return tf.where(total > 0, value, 0.0)


def entropy(counts) -> tf.Tensor:
    """Shannon entropy in bits of the distribution ``counts / sum(counts)`` (last axis)."""
    c = tf.cast(counts, tf.float64)
    p = c / tf.maximum(tf.reduce_sum(c, axis=-1, keepdims=True), 1e-300)
    return -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.where(p > 0, p, 1.0)) / math.log(2.0), 0.0), axis=-1)


def coverage(counts) -> tf.Tensor:
    """Share of the catalog (last axis) with a non-zero count."""
    return tf.reduce_mean(tf.cast(tf.cast(counts, tf.float64) > 0, tf.float64), axis=-1)


def self_information(item_popularity: np.ndarray) -> np.ndarray:
    """-log2 phi(i), with phi = 0 replaced by the smallest non-zero share."""
    phi = np.asarray(item_popularity, np.float64)
    positive = phi[phi > 0]
    if positive.size == 0:
        raise ValueError("item_popularity has no positive entry; pass each item's share of training interactions")
    return -np.log2(np.where(phi > 0, phi, positive.min()))


def intra_list_similarity_sum(unit_rows: tf.Tensor, row_sq: tf.Tensor) -> tf.Tensor:
    """[B] sum over pairs i<j of cos(e_i, e_j) within each list, in O(Kd) per list.

    ``unit_rows`` [B, K, d] are the lists' l2-normalised item embeddings and ``row_sq``
    [B, K] their squared norms. ``||sum_i u_i||^2 = sum_i ||u_i||^2 + 2 sum_{i<j} u_i.u_j``;
    subtracting the actual squared norms (1, or 0 for an all-zero row such as a padding
    item) rather than K keeps zero rows at cosine 0 with everything.

    >>> import tensorflow as tf
    >>> u = tf.constant([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])   # two equal, one orthogonal
    >>> float(intra_list_similarity_sum(u, tf.ones([1, 3]))[0])
    1.0
    """
    s = tf.reduce_sum(tf.square(tf.reduce_sum(unit_rows, axis=1)), axis=1)
    return (s - tf.reduce_sum(row_sq, axis=1)) / 2.0


class ItemDiversity(TopKMetric):
    """Streaming coverage, Gini, entropy, novelty and ILD of top-K lists.

    Args:
      num_items: catalog size |I| (candidate indices are 0..num_items-1).
      ks: list lengths; every K is a prefix of one top-max(ks) search.
      item_popularity: phi(i), each item's share of training interactions (for novelty).
      item_embeddings: [num_items, d] candidate embeddings (for ILD); normalised here.

    State is item counts per K plus sums, all merged by summation, so results are the
    same batched, in one shot or under `MirroredStrategy`.

    >>> import tensorflow as tf
    >>> m = ItemDiversity(num_items=4, ks=(2,))
    >>> m.update_state(tf.constant([[0, 1], [0, 2]]))
    >>> {k: round(float(v), 4) for k, v in m.result().items()}["coverage_at_2"]
    0.75
    """

    def __init__(self, num_items: int, ks: Sequence[int] = (10,), *, item_popularity=None, item_embeddings=None,
                 name: str = "item_diversity", **kwargs):
        super().__init__(ks, num_items=num_items, name=name, **kwargs)
        nk = len(self.ks)
        self.counts = self.add_weight(name="counts", shape=(nk, self.num_items), initializer="zeros")
        self.novelty_sum = self.add_weight(name="novelty_sum", shape=(nk,), initializer="zeros")
        self.ild_sum = self.add_weight(name="ild_sum", shape=(nk,), initializer="zeros")
        self.queries = self.add_weight(name="queries", shape=(), initializer="zeros")
        self._info = None
        if item_popularity is not None:
            phi = check_vector(item_popularity, self.num_items, "item_popularity")
            self._info = tf.constant(self_information(phi), tf.float64)
        # Not metric state (never reset or summed), so kept out of Keras' tracking.
        object.__setattr__(self, "_unit", None)
        object.__setattr__(self, "_unit_sq", None)
        if item_embeddings is not None:
            self.set_item_embeddings(item_embeddings)

    def set_item_embeddings(self, item_embeddings) -> None:
        """Sets (or updates, e.g. after an epoch of training) the embeddings ILD uses."""
        emb = tf.convert_to_tensor(item_embeddings, tf.float32)
        if emb.shape.rank != 2 or emb.shape[0] != self.num_items:
            raise ValueError(f"item_embeddings must have shape [num_items={self.num_items}, d], got {emb.shape}")
        unit = tf.math.l2_normalize(emb, axis=1)
        # Squared norm of each unit row: 1, or 0 for an all-zero row (a padding item).
        unit_sq = tf.reduce_sum(tf.square(unit), axis=1)
        if self._unit is None or self._unit.shape != unit.shape:
            with tf.init_scope():
                object.__setattr__(self, "_unit", tf.Variable(unit, trainable=False, name="unit_item_embeddings"))
                object.__setattr__(self, "_unit_sq", tf.Variable(unit_sq, trainable=False, name="unit_item_sq"))
        else:
            self._unit.assign(unit)
            self._unit_sq.assign(unit_sq)

    def accumulate(self, batch):
        top = self.check_top(batch)
        b = tf.cast(tf.shape(top)[0], tf.float32)
        counts = batch.item_counts(self.ks, self.num_items)  # [nk, N], shared with PopularityBias
        # Slot sums of per-item values are counts @ values: no [B, K] gathers.
        if self._info is not None:
            # float64: a float32 dot over the catalog loses the 1e-6 agreement with the per-slot sum.
            self.novelty_sum.assign_add(tf.cast(tf.linalg.matvec(tf.cast(counts, tf.float64), self._info), tf.float32))
        if self._unit is not None:
            self.ild_sum.assign_add(self._ild_sums(top, counts, b))
        self.counts.assign_add(counts)
        self.queries.assign_add(b)

    def _ild_sums(self, top, counts, b):
        # sum_u ILD_u = B - sum_u (||sum_i u_i||^2 - sum_i ||u_i||^2) / (K (K-1)); the first
        # term needs the lists' embedding sums, the second is linear in the counts.
        row_sq = tf.linalg.matvec(counts, self._unit_sq)  # [nk]
        out, running = [], None
        for j, (lo, k) in enumerate(k_segments(self.ks)):
            part = tf.reduce_sum(tf.gather(self._unit, top[:, lo:k]), axis=1)  # [B, d]
            running = part if running is None else running + part
            if k > 1:
                out.append(b - (tf.reduce_sum(tf.square(running)) - row_sq[j]) / (k * (k - 1)))
            else:
                out.append(tf.constant(0.0))
        return tf.stack(out)

    def result_blocks(self):
        ks = self.ks
        log_items = math.log2(self.num_items) if self.num_items > 1 else 1.0
        blocks = [(names_at("coverage", ks), lambda: tf.cast(coverage(self.counts), tf.float32)),
                  (names_at("gini", ks), lambda: tf.cast(gini(self.counts), tf.float32))]
        if self.num_items > 1:
            blocks.append((names_at("entropy", ks) + names_at("entropy_norm", ks),
                           lambda: tf.cast(entropy(self.counts), tf.float32) * tf.constant([[1.0], [1.0 / log_items]])))
        else:  # log2 |I| = 0: the normalised entropy of a one-item catalog is undefined, left out
            blocks.append((names_at("entropy", ks), lambda: tf.cast(entropy(self.counts), tf.float32)))
        if self._info is not None:
            blocks.append((names_at("novelty", ks), lambda: self.novelty_sum / (
                tf.maximum(self.queries, 1.0) * tf.constant(ks, tf.float32))))
        multi = [j for j, k in enumerate(ks) if k > 1]  # ILD needs pairs: ILD@1 is undefined, left out
        if self._unit is not None and multi:
            blocks.append((names_at("ild", [ks[j] for j in multi]),
                           lambda: tf.gather(self.ild_sum, tf.constant(multi, tf.int32)) / tf.maximum(self.queries, 1.0)))
        return blocks


class PopularityBias(TopKMetric):
    """Streaming ARP, APLT, PopRSP and PopREO of top-K lists (head/tail groups).

    PopRSP and PopREO follow Zhu et al. (2020) over the groups {head, tail}: the
    standard deviation over the mean of the groups' probabilities,
    population std (for two groups |a-b|/2):

    - RSP: P(recommended | g) = (sum_u |L_u ∩ g|) / (sum_u |g| - items of g excluded
      for u), i.e. per available candidate of g;
    - REO: P(recommended | g, relevant) = hits of g in the top K / relevant items of g.

    0 is parity; larger values mean the head is favoured (or the tail). With a group
    that has no available candidate (RSP) or no relevant item (REO), nothing was
    measured for it: the value is undefined, NaN here, and `tfrs_diag.evaluate` leaves
    it out of its results (it is never the maximal disparity 1).
    """

    def __init__(self, ks: Sequence[int], item_popularity, *, item_is_head=None, name: str = "popularity_bias",
                 **kwargs):
        phi = np.asarray(item_popularity, np.float64)
        super().__init__(ks, num_items=len(phi), name=name, **kwargs)
        phi = check_vector(phi, self.num_items, "item_popularity")
        if item_is_head is None:
            from tfrs_diag.datasets import head_tail_split

            item_is_head = head_tail_split(phi)
        head = check_vector(item_is_head, self.num_items, "item_is_head").astype(bool)
        self._tail = tf.constant(~head, tf.float32)
        self._phi_tail = tf.constant(np.stack([phi, ~head], axis=1), tf.float64)
        self._group_sizes = tf.constant([head.sum(), (~head).sum()], tf.float32)
        nk = len(self.ks)
        self.arp_sum = self.add_weight(name="arp_sum", shape=(nk,), initializer="zeros")
        self.aplt_sum = self.add_weight(name="aplt_sum", shape=(nk,), initializer="zeros")
        self.recommended = self.add_weight(name="recommended", shape=(nk, 2), initializer="zeros")
        self.hits = self.add_weight(name="hits", shape=(nk, 2), initializer="zeros")
        self.available = self.add_weight(name="available", shape=(2,), initializer="zeros")
        self.relevant = self.add_weight(name="relevant", shape=(2,), initializer="zeros")
        self.queries = self.add_weight(name="queries", shape=(), initializer="zeros")

    def accumulate(self, batch):
        top = self.check_top(batch)
        b = tf.cast(tf.shape(top)[0], tf.float32)
        ks = tf.constant(self.ks, tf.float32)
        # Per K, the slots' summed phi and tail membership: counts @ [phi, tail].
        counts = tf.cast(batch.item_counts(self.ks, self.num_items), tf.float64)
        sums = tf.cast(tf.matmul(counts, self._phi_tail), tf.float32)  # [nk, 2]
        self.arp_sum.assign_add(sums[:, 0] / ks)
        self.aplt_sum.assign_add(sums[:, 1] / ks)
        self.recommended.assign_add(tf.stack([b * ks - sums[:, 1], sums[:, 1]], axis=1))
        if batch.positives is not None:
            hits = batch.hits
            per_rank = tf.stack([tf.reduce_sum(hits, axis=0),
                                 tf.reduce_sum(hits * tf.gather(self._tail, top[:, :max(self.ks)]), axis=0)])
            hit = tf.matmul(per_rank, prefix_matrix(self.ks))  # [2, nk]: all hits, tail hits
            self.hits.assign_add(tf.stack([hit[0] - hit[1], hit[1]], axis=1))
            self.relevant.assign_add(self._head_tail(batch.relevant_item_counts(self.num_items)))
        avail = b * self._group_sizes
        if batch.exclude is not None:
            ex = batch.exclude
            avail -= self._head_tail(bincount(tf.where(ex >= 0, ex, self.num_items), self.num_items))
        self.available.assign_add(avail)
        self.queries.assign_add(b)

    def _head_tail(self, per_item):
        """[N] item counts -> [2] (head, tail) totals."""
        tail = tf.reduce_sum(per_item * self._tail)
        return tf.stack([tf.reduce_sum(per_item) - tail, tail])

    @staticmethod
    def _std_over_mean(numerator, denominator):
        """Per row of [nk, 2]: population std over mean of the (head, tail) probabilities
        ``numerator / denominator``; NaN (undefined) where a group's denominator is 0.

        Both probabilities 0 (defined, equal) is parity: 0.
        """
        p = numerator / tf.maximum(denominator, 1.0)
        mean = tf.reduce_mean(p, axis=-1)
        value = tf.where(mean > 0, tf.math.reduce_std(p, axis=-1) / tf.maximum(mean, 1e-30), 0.0)
        return tf.where(tf.reduce_all(denominator > 0), value, tf.constant(float("nan"), value.dtype))

    def result_blocks(self):
        ks = self.ks
        return [(names_at("arp", ks) + names_at("aplt", ks),
                 lambda: tf.stack([self.arp_sum, self.aplt_sum]) / tf.maximum(self.queries, 1.0)),
                (names_at("pop_rsp", ks), lambda: self._std_over_mean(self.recommended, self.available)),
                (names_at("pop_reo", ks), lambda: self._std_over_mean(self.hits, self.relevant))]

"""Gradient statistics as pure TF functions, safe inside XLA-compiled train steps.

Every function here keeps static shapes (no `tf.unique`, no host round-trips), so the
same code runs eagerly, in `tf.function`, under `jit_compile=True` and per replica under
`tf.distribute`. Embedding gradients (`tf.IndexedSlices`) are never densified: duplicate
row indices are summed into at most ``batch_rows`` segments first.

>>> import tensorflow as tf
>>> g = tf.IndexedSlices(tf.constant([[1., 0.], [2., 0.], [0., 3.]]),
...                      tf.constant([4, 4, 9]), tf.constant([10, 2]))
>>> rows = deduplicate_rows(g)
>>> int(rows.num_unique), [round(float(x), 4) for x in row_norms(rows)[:2]]
(2, [3.0, 3.0])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from tfrs_diag._keras import tf


class DeduplicatedRows(NamedTuple):
    """Rows of an `IndexedSlices` gradient with duplicate indices summed.

    ``values[j]`` is the summed gradient of row ``indices[j]`` for ``j < num_unique``;
    slots from ``num_unique`` on are padding (zero values, ``valid`` False), which keeps
    shapes static for XLA.
    """

    indices: tf.Tensor  # [n] row ids, padded
    values: tf.Tensor  # [n, ...] float32
    valid: tf.Tensor  # [n] bool
    num_unique: tf.Tensor  # [] int32
    dense_size: tf.Tensor  # [] float32, number of entries of the dense gradient


def deduplicate_rows(grad: tf.IndexedSlices) -> DeduplicatedRows:
    """Sums duplicate rows of an `IndexedSlices` gradient without densifying it.

    A sort + segment sum stands in for `tf.unique`, whose dynamic output shape XLA
    cannot compile.
    """
    indices = tf.cast(grad.indices, tf.int64)
    values = tf.cast(grad.values, tf.float32)
    n = tf.size(indices)
    order = tf.argsort(indices, stable=True)
    sorted_idx = tf.gather(indices, order)
    # Each sorted id against its predecessor (roll, not slices: fewer ops to trace).
    position = tf.range(n)
    is_new = tf.not_equal(sorted_idx, tf.roll(sorted_idx, 1, 0)) | tf.equal(position, 0)
    segment = tf.cumsum(tf.cast(is_new, tf.int32)) - 1
    summed = tf.math.unsorted_segment_sum(tf.gather(values, order), segment, n)
    num_unique = tf.reduce_sum(tf.cast(is_new, tf.int32))
    unique_idx = tf.math.unsorted_segment_max(sorted_idx, segment, n)
    valid = position < num_unique
    unique_idx = tf.where(valid, unique_idx, tf.zeros_like(unique_idx))
    if grad.dense_shape is not None:
        dense_size = tf.cast(tf.reduce_prod(grad.dense_shape), tf.float32)
    else:  # pragma: no cover - Keras always sets dense_shape
        dense_size = tf.cast(tf.size(values), tf.float32)
    return DeduplicatedRows(unique_idx, summed, valid, num_unique, dense_size)


def unique_rows(grad: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """(distinct row ids, their summed rows padded with zeros to the batch rows).

    The cheap form of `deduplicate_rows` for plain graphs: `tf.unique` is a few kernels
    where the static-shape sort is a dozen, but XLA cannot compile it.

    >>> g = tf.IndexedSlices(tf.constant([[1.], [2.], [4.]]), tf.constant([7, 3, 7]), tf.constant([10, 1]))
    >>> ids, summed = unique_rows(g)
    >>> ids.numpy().tolist(), summed.numpy().ravel().tolist()
    ([7, 3], [5.0, 2.0, 0.0])
    """
    ids, segment = tf.unique(grad.indices)
    return ids, tf.math.unsorted_segment_sum(grad.values, segment, tf.shape(grad.indices)[0])


def _row_axes(values: tf.Tensor):
    return list(range(1, values.shape.rank)) if values.shape.rank and values.shape.rank > 1 else None


def row_norms(rows: DeduplicatedRows) -> tf.Tensor:
    """L2 norm of each summed row ([n]; padding slots are 0)."""
    axes = _row_axes(rows.values)
    sq = tf.square(rows.values)
    return tf.sqrt(tf.reduce_sum(sq, axis=axes) if axes else sq)


def sum_of_squares(grad) -> tf.Tensor:
    """Squared L2 norm of a dense gradient or of the dense equivalent of `IndexedSlices`."""
    if isinstance(grad, DeduplicatedRows):
        return 2.0 * tf.nn.l2_loss(grad.values)
    if isinstance(grad, tf.IndexedSlices):
        return 2.0 * tf.nn.l2_loss(deduplicate_rows(grad).values)
    # l2_loss is one fused kernel: no temporary the size of the gradient.
    return 2.0 * tf.nn.l2_loss(tf.cast(grad, tf.float32))


def l2_norm(values: tf.Tensor) -> tf.Tensor:
    """L2 norm of a dense tensor, from one fused kernel."""
    return tf.sqrt(sum_of_squares(values))


def max_abs(values: tf.Tensor) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    return tf.maximum(tf.reduce_max(values), -tf.reduce_min(values))


def zero_fraction(grad) -> tf.Tensor:
    """Fraction of exactly-zero entries of the (dense equivalent) gradient."""
    if isinstance(grad, DeduplicatedRows):
        nonzero = tf.math.count_nonzero(grad.values, dtype=tf.float32)
        return 1.0 - nonzero / tf.maximum(grad.dense_size, 1.0)
    return tf.math.zero_fraction(grad)


def all_finite(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_all(tf.math.is_finite(tf.cast(values, tf.float32)))


def histogram_counts(values: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, bins: int,
                     weights: tf.Tensor | None = None) -> tf.Tensor:
    """Counts of ``values`` in ``bins`` equal-width buckets over ``[lo, hi]`` (static shape).

    Values outside the range are clipped into the end buckets; non-finite values are
    dropped.
    """
    values = tf.reshape(tf.cast(values, tf.float32), [-1])
    finite = tf.math.is_finite(values)
    w = tf.cast(finite, tf.float32)
    if weights is not None:
        w = w * tf.reshape(tf.cast(weights, tf.float32), [-1])
    width = tf.maximum(hi - lo, 1e-30)
    pos = tf.where(finite, (values - lo) / width * bins, tf.zeros_like(values))
    idx = tf.clip_by_value(tf.cast(tf.floor(pos), tf.int32), 0, bins - 1)
    return tf.math.unsorted_segment_sum(w, idx, bins)


# Row-norm histograms use fixed log10 buckets so that snapshots are comparable over time.
ROW_NORM_LOG10_EDGES = np.arange(-12.0, 4.01, 0.5)


def log10_histogram(positive_values: tf.Tensor, valid: tf.Tensor,
                    edges: np.ndarray = ROW_NORM_LOG10_EDGES) -> tf.Tensor:
    """Counts of ``log10(values)`` over fixed ``edges``; zeros fall in the first bucket."""
    bins = len(edges) - 1
    logs = tf.math.log(tf.maximum(tf.cast(positive_values, tf.float32), 1e-30)) / math.log(10.0)
    return histogram_counts(logs, tf.constant(edges[0], tf.float32), tf.constant(edges[-1], tf.float32),
                            bins, weights=tf.cast(valid, tf.float32))


def noise_scale_terms(small_sq: tf.Tensor, big_sq: tf.Tensor, small_batch: tf.Tensor,
                      num_replicas: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Unbiased estimates of ``|G|^2`` and ``tr(Sigma)`` (McCandlish et al. 2018, App. A.1).

    Args:
      small_sq: mean over replicas of ``|R * g_r|^2``, the squared norm of one replica's
        gradient expressed as a mean gradient of its ``small_batch`` examples.
      big_sq: ``|sum_r g_r|^2``, the all-reduced (global batch) gradient.
      small_batch: examples per replica (``B_small``); ``B_big = num_replicas * B_small``.

    Both estimates are invariant to a common scale of the two gradients, so the ratio
    ``B_simple = tr(Sigma) / |G|^2`` does not depend on how the loss is reduced.
    """
    r = float(num_replicas)
    b = tf.cast(small_batch, tf.float32)
    g2 = (r * big_sq - small_sq) / (r - 1.0)
    trace = b * r * (small_sq - big_sq) / (r - 1.0)
    return g2, trace


# ------------------------------------------------------------------ numpy references


def numpy_noise_scale(small_sq: float, big_sq: float, b_small: float, b_big: float) -> float:
    """Reference B_simple from the paper's formulas (for tests and offline use)."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return trace / g2

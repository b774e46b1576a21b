"""Shared plumbing of the streaming top-K metric families."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf


def check_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    """Validates list lengths: positive integers, returned sorted and unique."""
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 for k in ks):
        raise ValueError(f"k must be a positive integer or a sequence of them, got {ks!r}")
    return tuple(sorted({int(k) for k in ks}))


def check_vector(values, length: int, argument: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (length,):
        raise ValueError(f"{argument} must have one entry per candidate item ({length}), got shape {arr.shape}")
    return arr


def names_at(stem: str, ks: Sequence[int]) -> list[str]:
    """``["<stem>_at_<k>", ...]``: result names of one metric at every K."""
    return [f"{stem}_at_{k}" for k in ks]


def k_segments(ks: Sequence[int]) -> list[tuple[int, int]]:
    """Disjoint rank ranges ``[(0, k1), (k1, k2), ...]``: a prefix sum over them gives every K.

    >>> k_segments((10, 100))
    [(0, 10), (10, 100)]
    """
    bounds = (0,) + tuple(ks)
    return list(zip(bounds[:-1], bounds[1:]))


def prefix_matrix(ks: Sequence[int], weights: np.ndarray | None = None) -> tf.Tensor:
    """[max(ks), len(ks)] float32: column j is ``weights[r]`` (default 1) for ranks r < ks[j], else 0.

    ``x @ prefix_matrix(ks)`` sums a [..., K] per-rank quantity over every top-K prefix in one matmul.

    >>> prefix_matrix((1, 3)).numpy().tolist()
    [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    """
    k_max = max(ks)
    w = np.ones(k_max) if weights is None else np.asarray(weights, np.float64)
    ranks = np.arange(k_max)[:, None]
    return tf.constant(np.where(ranks < np.asarray(ks)[None, :], w[:, None], 0.0), tf.float32)


def bincount(ids: tf.Tensor, size: int, weights: tf.Tensor | None = None) -> tf.Tensor:
    """[size] float32 (weighted) counts of non-negative ``ids``; ids >= size are dropped.

    The raw op with a static size: `tf.math.bincount` adds a max-reduction over ``ids`` to
    size its output, and `unsorted_segment_sum` costs several times more on CPU. XLA
    compiles it.
    """
    ids = tf.reshape(ids, [-1])
    weights = tf.zeros([0], tf.float32) if weights is None else tf.reshape(tf.cast(weights, tf.float32), [-1])
    return tf.raw_ops.DenseBincount(input=ids, size=size, weights=weights, binary_output=False)


def prefix_bincounts(top: tf.Tensor, ks: Sequence[int], num_items: int, weights: tf.Tensor | None = None) -> tf.Tensor:
    """[len(ks), num_items]: per K, how often (or with how much ``weights`` [K]) each item is in a top-K list.

    Each rank range is counted once and the prefixes summed.
    """
    rows, total = [], None
    for lo, hi in k_segments(ks):
        part = top[:, lo:hi]
        c = bincount(part, num_items, None if weights is None else tf.broadcast_to(weights[lo:hi], tf.shape(part)))
        total = c if total is None else total + c
        rows.append(total)
    return tf.stack(rows)

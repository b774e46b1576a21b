"""Shared plumbing of the streaming top-K metric families."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Sequence

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


class LastCall:
    """One-slot memo keyed on tensor identity (and the values of other arguments).

    The metric families of one evaluation step receive the same ``top_indices`` and
    ``positives`` tensors, so what they share (the hit matrix, per-query terms, item
    counts) is built once per traced step instead of once per family.
    """

    def __init__(self, fn):
        self._fn = fn
        self._key = None
        self._value = None

    def __call__(self, *args):
        key = tuple(a.ref() if tf.is_tensor(a) else a for a in args)
        if key != self._key:
            self._value = self._fn(*args)
            self._key = key
        return self._value


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


_positives_in_order = contextvars.ContextVar("positives_in_order", default=False)


@contextlib.contextmanager
def positives_in_search_order():
    """Within this block (at trace time), positives rows are promised ascending with
    negative pads last, so the hit matrix skips its sort. `TopKEvaluator` builds them so.

    >>> import tensorflow as tf
    >>> from tfrs_diag.metrics.ranking import hit_matrix
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


def searchable_positives(positives: tf.Tensor) -> tf.Tensor:
    """[B, P] int32: each row's positives ascending, pads and missing ids as int32 max (last).

    Memoised per step: the hit matrix searches it, relevant-item counts bincount it
    (int32 max falls outside every catalog) and the number of valid positives is the
    position of the first int32 max.
    """
    return _searchable_positives(positives, _positives_in_order.get())


@LastCall
def _searchable_positives(positives, in_order: bool):
    pos = tf.cast(positives, tf.int32)
    pos = tf.where(pos >= 0, pos, tf.int32.max)
    return pos if in_order else tf.sort(pos, axis=1)


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


@LastCall
def item_counts(top: tf.Tensor, ks: tuple, num_items: int) -> tf.Tensor:
    """`prefix_bincounts` memoised per step: diversity and popularity bias share it."""
    return prefix_bincounts(top, ks, num_items)


@LastCall
def relevant_item_counts(positives: tf.Tensor, num_items: int) -> tf.Tensor:
    """[num_items]: how many queries hold each item as a positive (pads and missing ids skipped)."""
    return bincount(searchable_positives(positives), num_items)


class TopKMetric(tf.keras.metrics.Metric):
    """Base of the metric families: ``update_state(top_indices, positives, user_group, exclude)``.

    ``top_indices`` is [B, max(ks)] candidate indices, best first (a `TopK.indices`);
    ``positives`` [B, P] held-out relevant candidate indices, unique per query, padded
    with -1 (-2: id not in the candidate set; `tfrs_diag.evaluate` deduplicates); ``user_group`` [B] group index; ``exclude`` [B, S] indices
    left out of the search. Families ignore what they do not need. ``result()`` returns
    a dict of scalars named ``<metric>_at_<k>``.
    """

    def __init__(self, ks: Sequence[int], *, num_items: int | None = None, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.ks = check_ks(ks)
        if num_items is not None:
            if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items <= 0:
                raise ValueError(f"num_items must be a positive integer, got {num_items!r}")
            num_items = int(num_items)
            if max(self.ks) > num_items:
                raise ValueError(f"k={max(self.ks)} is larger than the catalog ({num_items} items); "
                                 "use k <= num_items (tfrs_diag.evaluate clamps it with a warning)")
        self.num_items = num_items

    @staticmethod
    def check_no_weights(sample_weight) -> None:
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by top-K metrics: every query counts once")

    def check_top(self, top_indices) -> tf.Tensor:
        top = tf.cast(top_indices, tf.int32)
        if top.shape.rank is not None and top.shape.rank != 2:
            raise ValueError(f"top_indices must be [batch, k], got shape {top.shape}")
        if top.shape[1] is not None and top.shape[1] < max(self.ks):
            raise ValueError(f"top_indices has {top.shape[1]} columns; this metric needs max(ks)={max(self.ks)}")
        # Checked when eager only: in a traced step the check would cost a reduction per batch.
        if tf.executing_eagerly() and tf.size(top) > 0 and int(tf.reduce_min(top)) < 0:
            raise ValueError("top_indices holds negative entries; pass candidate indices 0..num_items-1 "
                             "(pad short lists with real items, or lower k)")
        return top

    def result_blocks(self) -> list[tuple[list[str], Callable[[], tf.Tensor]]]:
        """Results as blocks ``(names, fn)``: ``fn()`` is a tensor of ``len(names)`` values (C order).

        A block computes related results together (e.g. one metric at every K), so an
        evaluation reads every result with a few vectorised ops instead of one small op
        chain per scalar.
        """
        raise NotImplementedError

    def result_vector(self) -> tuple[list[str], tf.Tensor]:
        """Every result as ``(names, float64 vector)``, each block computed once."""
        names, parts = [], []
        for block_names, fn in self.result_blocks():
            names += block_names
            parts.append(tf.reshape(tf.cast(fn(), tf.float64), [-1]))
        return names, tf.concat(parts, axis=0)

    def result_fns(self) -> dict:
        """``{name: zero-argument function}``: lets a caller compute one result (its block) alone."""
        fns = {}
        for names, fn in self.result_blocks():
            for i, name in enumerate(names):
                fns[name] = lambda fn=fn, i=i: tf.reshape(fn(), [-1])[i]
        return fns

    def result(self):
        out = {}
        for names, fn in self.result_blocks():
            values = tf.reshape(fn(), [-1])
            out.update({name: values[i] for i, name in enumerate(names)})
        return out

    def reset_state(self):
        for v in self.variables:
            v.assign(tf.zeros(v.shape, v.dtype))

    def get_config(self):
        return {**super().get_config(), "ks": list(self.ks), "num_items": self.num_items}

"""`TopKMetric`: base of the streaming metric families, each fed one `TopKBatch` per step."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import check_ks
from tfrs_diag.metrics.batch import TopKBatch


class TopKMetric(tf.keras.metrics.Metric):
    """Base of the metric families: ``update_state(batch)`` with the step's `TopKBatch`.

    Every family of a step gets the same batch, so what they share is computed once on it
    (see `TopKBatch`). For a family used on its own, ``update_state(top_indices,
    positives=None, user_group=None, exclude=None)`` wraps the tensors in a batch of their
    own. Families ignore the inputs they do not need. ``result()`` returns a dict of
    scalars named ``<metric>_at_<k>``.
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

    def update_state(self, batch, positives=None, user_group=None, exclude=None, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by top-K metrics: every query counts once")
        if not isinstance(batch, TopKBatch):
            batch = TopKBatch(batch, positives, user_groups=user_group, exclude=exclude)
        elif positives is not None or user_group is not None or exclude is not None:
            raise ValueError("pass either a TopKBatch or top_indices with positives, user_group and exclude")
        self.accumulate(batch)

    def accumulate(self, batch: TopKBatch) -> None:
        """Adds one step's lists to the state (the family's part of `update_state`)."""
        raise NotImplementedError

    def check_top(self, batch: TopKBatch) -> tf.Tensor:
        """The batch's top indices, checked to hold at least max(ks) columns."""
        top = batch.top_indices
        if top.shape[1] is not None and top.shape[1] < max(self.ks):
            raise ValueError(f"top_indices has {top.shape[1]} columns; this metric needs max(ks)={max(self.ks)}")
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

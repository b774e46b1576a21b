"""User-group accuracy gaps and item-group exposure of top-K lists (docs/design.md section 5).

- User-group gap: for a metric M per user group g, ``M_g``; the gap ``max - min``, the
  ratio ``min / max`` and UserMAD, the mean over pairs of groups of ``|M_g - M_h|``.
  Groups with no evaluated query in the pass are reported with count 0 and left out of
  the gap statistics; with fewer than two such groups nothing was compared and the gap
  statistics are undefined (NaN here; `tfrs_diag.evaluate` leaves them out).
- Exposure: ``Exp(i) = sum_u sum_r 1[L_u[r] = i] / log2(r + 1)``; a group's share
  ``E_g = sum_{i in g} Exp(i) / sum_i Exp(i)``; disparity ``E_g / R_g`` with ``R_g`` the
  group's share of relevant (held-out positive) items: 1 is parity, above 1 the group
  is over-exposed; undefined (NaN) for a group with no relevant item (``R_g = 0``).
  Exposure Gini is the Gini index of ``Exp`` over the catalog.

>>> import numpy as np
>>> [round(float(x), 4) for x in group_gaps(np.array([0.2, 0.4, 0.3]), np.array([10, 5, 0]))]
[0.2, 0.5, 0.2]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import bincount, check_vector, names_at, prefix_bincounts
from tfrs_diag.metrics.diversity import gini
from tfrs_diag.metrics.family import TopKMetric
from tfrs_diag.metrics.relevance import ACCURACY_NAMES, discounts


def lorenz_curve(values, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of non-negative ``values`` (e.g. per-item exposure), on ``points`` x.

    Items sorted ascending; ``x`` is the share of items (0..1, evenly spaced), ``y`` the
    share of the total they hold (linear between items). The Gini index is one minus
    twice the area under the curve (exact on the full curve, which has an x per item).

    >>> x, y = lorenz_curve([0, 0, 1, 3], points=5)
    >>> [float(v) for v in y]
    [0.0, 0.0, 0.0, 0.25, 1.0]
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points!r}")
    v = np.sort(np.asarray(values, np.float64).reshape(-1))
    total = v.sum()
    x_full = np.arange(v.size + 1) / max(v.size, 1)
    y_full = np.concatenate([[0.0], np.cumsum(v) / total]) if total > 0 else x_full
    x = np.linspace(0.0, 1.0, points)
    return x, np.interp(x, x_full, y_full)


def group_gaps(values, counts):
    """(max - min, min / max, UserMAD) over the groups with ``counts > 0``.

    ``values`` is [..., G] (groups on the last axis, e.g. [K, metric, G]), ``counts`` [G];
    each statistic has the leading shape. With fewer than two such groups nothing was
    compared: every statistic is NaN (undefined). All groups at 0 is parity (ratio 1).
    """
    v = tf.cast(values, tf.float32)
    present = tf.reshape(counts, [-1]) > 0
    n = tf.reduce_sum(tf.cast(present, tf.float32))
    big = tf.constant(3.0e38)
    hi = tf.reduce_max(tf.where(present, v, -big), axis=-1)
    lo = tf.reduce_min(tf.where(present, v, big), axis=-1)
    enough = n >= 2
    nan = tf.constant(float("nan"))
    gap = tf.where(enough, hi - lo, nan)
    ratio = tf.where(enough, tf.where(hi > 0, lo / tf.maximum(hi, 1e-30), 1.0), nan)
    pair = tf.cast(present[:, None] & present[None, :], tf.float32)
    mad_sum = tf.reduce_sum(tf.abs(v[..., :, None] - v[..., None, :]) * pair, axis=[-2, -1]) / 2.0
    mad = tf.where(enough, mad_sum / tf.maximum(n * (n - 1.0) / 2.0, 1.0), nan)
    return gap, ratio, mad


class UserGroupAccuracy(TopKMetric):
    """Streaming accuracy per user group with max-min gap, min/max ratio and UserMAD.

    Reads the batch's positives and its user grouping ``group_key`` (the [B] group index
    of each query, 0..len(group_names)-1; the batch's only grouping when it holds one
    tensor, as ``update_state(top_indices, positives, user_group)`` gives it).

    Result keys: ``<metric>_at_<k>/<group>``, ``<metric>_at_<k>_gap``,
    ``<metric>_at_<k>_ratio``, ``<metric>_at_<k>_user_mad`` and ``count/<group>``.
    """

    def __init__(self, ks: Sequence[int], group_names: Sequence[str], *, group_key: str = "user_group",
                 name: str = "user_group_accuracy", **kwargs):
        super().__init__(ks, name=name, **kwargs)
        self.group_key = group_key
        names = [str(g) for g in group_names]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"group_names must be non-empty and unique, got {group_names!r}")
        self.group_names = tuple(names)
        g = len(names)
        self.sums = self.add_weight(name="sums", shape=(g, len(self.ks), 4), initializer="zeros")
        self.counts = self.add_weight(name="counts", shape=(g,), initializer="zeros")

    def accumulate(self, batch):
        batch.require_positives("UserGroupAccuracy")
        self.check_top(batch)
        g = len(self.group_names)
        group = batch.user_group(self.group_key)
        terms = batch.accuracy_terms(self.ks)  # shared with RankingAccuracy and the other groupings
        self.sums.assign_add(tf.math.unsorted_segment_sum(terms.per_query, group, g))
        self.counts.assign_add(tf.math.unsorted_segment_sum(terms.valid, group, g))

    def result_blocks(self):
        stems = [f"{name}_at_{k}" for k in self.ks for name in ACCURACY_NAMES]

        def values():
            per_group = tf.transpose(self.sums / tf.maximum(self.counts, 1.0)[:, None, None], [1, 2, 0])  # [nk, 4, G]
            gaps = tf.stack(group_gaps(per_group, self.counts))  # [3, nk, 4]
            return tf.concat([tf.reshape(per_group, [-1]), tf.reshape(gaps, [-1])], axis=0)

        return [([f"count/{g}" for g in self.group_names], lambda: tf.identity(self.counts)),
                ([f"{stem}/{g}" for stem in stems for g in self.group_names]
                 + [f"{stem}_{stat}" for stat in ("gap", "ratio", "user_mad") for stem in stems], values)]

    def get_config(self):
        return {**super().get_config(), "group_names": list(self.group_names), "group_key": self.group_key}


class ItemExposure(TopKMetric):
    """Streaming position-discounted exposure per item and per item group.

    Args:
      num_items: catalog size.
      item_groups: [num_items] group index of each item (e.g. category, or head/tail).
      group_names: names of the item groups.

    Result keys: ``exposure_gini_at_<k>``, ``exposure_share_at_<k>/<group>``,
    ``relevant_share/<group>``, ``exposure_disparity_at_<k>/<group>`` (E_g / R_g; NaN,
    undefined, when the group has no relevant item) and ``exposure_gap_at_<k>`` (max - min
    disparity over groups with relevant items; NaN with fewer than two).
    """

    def __init__(self, num_items: int, ks: Sequence[int], item_groups=None, group_names: Sequence[str] = (), *,
                 name: str = "item_exposure", **kwargs):
        super().__init__(ks, num_items=num_items, name=name, **kwargs)
        if item_groups is None:
            item_groups = np.zeros(self.num_items, np.int32)
            group_names = group_names or ("all",)
        groups = check_vector(item_groups, self.num_items, "item_groups").astype(np.int64)
        self.group_names = tuple(str(g) for g in group_names) or tuple(str(i) for i in range(groups.max() + 1))
        if groups.min() < 0 or groups.max() >= len(self.group_names):
            raise ValueError(f"item_groups must hold indices 0..{len(self.group_names) - 1} into group_names")
        self._groups = tf.constant(groups, tf.int32)
        self.exposure = self.add_weight(name="exposure", shape=(len(self.ks), self.num_items), initializer="zeros")
        self.relevant = self.add_weight(name="relevant", shape=(len(self.group_names),), initializer="zeros")

    def accumulate(self, batch):
        top = self.check_top(batch)
        self.exposure.assign_add(prefix_bincounts(top, self.ks, self.num_items, weights=discounts(max(self.ks))))
        if batch.positives is not None:
            self.relevant.assign_add(bincount(self._groups, len(self.group_names),
                                              weights=batch.relevant_item_counts(self.num_items)))

    def result_blocks(self):
        ks, names = self.ks, self.group_names

        def rel_share():
            return self.relevant / tf.maximum(tf.reduce_sum(self.relevant), 1e-30)

        def exposure_by_group():
            per_group = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(self.exposure), self._groups, len(names)))
            share = per_group / tf.maximum(tf.reduce_sum(self.exposure, axis=1, keepdims=True), 1e-30)  # [nk, G]
            r = rel_share()
            disparity = tf.where(r > 0, share / tf.maximum(r, 1e-30), float("nan"))
            gap = group_gaps(tf.where(r > 0, disparity, 0.0), self.relevant)[0]
            return tf.concat([tf.reshape(share, [-1]), tf.reshape(disparity, [-1]), gap], axis=0)

        return [([f"relevant_share/{g}" for g in names], rel_share),
                (names_at("exposure_gini", ks), lambda: tf.cast(gini(self.exposure), tf.float32)),
                ([f"exposure_share_at_{k}/{g}" for k in ks for g in names]
                 + [f"exposure_disparity_at_{k}/{g}" for k in ks for g in names] + names_at("exposure_gap", ks),
                 exposure_by_group)]

    def lorenz(self, points: int = 101, exposure: np.ndarray | None = None) -> dict[int, dict[str, list[float]]]:
        """Per K, the Lorenz curve of per-item exposure: ``{k: {"x": [...], "y": [...]}}``.

        ``exposure`` is this metric's state already read to the host (default: read it now).
        """
        exposure = self.exposure.numpy() if exposure is None else exposure
        out = {}
        for j, k in enumerate(self.ks):
            x, y = lorenz_curve(exposure[j], points)
            out[k] = {"x": x.tolist(), "y": y.tolist()}
        return out

    def get_config(self):
        return {**super().get_config(), "group_names": list(self.group_names)}

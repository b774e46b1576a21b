"""`TopKBatch`: one evaluation step's top-K lists, passed to every metric family.

The families of one step read the same search, so what several of them need (the hit
matrix, per-query accuracy, per-K item counts, relevant-item counts) is computed once,
lazily, on the step's batch object and nowhere else: a new step builds a new batch, and
two batches never share anything.

>>> import tensorflow as tf
>>> batch = TopKBatch(tf.constant([[3, 1, 7]]), tf.constant([[1, 9, -1]]))
>>> batch.hits.numpy().tolist()
[[0.0, 1.0, 0.0]]
>>> batch.accuracy_terms((3,)) is batch.accuracy_terms((3,))      # computed once, shared
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from tfrs_diag._keras import tf
from tfrs_diag.metrics import relevance
from tfrs_diag.metrics._base import bincount, prefix_bincounts
from tfrs_diag.metrics.topk import MISSING


@dataclasses.dataclass(frozen=True, eq=False)
class TopKBatch:
    """The inputs of one top-K step and, computed on first use, what the families share.

    Args:
      top_indices: [B, max(ks)] candidate indices, best first (a `TopK.indices`).
      positives: [B, P] held-out relevant candidate indices, unique per query, padded with
        -1 (-2: id not in the candidate set; `tfrs_diag.evaluate` deduplicates).
      user_groups: [B] group index per query, or ``{grouping: [B] indices}`` when the step
        evaluates several user groupings (`UserGroupAccuracy` reads its ``group_key``).
      exclude: [B, S] candidate indices left out of the search, padded with -1.
      positives_in_search_order: a promise that each positives row is ascending with its
        negative entries last, so the hit search skips its sort. A single column always is.

    Build one per step (inside the traced step function): the shared intermediates are
    tensors of that step's graph.
    """

    top_indices: tf.Tensor
    positives: tf.Tensor | None = None
    user_groups: tf.Tensor | Mapping[str, tf.Tensor] | None = None
    exclude: tf.Tensor | None = None
    positives_in_search_order: bool = False
    _shared: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        top = tf.cast(self.top_indices, tf.int32)
        if top.shape.rank is not None and top.shape.rank != 2:
            raise ValueError(f"top_indices must be [batch, k], got shape {top.shape}")
        # Checked when eager only: in a traced step the check would cost a reduction per batch.
        if tf.executing_eagerly() and tf.size(top) > 0 and int(tf.reduce_min(top)) < 0:
            raise ValueError("top_indices holds negative entries; pass candidate indices 0..num_items-1 "
                             "(pad short lists with real items, or lower k)")
        object.__setattr__(self, "top_indices", top)
        if self.positives is not None:
            positives = tf.cast(self.positives, tf.int32)
            object.__setattr__(self, "positives", positives)
            if positives.shape.rank == 2 and positives.shape[1] == 1:
                object.__setattr__(self, "positives_in_search_order", True)
        if self.exclude is not None:
            object.__setattr__(self, "exclude", tf.cast(self.exclude, tf.int32))

    def _once(self, key: tuple, compute: Callable[[], Any]):
        """``compute()`` the first time ``key`` is asked for on this batch, the same value after."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def require_positives(self, family: str) -> tf.Tensor:
        if self.positives is None:
            raise ValueError(f"{family} needs positives: the held-out relevant items of each query")
        return self.positives

    def user_group(self, key: str, family: str = "UserGroupAccuracy") -> tf.Tensor:
        """[B] int32 group index of each query in grouping ``key`` (the only one, if a tensor was given)."""
        groups = self.user_groups
        if groups is None:
            raise ValueError(f"{family} needs user_groups: the group index of each query")
        if isinstance(groups, Mapping):
            if key not in groups:
                raise KeyError(f"{family}: the batch has no user grouping {key!r}; it has {sorted(groups)}")
            groups = groups[key]
        return tf.reshape(tf.cast(groups, tf.int32), [-1])

    # -- shared intermediates

    @property
    def searchable_positives(self) -> tf.Tensor:
        """[B, P] int32, `relevance.searchable_positives` of ``positives``."""
        return self._once(("searchable_positives",), lambda: relevance.searchable_positives(
            self.require_positives("this metric"), self.positives_in_search_order))

    @property
    def num_relevant(self) -> tf.Tensor:
        """[B] float: positives of each query that are in the candidate set."""
        return self._once(("num_relevant",), lambda: relevance.relevant_counts(self.searchable_positives))

    @property
    def missing_positives(self) -> tf.Tensor:
        """[B] float: positives of each query whose id is not in the candidate set."""
        return self._once(("missing_positives",), lambda: tf.reduce_sum(
            tf.cast(tf.equal(self.require_positives("this metric"), MISSING), tf.float32), axis=1))

    @property
    def hits(self) -> tf.Tensor:
        """[B, K] float `relevance.hit_matrix`: accuracy and PopREO share it."""
        return self._once(("hits",), lambda: relevance.hit_matrix(self.top_indices, self.searchable_positives))

    def accuracy_terms(self, ks: Sequence[int]) -> relevance.AccuracyTerms:
        """Per-query accuracy at each K: overall and per-user-group accuracy share it."""
        ks = tuple(ks)
        return self._once(("accuracy_terms", ks), lambda: relevance.accuracy_terms(self.hits, self.num_relevant, ks))

    def item_counts(self, ks: Sequence[int], num_items: int) -> tf.Tensor:
        """[len(ks), num_items]: per K, how often each item is in a top-K list (diversity and popularity bias)."""
        ks = tuple(ks)
        return self._once(("item_counts", ks, num_items), lambda: prefix_bincounts(self.top_indices, ks, num_items))

    def relevant_item_counts(self, num_items: int) -> tf.Tensor:
        """[num_items]: how many queries hold each item as a positive (pads and missing ids skipped)."""
        return self._once(("relevant_item_counts", num_items),
                          lambda: bincount(self.searchable_positives, num_items))

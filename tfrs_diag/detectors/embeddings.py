"""Detectors of embedding-table health: collapse, dead rows, memorisation of rare rows.

Fed, per table and epoch, the numbers `tfrs_diag.stats.embeddings.table_health` computes
(information abundance, dead-row fraction, mean row norms by popularity bucket).

>>> d = EmbeddingCollapse()
>>> [f.action for f in d.update("items", abundance=2.0, dim=32, used_rows=400)]
['fire']
>>> [f.action for f in d.update("items", abundance=12.0, dim=32, used_rows=400)]
['clear']
"""

from __future__ import annotations

import math
from typing import Sequence

from tfrs_diag.detectors.base import Detector, Finding, found


class EmbeddingCollapse(Detector):
    """The used rows span fewer than ``collapse_ratio`` x d directions (information abundance).

    Tables with d >= 4 and at least 2 d used rows only. Healthy trained tables stay at
    0.4-0.5 d (scenarios, MovieLens); randomly initialised ones near 0.8 d.
    """

    kind = "embedding_collapse"

    def __init__(self, collapse_ratio: float = 0.1):
        super().__init__()
        if not 0 < collapse_ratio <= 1:
            raise ValueError(f"collapse_ratio must be in (0, 1], got {collapse_ratio!r}")
        self.collapse_ratio = float(collapse_ratio)

    def update(self, table: str, abundance: float, dim: int, used_rows: int,
               effective_rank: float = float("nan")) -> list[Finding]:
        if dim < 4 or used_rows < 2 * dim or not math.isfinite(abundance):
            return []
        if abundance / dim >= self.collapse_ratio:
            return found(self.clear(table))
        return found(self.fire(
            table, f"The table's rows span about {abundance:.1f} of its {dim} dimensions (information abundance): "
                   "lower its learning rate or add L2 on it, and check that the layer after it is not a narrow "
                   "bottleneck.",
            {"information_abundance": abundance, "abundance_ratio": abundance / dim,
             "effective_rank": effective_rank}))


class DeadEmbeddingRows(Detector):
    """More than ``dead_rows_fraction`` of the table's rows were never looked up."""

    kind = "dead_embedding_rows"

    def __init__(self, dead_rows_fraction: float = 0.5):
        super().__init__()
        if not 0 < dead_rows_fraction <= 1:
            raise ValueError(f"dead_rows_fraction must be in (0, 1], got {dead_rows_fraction!r}")
        self.dead_rows_fraction = float(dead_rows_fraction)

    def update(self, table: str, dead_fraction: float) -> list[Finding]:
        if not dead_fraction > self.dead_rows_fraction:
            return found(self.clear(table))
        return found(self.fire(
            table, f"{dead_fraction:.0%} of the table's rows were never looked up: shrink the vocabulary (a minimum "
                   "count) or hash rare ids into a few OOV buckets.", {"dead_row_fraction": dead_fraction}))


class EmbeddingMemorization(Detector):
    """The least-used rows' mean norm exceeds ``memorization_ratio`` x the most-used rows' and grew."""

    kind = "embedding_memorization"

    def __init__(self, memorization_ratio: float = 2.0):
        super().__init__()
        if not memorization_ratio > 0:
            raise ValueError(f"memorization_ratio must be > 0, got {memorization_ratio!r}")
        self.memorization_ratio = float(memorization_ratio)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._prev_tail: dict[str, float] = {}

    def update(self, table: str, bucket_norms: Sequence[float]) -> list[Finding]:
        norms = [float(v) for v in bucket_norms]
        prev = self._prev_tail.get(table)
        self._prev_tail[table] = norms[0] if norms else float("nan")
        if len(norms) < 2 or not norms[-1] > 0:
            return []
        ratio = norms[0] / norms[-1]
        if not math.isfinite(ratio):
            return []
        if ratio <= self.memorization_ratio:
            return found(self.clear(table))
        if prev is None or not norms[0] > prev:
            return []
        return found(self.fire(
            table, f"Rarely used rows have {ratio:.1f}x the norm of popular ones and keep growing (memorising "
                   "their few examples): add L2 on this table or lower its learning rate.",
            {"tail_head_norm_ratio": ratio, "bucket_norms": norms}))

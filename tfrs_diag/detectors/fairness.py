"""Detectors of `tfrs_diag.callbacks.BeyondAccuracy`: user-group fairness gaps, exposure concentration.

>>> d = FairnessGap("ndcg_at_10", fairness_ratio=0.8)
>>> rows = lambda a, b: {"age": [{"group": "young", "count": 9, "ndcg_at_10": a},
...                             {"group": "old", "count": 9, "ndcg_at_10": b}]}
>>> [(f.action, f.subject) for f in d.update(rows(0.1, 0.3))]
[('fire', 'age=young')]
>>> [(f.action, f.subject) for f in d.update(rows(0.3, 0.1))]   # the worst group changed
[('clear', 'age=young'), ('fire', 'age=old')]
>>> [(f.action, f.subject) for f in d.update(rows(0.3, 0.29))]
[('clear', 'age=old')]
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tfrs_diag.detectors.base import Detector, Finding, found


class FairnessGap(Detector):
    """A user group's ``metric`` is below ``fairness_ratio`` of the best group's, per user-group key.

    At most one subject fires per key (``"<key>=<worst group>"``): when the worst group
    changes while the gap persists, the earlier group's alert is cleared and the new
    one fires, and when the gap closes the firing one is cleared, so every fired alert
    is eventually cleared. Groups with no queries are ignored.
    """

    kind = "fairness_gap"

    def __init__(self, metric: str, fairness_ratio: float = 0.8):
        super().__init__()
        if not 0 < fairness_ratio <= 1:
            raise ValueError(f"fairness_ratio must be in (0, 1], got {fairness_ratio!r}")
        self.metric, self.fairness_ratio = metric, float(fairness_ratio)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.by_key: dict[str, str] = {}  # key -> the subject firing for it

    def update(self, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Finding]:
        out: list[Finding | None] = []
        for key, rows in tables.items():
            present = [r for r in rows if r.get("count", 0) > 0 and self.metric in r]
            if len(present) < 2:
                continue
            best = max(present, key=lambda r: r[self.metric])
            worst = min(present, key=lambda r: r[self.metric])
            ratio = worst[self.metric] / best[self.metric] if best[self.metric] > 0 else 1.0
            subject = f"{key}={worst['group']}"
            current, gap = self.by_key.get(key), ratio < self.fairness_ratio
            if current is not None and (not gap or current != subject):
                out.append(self.clear(current))
                del self.by_key[key]
                current = None
            if gap and current is None:
                self.by_key[key] = subject
                out.append(self.fire(
                    subject,
                    f"Users in {key}={worst['group']} get {ratio:.0%} of the {self.metric} of {key}={best['group']}: "
                    "check their training data share, or reweight or oversample them.",
                    {"metric": self.metric, "worst": dict(worst), "best": dict(best), "ratio": ratio}))
        return found(*out)


class ExposureConcentration(Detector):
    """The exposure Gini at the smallest K exceeds ``exposure_gini``."""

    kind = "exposure_concentration"

    def __init__(self, exposure_gini: float = 0.9):
        super().__init__()
        if not 0 < exposure_gini <= 1:
            raise ValueError(f"exposure_gini must be in (0, 1], got {exposure_gini!r}")
        self.exposure_gini = float(exposure_gini)

    def update(self, k: int, gini: float | None, coverage: float | None = None) -> list[Finding]:
        subject = f"exposure_gini_at_{k}"
        if gini is None:
            return []
        if not gini > self.exposure_gini:
            return found(self.clear(subject))
        return found(self.fire(
            subject, f"Exposure is concentrated on few items (Gini {gini:.2f}): add popularity-debiasing (e.g. logQ "
                     "correction or sampling negatives by popularity) or re-rank for coverage.",
            {"exposure_gini": gini, "coverage": coverage}))

"""A user-weighted combination of normalised metrics, monitorable like any metric.

>>> score = CompositeScore({"ndcg_at_10": 0.6, "coverage_at_10": 0.2, "1-exposure_gap_at_10": 0.2})
>>> round(score({"ndcg_at_10": 0.5, "coverage_at_10": 0.25, "exposure_gap_at_10": 0.5}), 4)
0.45
"""

from __future__ import annotations

from typing import Mapping


class CompositeScore:
    """``sum_i w_i * term_i`` over named metrics; a name ``"1-<metric>"`` uses ``1 - value``.

    Use ``"1-..."`` for metrics where lower is better and that lie in [0, 1] (a gap, Gini,
    PopRSP), so that every term grows with quality. The score is written as
    ``val_<name>`` in Keras logs by `tfrs_diag.callbacks.BeyondAccuracy`, so
    `EarlyStopping(monitor="val_composite", mode="max")` can stop on it.
    """

    def __init__(self, weights: Mapping[str, float], name: str = "composite"):
        if not weights:
            raise ValueError("weights must name at least one metric, e.g. {'ndcg_at_10': 1.0}")
        for term, w in weights.items():
            if not isinstance(term, str) or not isinstance(w, (int, float)):
                raise ValueError(f"weights must map metric names to numbers, got {term!r}: {w!r}")
        self.weights = dict(weights)
        self.name = name

    @staticmethod
    def _parse(term: str) -> tuple[bool, str]:
        term = term.replace(" ", "")
        return (True, term[2:]) if term.startswith("1-") else (False, term)

    def __call__(self, results: Mapping[str, float]) -> float:
        total = 0.0
        for term, w in self.weights.items():
            inverted, key = self._parse(term)
            if key not in results:
                raise KeyError(f"composite term {term!r}: no metric {key!r}; available: {', '.join(sorted(results))}")
            value = float(results[key])
            total += w * ((1.0 - value) if inverted else value)
        return total

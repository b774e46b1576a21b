"""A user-weighted combination of normalised metrics, monitorable like any metric.

>>> score = CompositeScore({"ndcg_at_10": 0.6, "coverage_at_10": 0.2, "1-exposure_gap_at_10": 0.2})
>>> round(score({"ndcg_at_10": 0.5, "coverage_at_10": 0.25, "exposure_gap_at_10": 0.5}), 4)
0.45
"""

from __future__ import annotations

import re
import warnings
from typing import Mapping

# Results an evaluation leaves out when undefined (docs/metrics.md, "Undefined cases").
_MAY_BE_UNDEFINED = re.compile(r"^(.+/)?(pop_rsp_at_\d+|pop_reo_at_\d+|ild_at_\d+|entropy_norm_at_\d+"
                               r"|exposure_gap_at_\d+|\w+_at_\d+_(gap|ratio|user_mad))$")


class CompositeScore:
    """``sum_i w_i * term_i`` over named metrics; a name ``"1-<metric>"`` uses ``1 - value``.

    Use ``"1-..."`` for metrics where lower is better and that lie in [0, 1] (a gap, Gini,
    PopRSP), so that every term grows with quality. The score is written as
    ``val_<name>`` in Keras logs by `tfrs_diag.callbacks.BeyondAccuracy`, so
    `EarlyStopping(monitor="val_composite", mode="max")` can stop on it.

    A term whose metric is undefined in this evaluation (left out of the results, e.g.
    PopREO with no relevant tail item) is left out of the score, with a warning; an
    unknown metric name raises `KeyError`.
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
                if _MAY_BE_UNDEFINED.match(key):
                    warnings.warn(f"composite term {term!r}: {key} is undefined in these results "
                                  "(see docs/metrics.md, 'Undefined cases'); left out of the score", RuntimeWarning,
                                  stacklevel=2)
                    continue
                raise KeyError(f"composite term {term!r}: no metric {key!r}; available: {', '.join(sorted(results))}")
            value = float(results[key])
            total += w * ((1.0 - value) if inverted else value)
        return total

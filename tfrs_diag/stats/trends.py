"""Trend, plateau and jump detectors over short scalar series (numpy only, no Keras).

The overfitting monitor asks three questions of a loss series; each is a function here:

- is it really going up (or down), or is that noise? -- `trend`: the Theil-Sen slope
  (median of pairwise slopes, robust to one bad epoch) and the Mann-Kendall test
  (rank-based, no normality assumption), with one-sided p-values;
- has it stopped improving? -- `relative_improvement` / `is_plateau` (window means);
- did it jump at an epoch boundary? -- `relative_change`.

>>> t = trend([1.0, 1.1, 1.3, 1.2, 1.5])
>>> round(t.slope, 3), t.s, round(t.p_increasing, 3)
(0.113, 8, 0.043)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


def _as_series(y: Sequence[float], name: str = "y") -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite numbers only, got {arr.tolist()}")
    return arr


def theil_sen_slope(y: Sequence[float], x: Sequence[float] | None = None) -> float:
    """Median over all pairs i < j of ``(y_j - y_i) / (x_j - x_i)`` (x defaults to 0, 1, ...).

    NaN for fewer than two points. Pairs with equal x are skipped.

    >>> theil_sen_slope([0.0, 1.0, 2.0, 3.0, 40.0])   # the outlier does not move it
    1.0
    """
    y = _as_series(y)
    x = np.arange(len(y), dtype=np.float64) if x is None else _as_series(x, "x")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    i, j = np.triu_indices(len(y), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return float("nan")
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


@dataclasses.dataclass(frozen=True)
class Trend:
    """A series' Theil-Sen slope and Mann-Kendall statistics.

    ``s`` = sum over pairs i < j of sign(y_j - y_i); ``var_s`` its variance under "no
    trend" with the tie correction; ``z`` the continuity-corrected normal score;
    ``p_increasing`` / ``p_decreasing`` the one-sided p-values (normal approximation).
    """

    n: int
    slope: float
    s: int
    var_s: float
    z: float
    p_increasing: float
    p_decreasing: float

    @property
    def p_two_sided(self) -> float:
        return min(1.0, 2.0 * min(self.p_increasing, self.p_decreasing))


def mann_kendall(y: Sequence[float]) -> tuple[int, float, float]:
    """``(S, Var(S), Z)`` of the Mann-Kendall trend test (Kendall 1975, tie-corrected).

    ``Var(S) = [n(n-1)(2n+5) - sum_t t(t-1)(2t+5)] / 18`` over groups of t tied values;
    ``Z = (S - sign(S)) / sqrt(Var(S))`` (0 when S = 0).

    >>> s, var, z = mann_kendall([1, 2, 3, 4])   # S = 6, Var = 4*3*13/18, Z = 5/sqrt(Var)
    >>> s, round(var, 4), round(z, 4)
    (6, 8.6667, 1.6984)
    """
    y = _as_series(y)
    n = len(y)
    i, j = np.triu_indices(n, k=1)
    s = int(np.sign(y[j] - y[i]).sum())
    _, ties = np.unique(y, return_counts=True)
    var = (n * (n - 1) * (2 * n + 5) - float(np.sum(ties * (ties - 1) * (2 * ties + 5)))) / 18.0
    if var <= 0 or s == 0:
        return s, float(var), 0.0
    return s, float(var), (s - math.copysign(1, s)) / math.sqrt(var)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def trend(y: Sequence[float], x: Sequence[float] | None = None) -> Trend:
    """Theil-Sen slope plus the Mann-Kendall test of ``y`` (ordered by x or by position).

    With fewer than 3 points the p-values are 1 (no evidence either way). The smallest
    one-sided p-value a strictly monotone series can reach is 0.045 for 4 points,
    0.014 for 5 and 0.0042 for 6: pick the window with the threshold in mind.
    """
    y = _as_series(y)
    slope = theil_sen_slope(y, x)
    if len(y) < 3:
        return Trend(len(y), slope, 0, 0.0, 0.0, 1.0, 1.0)
    if x is not None:
        y = y[np.argsort(_as_series(x, "x"), kind="stable")]
    s, var, z = mann_kendall(y)
    return Trend(len(y), slope, s, var, z, _normal_sf(z), _normal_sf(-z))


def relative_improvement(y: Sequence[float], window: int) -> float:
    """How much lower the mean of the last ``window`` values is than the mean of the ``window`` before.

    ``(mean(y[-2w:-w]) - mean(y[-w:])) / |mean(y[-2w:-w])|``: 0.1 means the series got 10%
    lower, a negative value that it got worse. Means over windows, not single readings,
    so that one noisy reading neither makes nor breaks a plateau. NaN with fewer than
    ``2 * window`` values.

    >>> round(relative_improvement([10.0, 8.0, 7.9, 7.95], window=2), 6)   # 9 -> 7.925
    0.119444
    """
    y = _as_series(y)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(y) < 2 * window:
        return float("nan")
    before, last = y[-2 * window:-window].mean(), y[-window:].mean()
    return float((before - last) / max(abs(before), 1e-12))


def is_plateau(y: Sequence[float], window: int, tolerance: float) -> bool:
    """True when the last ``window`` values improved (went down) by less than ``tolerance``.

    >>> is_plateau([10.0, 8.0, 7.9, 7.95], window=2, tolerance=0.02)
    False
    >>> is_plateau([8.0, 7.9, 7.95, 7.9], window=2, tolerance=0.02)
    True
    """
    r = relative_improvement(y, window)
    return bool(np.isfinite(r) and r < tolerance)


def relative_change(before: float, after: float) -> float:
    """``(after - before) / |before|`` (before is floored at 1e-12 in magnitude).

    >>> relative_change(2.0, 2.5)
    0.25
    """
    return float((after - before) / max(abs(before), 1e-12))

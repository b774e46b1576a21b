"""Pure helpers of the plugin's routes: series downsampled and encoded for JSON, the heatmap."""

import math
from typing import Any, Iterable, Mapping, Sequence


MAX_POINTS = 1000
#: Points per series in the overview; heatmap columns.
OVERVIEW_POINTS = 300
HEATMAP_COLUMNS = 120
#: Records of one tag in the overview (the newest); the ``records`` route has them all.
OVERVIEW_RECORDS = 50
#: Histogram tags whose newest histogram the overview carries.
MAX_HISTOGRAMS = 100


def finite_or_text(x: float) -> float | str:
    """JSON has no NaN/Inf: those become the strings "nan", "inf", "-inf"."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def downsample(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """At most ``max_points`` of ``(step, value)`` points in step order, spikes kept.

    The series is cut into ``max_points // 2`` buckets of consecutive points and each
    bucket keeps its smallest and largest value (a spike never disappears, unlike with
    plain striding); non-finite values are always kept (they are what one looks for),
    and so are the first and last point.

    >>> pts = [(i, float(i % 7)) for i in range(100)] + [(100, 1000.0)]
    >>> small = downsample(pts, 20)
    >>> len(small) <= 20, (100, 1000.0) in small, small[0] == (0, 0.0)
    (True, True, True)
    """
    n = len(points)
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points!r}")
    if n <= max_points:
        return list(points)
    nonfinite = [i for i, (_, v) in enumerate(points) if not math.isfinite(v)]
    # At most half the budget for non-finite points, the rest for bucket extremes.
    keep = {0, n - 1, *nonfinite[: max(0, min(max_points // 2, max_points - 2))]}
    buckets = (max_points - len(keep)) // 2
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        finite = [i for i in range(lo, hi) if math.isfinite(points[i][1])]
        if finite:
            keep.add(min(finite, key=lambda i: points[i][1]))
            keep.add(max(finite, key=lambda i: points[i][1]))
    return [points[i] for i in sorted(keep)]


def encode_series(points: Iterable[tuple[int, float]]) -> list[list]:
    return [[int(s), finite_or_text(v)] for s, v in points]


def heatmap(series: Mapping[str, Sequence[tuple[int, float]]], columns: int = HEATMAP_COLUMNS) -> dict[str, Any]:
    """Rows (one per series) of the largest value per step bin; non-finite bins marked.

    Returns ``{"rows", "bins" ([lo, hi] steps), "values" (per row, per bin: a number,
    None for no reading, or "nan"/"inf"), "nonfinite" ([row, step] of every non-finite
    reading)}``. The largest value per bin shows a spike that a mean would hide.
    """
    rows = sorted(series)
    steps = [s for name in rows for s, _ in series[name]]
    if not steps:
        return {"rows": rows, "bins": [], "values": [[] for _ in rows], "nonfinite": []}
    lo, hi = min(steps), max(steps)
    n_bins = max(1, min(columns, hi - lo + 1, len(set(steps))))
    width = (hi - lo + 1) / n_bins
    bins = [[int(lo + math.floor(b * width)), int(lo + math.ceil((b + 1) * width) - 1)] for b in range(n_bins)]
    values, nonfinite = [], []
    for r, name in enumerate(rows):
        cells: list[Any] = [None] * n_bins
        for step, v in series[name]:
            b = min(n_bins - 1, int((step - lo) / width))
            if not math.isfinite(v):
                nonfinite.append([r, int(step)])
                cells[b] = finite_or_text(v)
            elif cells[b] is None or (isinstance(cells[b], float) and v > cells[b]):
                cells[b] = float(v)
        values.append(cells)
    return {"rows": rows, "bins": bins, "values": values, "nonfinite": nonfinite}

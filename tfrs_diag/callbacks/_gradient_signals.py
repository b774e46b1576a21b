"""What `OverfittingMonitor` reads from a `GradientStatistics` of the same fit (duck-typed).

Non-finite gradients since the last look (they pause the monitor's detectors) and the
layers whose gradients stalled (they feed the underfitting detector): firing
``vanishing_gradients`` alerts, or every variable's update/weight ratio below
`TINY_UPDATE_RATIO` (an optimizer that moves nothing, e.g. Adam at 1e-6 on 0.05-scale
weights gives ~3e-5).
"""

from __future__ import annotations

import math
from typing import Any

TINY_UPDATE_RATIO = 1e-4


def gradients_nonfinite(gradient_statistics: Any, last_seen: int) -> tuple[bool, int]:
    """``(new non-finite gradients since last_seen, the latest non-finite step)``; -1 = none."""
    capture = getattr(gradient_statistics, "capture", None)
    if capture is None or not hasattr(capture, "nonfinite_since"):
        return False, last_seen
    last = int(capture.nonfinite_since())
    return last >= 0 and last != last_seen, last


def stalled_layers(gradient_statistics: Any) -> list[str]:
    """Layers with a firing vanishing-gradient alert, or "all variables" when every update is tiny."""
    g = gradient_statistics
    if g is None:
        return []
    out = sorted(subject for kind, subject in g.alert_log.active if kind == "vanishing_gradients")
    try:
        from tfrs_diag.capture import SNAPSHOT_COLUMNS

        ratios = g.last_stats["snapshot"][:, SNAPSHOT_COLUMNS.index("update_ratio")]
        ratios = [float(r) for r in ratios if math.isfinite(r)]
        if ratios and max(ratios) < TINY_UPDATE_RATIO:
            out.append(f"all variables (update/weight ratio < {TINY_UPDATE_RATIO:g})")
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, ImportError):
        pass
    return out

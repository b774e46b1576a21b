"""`synthetic_feedback`: offline metrics of model versions and an online outcome with planted weights.

The test bed of `tfrs_diag.metrics.adaptive.fit_composite`: the outcome is
``base + sum_i w_i metric_i + noise``, so a fit must recover ``w``. The metrics move
together as real model versions' do (a more accurate version is usually less diverse).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

#: Metrics the generator draws, with their ranges at the two ends of the accuracy/diversity trade-off.
_METRICS = {"ndcg_at_10": (0.30, 0.05), "recall_at_10": (0.45, 0.10), "coverage_at_10": (0.10, 0.70),
            "novelty_at_10": (7.0, 10.0), "aplt_at_10": (0.02, 0.40), "gini_at_10": (0.95, 0.55)}


def synthetic_feedback(weights: Mapping[str, float], num_runs: int = 60, *, base: float = 0.02,
                       noise: float = 0.002, seed: int = 0) -> tuple[list[dict[str, float]], np.ndarray]:
    """``(offline, outcome)``: ``num_runs`` metric dicts and their outcomes (e.g. CTR).

    Each run sits at a random point ``t`` of the trade-off (every metric between its two
    ends, `_METRICS`) plus independent jitter, so the metrics are correlated but not
    collinear. ``weights`` plants the truth (metrics not named get weight 0); ``noise``
    is the standard deviation of the outcome's noise.

    >>> offline, ctr = synthetic_feedback({"ndcg_at_10": 0.1}, num_runs=3)
    >>> sorted(offline[0])[:2], ctr.shape
    (['aplt_at_10', 'coverage_at_10'], (3,))
    """
    unknown = sorted(set(weights) - set(_METRICS))
    if unknown:
        raise ValueError(f"weights names {unknown}; the generator draws {sorted(_METRICS)}")
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=num_runs)
    offline = []
    for i in range(num_runs):
        row = {}
        for name, (acc_end, div_end) in _METRICS.items():
            span = div_end - acc_end
            row[name] = float(acc_end + span * t[i] + rng.normal(scale=0.25 * abs(span)))
        offline.append(row)
    outcome = np.array([base + sum(w * row[m] for m, w in weights.items()) for row in offline])
    return offline, outcome + rng.normal(scale=noise, size=num_runs)

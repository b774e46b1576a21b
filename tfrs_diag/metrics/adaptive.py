"""`fit_composite`: the weights of a `CompositeScore` fitted to logged business feedback.

Given the offline metrics of several model versions (runs, or segments) and the online
outcome each had (CTR, conversion rate), fit ``outcome ~ b + sum_i w_i term_i`` with
``w >= 0`` and a ridge penalty on the standardised terms (scale-free), the penalty chosen
by K-fold cross-validation. The result is a `CompositeScore` (monitorable like any metric,
e.g. ``BeyondAccuracy(composite=fitted)``) that also states its cross-validated error,
bootstrap intervals of its weights and the score a target outcome needs. NumPy only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrs_diag.metrics.composite import CompositeScore

#: Ridge penalties tried by cross-validation (on standardised terms).
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0)


def _nn_ridge(z: np.ndarray, y: np.ndarray, l2: float, sweeps: int = 300) -> np.ndarray:
    """argmin_{w >= 0} ||y - z w||^2 / n + l2 ||w||^2 by exact coordinate descent (``z``, ``y`` centred)."""
    n, p = z.shape
    w = np.zeros(p)
    sq = (z * z).sum(axis=0) / n
    r = y.copy()
    for _ in range(sweeps):
        change = 0.0
        for j in range(p):
            if sq[j] + l2 <= 0:
                continue
            old = w[j]
            new = max(0.0, (z[:, j] @ r / n + sq[j] * old) / (sq[j] + l2))
            if new != old:
                r -= z[:, j] * (new - old)
                w[j] = new
                change = max(change, abs(new - old))
        if change < 1e-12:
            break
    return w


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Raw-unit weights and intercept of the non-negative ridge fit on standardised columns."""
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)  # a constant column carries no information: weight 0
    w = _nn_ridge((x - mean) / sd, y - y.mean(), l2) / sd
    return w, float(y.mean() - w @ mean)


def _cv_rmse(x: np.ndarray, y: np.ndarray, l2: float, folds: np.ndarray) -> float:
    errors = []
    for f in np.unique(folds):
        train = folds != f
        w, b = _fit(x[train], y[train], l2)
        errors.append((x[~train] @ w + b - y[~train]) ** 2)
    return float(np.sqrt(np.concatenate(errors).mean()))


class FittedComposite(CompositeScore):
    """A `CompositeScore` fitted to feedback: weights in outcome units per metric unit.

    Attributes: ``intercept``, ``l2`` (the chosen penalty), ``cv_rmse`` (K-fold error of
    the predicted outcome), ``baseline_rmse`` (the same for predicting the mean outcome),
    ``cv_r2 = 1 - (cv_rmse / baseline_rmse)^2``, ``intervals`` (per term the 90% bootstrap
    interval of its weight), ``num_observations``.
    """

    def __init__(self, weights, *, intercept, l2, cv_rmse, baseline_rmse, intervals, num_observations,
                 name="business_score"):
        super().__init__(weights, name=name)
        self.intercept, self.l2 = float(intercept), float(l2)
        self.cv_rmse, self.baseline_rmse = float(cv_rmse), float(baseline_rmse)
        self.cv_r2 = 1.0 - (self.cv_rmse / self.baseline_rmse) ** 2 if self.baseline_rmse > 0 else float("nan")
        self.intervals = dict(intervals)
        self.num_observations = int(num_observations)

    def predict(self, results: Mapping[str, float]) -> float:
        """The outcome these offline results predict (intercept + score)."""
        return self.intercept + self(results)

    def threshold(self, target_outcome: float) -> float:
        """The score a model needs for a predicted outcome of ``target_outcome``: alert below it."""
        return float(target_outcome) - self.intercept

    def __str__(self) -> str:
        lines = [f"{self.name} = {self.intercept:.4g} + sum w * term  (fitted on {self.num_observations} "
                 f"observations; cross-validated RMSE {self.cv_rmse:.4g} vs {self.baseline_rmse:.4g} for the mean, "
                 f"R^2 {self.cv_r2:.3f}; ridge l2 {self.l2:g})"]
        for term, w in self.weights.items():
            lo, hi = self.intervals[term]
            lines.append(f"  {term:<24} w = {w:.4g}   90% bootstrap interval [{lo:.4g}, {hi:.4g}]")
        return "\n".join(lines)


def fit_composite(offline: Sequence[Mapping[str, float]], outcome: Sequence[float], terms: Sequence[str], *,
                  l2: float | None = None, folds: int = 5, bootstrap: int = 200, seed: int = 0,
                  name: str = "business_score") -> FittedComposite:
    """Fits non-negative composite weights of ``terms`` to an observed ``outcome``.

    Args:
      offline: per observation (a model version, run or segment) its offline metrics,
        e.g. ``EvaluationResult.metrics`` of each version.
      outcome: the online outcome of each observation (CTR, conversion rate), aligned.
      terms: the metric names to weight; ``"1-<metric>"`` uses ``1 - value`` (for metrics
        where lower is better), as in `CompositeScore`.
      l2: the ridge penalty on standardised terms; None picks it from `L2_GRID` by
        K-fold cross-validation.
      folds: K of the cross-validation (at most the number of observations).
      bootstrap: resamples for the weights' intervals (0: none, intervals are the point).
      seed: seeds the folds and the bootstrap.

    >>> from tfrs_diag.datasets.feedback import synthetic_feedback
    >>> offline, ctr = synthetic_feedback({"ndcg_at_10": 0.2, "coverage_at_10": 0.05}, num_runs=80, seed=1)
    >>> fitted = fit_composite(offline, ctr, ["ndcg_at_10", "coverage_at_10"], bootstrap=0)
    >>> {t: round(w, 2) for t, w in fitted.weights.items()}
    {'ndcg_at_10': 0.2, 'coverage_at_10': 0.05}
    """
    terms = list(terms)
    if not terms:
        raise ValueError("terms must name at least one metric, e.g. ['ndcg_at_10', 'coverage_at_10']")
    y = np.asarray(outcome, np.float64).reshape(-1)
    if len(offline) != len(y):
        raise ValueError(f"offline has {len(offline)} observations, outcome {len(y)}: one outcome per observation")
    if len(y) < 3 * len(terms) or len(y) < 5:
        raise ValueError(f"fit_composite needs at least max(5, 3 x terms) = {max(5, 3 * len(terms))} observations "
                         f"for {len(terms)} terms, got {len(y)}; log more model versions or segments")
    if not np.isfinite(y).all():
        raise ValueError("outcome holds NaN/Inf; drop those observations")
    x = np.empty((len(y), len(terms)))
    for j, term in enumerate(terms):
        inverted, key = CompositeScore._parse(term)
        for i, results in enumerate(offline):
            if key not in results:
                raise ValueError(f"offline[{i}] has no metric {key!r} (term {term!r}); every observation needs "
                                 "every term: drop the term or the observation")
            x[i, j] = 1.0 - float(results[key]) if inverted else float(results[key])
    if not np.isfinite(x).all():
        raise ValueError("offline metrics hold NaN/Inf; drop those observations")
    rng = np.random.default_rng(seed)
    fold_ids = rng.permutation(np.arange(len(y)) % max(2, min(int(folds), len(y))))
    grid = L2_GRID if l2 is None else (float(l2),)
    cv = {g: _cv_rmse(x, y, g, fold_ids) for g in grid}
    best = min(grid, key=lambda g: (cv[g], -g))  # ties: the stronger penalty
    w, b = _fit(x, y, best)
    boots = np.array([_fit(x[idx], y[idx], best)[0]
                      for idx in (rng.integers(0, len(y), len(y)) for _ in range(int(bootstrap)))])
    intervals = {t: ((float(np.percentile(boots[:, j], 5)), float(np.percentile(boots[:, j], 95)))
                     if len(boots) else (float(w[j]), float(w[j]))) for j, t in enumerate(terms)}
    baseline = float(np.sqrt(np.concatenate([(y[fold_ids == f] - y[fold_ids != f].mean()) ** 2
                                             for f in np.unique(fold_ids)]).mean()))
    return FittedComposite(dict(zip(terms, map(float, w))), intercept=b, l2=best, cv_rmse=cv[best],
                           baseline_rmse=baseline, intervals=intervals, num_observations=len(y), name=name)

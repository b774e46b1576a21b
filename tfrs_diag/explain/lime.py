"""`LimeSurrogate`: a weighted linear surrogate fitted on coalitions, with its fidelity.

For each example, coalitions z in {0,1}^F (all of them when ``2^F <= num_samples``,
otherwise the empty and full coalition plus random ones of uniformly drawn size) are
evaluated like in `tfrs_diag.explain.Shapley`; a linear model ``v(z) ~ b + w . z`` is
fitted by weighted least squares with LIME's kernel
``exp(-d(z)^2 / kernel_width^2)``, ``d(z) = 1 - sqrt(|z| / F)`` (the cosine distance
between z and the all-ones coalition). The values are w, the base value b, and the
fidelity the weighted R^2 of the fit: 1 when the model is additive in the groups, lower
when interactions matter (then prefer `Shapley`).

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> a = LimeSurrogate(model, background).attribute(examples)  # doctest: +SKIP
>>> a.fidelity                                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.attribution import Attribution
from tfrs_diag.explain.shapley import all_coalitions


def lime_weights(masks: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's exponential kernel on the cosine distance of each coalition to the full one."""
    d = 1.0 - np.sqrt(masks.sum(axis=1) / masks.shape[1])
    return np.exp(-(d ** 2) / kernel_width ** 2)


def weighted_linear_fit(masks: np.ndarray, values: np.ndarray, weights: np.ndarray):
    """Fits ``values [n, C] ~ b + masks [C, F] @ w`` per row: (w [n, F], b [n], weighted R^2 [n])."""
    x = np.concatenate([np.ones((masks.shape[0], 1)), masks.astype(np.float64)], axis=1)
    sw = np.sqrt(weights)[:, None]
    coef, *_ = np.linalg.lstsq(x * sw, (values * sw[:, 0]).T, rcond=None)  # [F+1, n]
    pred = (x @ coef).T
    mean = (values * weights).sum(axis=1, keepdims=True) / weights.sum()
    ss_res = ((values - pred) ** 2 * weights).sum(axis=1)
    ss_tot = ((values - mean) ** 2 * weights).sum(axis=1)
    r2 = np.where(ss_tot > 1e-12 * np.maximum(1.0, (values ** 2 * weights).sum(axis=1)), 1.0 - ss_res / np.maximum(ss_tot, 1e-300), 1.0)
    return coef[1:].T, coef[0], r2


class LimeSurrogate(Explainer):
    """Weighted linear surrogate over group coalitions (see the module docstring).

    Args:
      model, background, baseline, groups, label_key, max_batch_rows: as in
        `tfrs_diag.explain.Explainer`.
      num_samples: coalitions per example (all 2^F when that is fewer).
      kernel_width: width of LIME's kernel on the cosine distance (LIME's default for
        text and images, 0.25).
      seed: seed of the sampled coalitions.
    """

    method = "lime"

    def __init__(self, model, background: Mapping[str, Any] | None = None, *, baseline: str | None = None,
                 groups=None, num_samples: int = 512, kernel_width: float = 0.25, seed: int = 0, **kwargs):
        super().__init__(model, background, baseline=baseline, groups=groups, **kwargs)
        if not isinstance(num_samples, int) or num_samples < self.num_groups + 2:
            raise ValueError(f"num_samples must be an integer >= groups + 2 = {self.num_groups + 2}, "
                             f"got {num_samples!r}")
        if not kernel_width > 0:
            raise ValueError(f"kernel_width must be positive, got {kernel_width!r}")
        self.num_samples, self.kernel_width, self.seed = num_samples, float(kernel_width), seed

    def coalitions(self) -> np.ndarray:
        """The ``[C, F]`` coalitions the surrogate is fitted on."""
        f = self.num_groups
        if (1 << f) <= self.num_samples:
            return all_coalitions(f)
        rng = np.random.default_rng(self.seed)
        sizes = rng.integers(1, f, size=self.num_samples - 2)
        keys = rng.random((self.num_samples - 2, f))
        ranks = keys.argsort(axis=1).argsort(axis=1)
        sampled = (ranks < sizes[:, None]).astype(np.float32)
        return np.concatenate([np.zeros((1, f)), np.ones((1, f)), sampled]).astype(np.float32)

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None) -> Attribution:
        rows, outputs, labels = self._prepare(examples, labels)
        masks = self.coalitions()
        v = self.coalition_values(rows, masks, progress=True)
        coef, intercept, r2 = weighted_linear_fit(masks, v, lime_weights(masks, self.kernel_width))
        return self._finish(Attribution(self.method, coef, intercept, outputs, self.group_names, labels, fidelity=r2,
                           extras={"coalitions": int(masks.shape[0]), "kernel_width": self.kernel_width,
                                   "baseline": self.baseline}))

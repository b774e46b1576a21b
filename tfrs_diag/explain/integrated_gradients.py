"""`IntegratedGradients` at the embedding outputs, with its completeness delta.

For an example's embedding row x and a baseline row b (both ``[D]``, all features
concatenated), integrated gradients of column j is

    IG_j = (x_j - b_j) * integral_0^1 d f(b + a (x - b)) / d e_j  da

approximated with ``steps`` nodes (Riemann midpoint or trapezoid, or Gauss-Legendre,
which is exact for polynomial paths of degree < 2 * steps). A group's attribution is the
sum over its columns; with several baseline rows (``baseline="background"``) the IG of
each row is averaged (expected gradients with a fixed quadrature). Completeness says
``sum_j IG_j = f(x) - f(b)``; ``Attribution.delta`` reports the gap, which shrinks with
more steps on a smooth model (ReLU kinks make it converge slowly).

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> a = IntegratedGradients(model, background, steps=64).attribute(examples)  # doctest: +SKIP
>>> a.delta.max() < 1e-3                                                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.attribution import Attribution

INTEGRATION = ("gauss_legendre", "riemann_middle", "riemann_trapezoid")


def quadrature(steps: int, integration: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1] for ``integration`` in `INTEGRATION` (weights sum to 1).

    >>> a, w = quadrature(4, "riemann_middle"); a.tolist(), w.tolist()
    ([0.125, 0.375, 0.625, 0.875], [0.25, 0.25, 0.25, 0.25])
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if integration == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1.0) / 2.0, w / 2.0
    if integration == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if integration == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2")
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, steps), w
    raise ValueError(f"integration must be one of {INTEGRATION}, got {integration!r}")


class IntegratedGradients(Explainer):
    """Integrated gradients of the output w.r.t. the embedding outputs, summed per group.

    Args:
      model, background, baseline, groups, label_key, max_batch_rows: as in
        `tfrs_diag.explain.Explainer` (default baseline: the background rows, else each
        table's mean row).
      steps: quadrature nodes along the path.
      integration: ``"gauss_legendre"`` (default), ``"riemann_middle"`` or ``"riemann_trapezoid"``.
    """

    method = "integrated_gradients"

    def __init__(self, model, background: Mapping[str, Any] | None = None, *, baseline: str | None = None,
                 groups=None, steps: int = 32, integration: str = "gauss_legendre", **kwargs):
        super().__init__(model, background, baseline=baseline, groups=groups, **kwargs)
        if not getattr(self.adapter, "differentiable", True):
            raise ValueError(f"IntegratedGradients needs gradients at the embeddings, but {self.describe_model()}: "
                             "a path between raw (e.g. string) feature values has no gradient. Use Shapley, "
                             "Occlusion, LimeSurrogate or PermutationImportance, or give the model "
                             "embed(features) and score(embeddings) methods")
        self.alphas, self.weights = quadrature(steps, integration)
        self.steps, self.integration = steps, integration

    def _graph_ig(self, ex, bg, alphas, weights):
        """Sum over ``bg`` rows of the per-column IG of each example: ``[ne, D]``."""
        grouped = tf.cast(tf.constant(self.space.col_group) < self.num_groups, tf.float32)
        diff = (ex[:, None, :] - bg[None]) * grouped  # ungrouped columns stay at the example
        start = ex[:, None, :] - diff
        points = start[:, None] + alphas[None, :, None, None] * diff[:, None]  # [ne, S, mb, D]
        with tf.GradientTape() as tape:
            tape.watch(points)
            total = tf.reduce_sum(self.space.head(tf.reshape(points, [-1, tf.shape(ex)[1]])))
        grads = tape.gradient(total, points)
        mean_grad = tf.einsum("s,nsbd->nbd", weights, grads)
        return tf.reduce_sum(diff * mean_grad, axis=1)

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None) -> Attribution:
        """IG of ``examples`` -> `Attribution` with ``delta = |sum(values) - (output - base)|``."""
        rows, outputs, labels = self._prepare(examples, labels)
        bg = self.baseline_rows()
        n, m, s = rows.shape[0], bg.shape[0], self.steps
        cap = self.max_batch_rows
        mb = min(m, max(1, cap // s))
        ne = min(n, max(1, cap // (s * mb)))
        fn = self._fn("ig")
        alphas, weights = tf.constant(self.alphas, tf.float32), tf.constant(self.weights, tf.float32)
        cols = np.zeros(rows.shape, dtype=np.float64)
        bar = self.progress(-(-n // ne))
        for i in range(0, n, ne):
            ex = tf.constant(rows[i:i + ne])
            for k in range(0, m, mb):
                cols[i:i + ne] += fn(ex, tf.constant(bg[k:k + mb]), alphas, weights).numpy()
            bar.advance()
        cols /= m
        values = np.zeros((n, self.num_groups + 1))
        np.add.at(values.T, self.space.col_group, cols.T)
        values = values[:, :self.num_groups]
        base = self.base_values(rows)
        delta = np.abs(values.sum(axis=1) - (outputs - base))
        return self._finish(Attribution(self.method, values, base, outputs, self.group_names, labels, delta=delta,
                           extras={"steps": s, "integration": self.integration, "baseline": self.baseline}))

"""`Shapley`: Shapley values of feature groups, exact over all coalitions or sampled.

The value of a coalition S of groups is the model output with S's groups taken from
the example and the others from the baseline, averaged over the baseline rows (the
interventional Shapley value that `shap.KernelExplainer` estimates with the same
background). The Shapley value of group g is

    phi_g = sum_{S not containing g} |S|! (F-|S|-1)! / F! * (v(S + g) - v(S))

so ``sum_g phi_g = f(x) - v({})``: with background rows, f(x) minus the mean output
over the background (efficiency).

Exact mode evaluates all 2^F coalitions of every example in a few batched calls (about
12 groups at most: 4096 coalitions per example and baseline row). Sampled mode
averages marginal contributions over antithetic pairs of random permutations (a
permutation and its reverse), which keeps efficiency exact per example and gives a
standard error per value.

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> explainer = Shapley(model, background=background_rows)    # doctest: +SKIP
>>> attribution = explainer.attribute(examples)                # doctest: +SKIP
>>> print(attribution)                                         # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.attribution import Attribution

#: Groups above which exact mode refuses (2^12 = 4096 coalitions per example and baseline row).
MAX_EXACT_GROUPS = 12


def all_coalitions(num_groups: int) -> np.ndarray:
    """``[2^F, F]`` 0/1 masks; row c holds the bits of c (row 0 empty, last row full)."""
    c = np.arange(1 << num_groups)[:, None]
    return ((c >> np.arange(num_groups)[None, :]) & 1).astype(np.float32)


def shapley_weights(masks: np.ndarray) -> np.ndarray:
    """``[C, F]`` matrix W with ``phi = v @ W`` for coalition values v over all ``masks``.

    ``W[S, g] = w(|S|-1)`` if g in S and ``-w(|S|)`` otherwise, ``w(s) = s!(F-s-1)!/F!``.
    """
    f = masks.shape[1]
    size = masks.sum(axis=1).astype(int)
    w = np.array([math.factorial(s) * math.factorial(f - s - 1) / math.factorial(f) for s in range(f)] + [0.0])
    inside = w[np.maximum(size - 1, 0)][:, None]
    outside = w[np.minimum(size, f)][:, None]
    return np.where(masks > 0, inside, -outside)


def permutation_masks(perms: np.ndarray) -> np.ndarray:
    """``[P, F+1, F]`` masks of the prefixes (0..F groups) of each permutation ``[P, F]``."""
    p, f = perms.shape
    rank = np.empty_like(perms)
    rank[np.arange(p)[:, None], perms] = np.arange(f)[None, :]
    return (rank[:, None, :] < np.arange(f + 1)[None, :, None]).astype(np.float32)


class Shapley(Explainer):
    """Shapley values of feature groups (see the module docstring for the definition).

    Args:
      model, background, baseline, groups, label_key, max_batch_rows: as in
        `tfrs_diag.explain.Explainer`.
      mode: ``"exact"`` (all 2^F coalitions), ``"sampled"`` (antithetic permutations),
        or ``"auto"``: exact up to ``max_exact_groups`` groups, sampled beyond.
      num_permutations: permutations per example in sampled mode (rounded up to even:
        they come in antithetic pairs).
      seed: seed of the sampled permutations.

    Example:

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> explainer = Shapley(model, background={k: v[:50] for k, v in data.train.items()})  # doctest: +SKIP
    >>> a = explainer.attribute({k: v[:5] for k, v in data.test.items()})                  # doctest: +SKIP
    >>> a.values.sum(1) + a.base_value - a.outputs                                          # doctest: +SKIP
    array([0., 0., 0., 0., 0.])
    """

    method = "shapley"

    def __init__(self, model, background: Mapping[str, Any] | None = None, *, baseline: str | None = None,
                 groups=None, mode: str = "auto", max_exact_groups: int = MAX_EXACT_GROUPS,
                 num_permutations: int = 64, seed: int = 0, **kwargs):
        super().__init__(model, background, baseline=baseline, groups=groups, **kwargs)
        if mode not in ("auto", "exact", "sampled"):
            raise ValueError(f"mode must be 'auto', 'exact' or 'sampled', got {mode!r}")
        if mode == "exact" and self.num_groups > max_exact_groups:
            raise ValueError(f"mode='exact' over {self.num_groups} groups needs 2^{self.num_groups} coalitions per "
                             f"example; the limit is max_exact_groups={max_exact_groups}. Use mode='sampled' "
                             "(antithetic permutations with a standard error), or merge features into fewer groups")
        if not isinstance(num_permutations, int) or num_permutations < 2:
            raise ValueError(f"num_permutations must be an integer >= 2, got {num_permutations!r}")
        self.mode = mode if mode != "auto" else ("exact" if self.num_groups <= max_exact_groups else "sampled")
        self.num_permutations = num_permutations + (num_permutations % 2)
        self.seed = seed

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None) -> Attribution:
        """Shapley values of ``examples`` (feature dict of n rows) -> `Attribution` ``[n, groups]``."""
        rows, outputs, labels = self._prepare(examples, labels)
        if self.mode == "exact":
            # Examples in chunks: the (example, background row, column) comparisons stay bounded.
            step = max(1, 16 * self.max_batch_rows // max(1, self.baseline_rows().shape[0] * rows.shape[1]))
            bar = self.progress(-(-rows.shape[0] // step))
            parts = []
            for lo in range(0, rows.shape[0], step):
                parts.append(self._exact(rows[lo:lo + step]))
                bar.advance()
            values, evaluated = np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts)
            return self._finish(Attribution(self.method, values, self.base_values(rows), outputs, self.group_names, labels,
                               extras={"mode": "exact", "coalitions": 1 << self.num_groups,
                                       "evaluations_per_example": evaluated / rows.shape[0],
                                       "baseline": self.baseline, "baseline_rows": int(self.baseline_rows().shape[0])}))
        return self._sampled(rows, outputs, labels)

    def _exact(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """Exact values, one (example, baseline row) pair at a time in batches, over only the
        groups where the pair differs.

        A group whose embedding is the same in the example and the baseline row (the same
        id) is a dummy player of that pair's game: it gets 0 and leaves the others' values
        unchanged. So a pair differing in k groups needs 2^k coalitions, not 2^F; pairs are
        batched by k. The value is the mean of the pairs' values over the baseline rows.
        Returns the values and the number of model evaluations.
        """
        bg = self.baseline_rows()
        n, m, f = rows.shape[0], bg.shape[0], self.num_groups
        col_group = self.space.col_group
        differs = np.zeros((n, m, f), dtype=bool)
        for g in range(f):
            cols = np.flatnonzero(col_group == g)
            differs[:, :, g] = (rows[:, None, cols] != bg[None, :, cols]).any(axis=2)
        sizes = differs.sum(axis=2)
        values = np.zeros((n, f))
        evaluated = 0
        for k in range(1, f + 1):
            ex_idx, bg_idx = np.nonzero(sizes == k)
            if ex_idx.size == 0:
                continue
            players = np.nonzero(differs[ex_idx, bg_idx])[1].reshape(-1, k)  # [q, k] groups in play
            reduced = all_coalitions(k)
            phi = self.pair_shapley(rows[ex_idx], bg[bg_idx], players, reduced, shapley_weights(reduced))
            values += np.bincount((ex_idx[:, None] * f + players).ravel(), weights=phi.ravel(),
                                  minlength=n * f).reshape(n, f)
            evaluated += ex_idx.size * reduced.shape[0]
        return values / m, evaluated

    def _sampled(self, rows, outputs, labels) -> Attribution:
        f, pairs = self.num_groups, self.num_permutations // 2
        rng = np.random.default_rng(self.seed)
        perms = np.stack([rng.permutation(f) for _ in range(pairs)])
        perms = np.concatenate([perms, perms[:, ::-1]])  # antithetic: each permutation and its reverse
        masks = permutation_masks(perms).reshape(-1, f)
        unique, inverse = np.unique(masks, axis=0, return_inverse=True)
        v = self.coalition_values(rows, unique, progress=True)[:, inverse.reshape(-1)].reshape(rows.shape[0], 2 * pairs, f + 1)
        steps = np.diff(v, axis=2)  # [n, P, F]: marginal of the group added at each step
        contrib = np.empty_like(steps)
        idx = np.arange(2 * pairs)[:, None]
        contrib[:, idx, perms] = steps
        paired = 0.5 * (contrib[:, :pairs] + contrib[:, pairs:])
        values = paired.mean(axis=1)
        stderr = paired.std(axis=1, ddof=1) / np.sqrt(pairs) if pairs > 1 else np.full_like(values, np.nan)
        return self._finish(Attribution(self.method, values, v[:, 0, 0], outputs, self.group_names, labels, stderr=stderr,
                           extras={"mode": "sampled", "permutations": 2 * pairs, "coalitions": int(unique.shape[0]),
                                   "baseline": self.baseline}))

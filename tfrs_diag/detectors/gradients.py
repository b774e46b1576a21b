"""The gradient detectors: non-finite, exploding and vanishing gradients.

Each is pure: fed plain numbers (gradient and weight norms per variable or layer),
it returns fire / clear `Finding`s. `tfrs_diag.callbacks.GradientStatistics` feeds them
from `tfrs_diag.capture.GradientCapture`; the tests feed them recorded series
(``tests/data/series``). The rules and the numbers behind their defaults are in
docs/gradients.md.

- `NonFiniteGradients`: a variable's gradient held NaN/Inf (the first step per variable
  is exact: the capture records it in-graph on every step).
- `ExplodingGradients`: the step's **global** gradient norm is above ``factor`` times the
  median of the previous ``window`` steps' global norms, and the variables named are
  those that carry at least ``min_share`` of that step's global norm. A variable whose
  gradient grows from negligible to small (a deep sigmoid stack leaving its initial
  plateau: 200x its own median while the global norm fell) is not an explosion.
- `VanishingGradients`: a layer's relative gradient ``||g|| / ||w||`` stays more than
  ``decades`` orders of magnitude below the median layer's for ``window`` readings in a
  row. The median over layers is the reference (robust to one odd layer), and dividing
  by the weights makes the test independent of each layer's scale.

>>> v = VanishingGradients(decades=2, window=2)
>>> g = {"d0": 1e-6, "d1": 1e-1, "d2": 2e-1, "out": 3e-1}
>>> w = {"d0": 1.0, "d1": 1.0, "d2": 1.0, "out": 1.0}
>>> v.update(10, g, w), [f.subject for f in v.update(20, g, w)]
([], ['d0'])
"""

from __future__ import annotations

import collections
import math
from typing import Mapping, Sequence

from tfrs_diag.detectors.base import Detector, Finding, found

_ADVICE_EXPLODING = "lower the learning rate or clip gradients (clipnorm=1.0) before it turns into NaN."


def layer_norms(values: Sequence[float], layers: Sequence[str]) -> dict[str, float]:
    """Per-layer L2 norm from per-variable norms: sqrt of the sum of squares of each layer's variables.

    >>> layer_norms([3.0, 4.0, 1.0], ["a", "a", "b"])
    {'a': 5.0, 'b': 1.0}
    """
    sq: dict[str, float] = {}
    for v, layer in zip(values, layers):
        sq[layer] = sq.get(layer, 0.0) + float(v) ** 2
    return {k: math.sqrt(s) for k, s in sq.items()}


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


class NonFiniteGradients(Detector):
    """Fires once per fit when gradients become NaN/Inf; clears when they are finite again.

    ``update(first_steps, finite)``: ``first_steps`` maps each variable to the first step
    its gradient was non-finite (negative or None: never); ``finite`` says whether the
    steps since the previous reading were all finite. The subject names the variables
    that broke first (the origin); the others, which usually follow once NaN weights
    feed the forward pass, are in the evidence.

    >>> d = NonFiniteGradients()
    >>> [(f.action, f.subject, f.evidence["first_step"]) for f in d.update({"a": 7, "b": 8, "c": -1}, False)]
    [('fire', 'a', {'a': 7, 'b': 8})]
    >>> d.update({"a": 7, "b": 8, "c": 9}, False), [f.action for f in d.update({"a": 7}, True)]
    ([], ['clear'])
    """

    kind = "nonfinite_gradients"
    severity = "critical"
    message = ("Gradients became NaN/Inf here: lower the learning rate, clip gradients (clipnorm=1.0), "
               "or look for NaN/Inf in the inputs of that batch.")

    def __init__(self) -> None:
        super().__init__()
        self.subject: str | None = None
        self.first_step: int | None = None

    def reset(self) -> None:
        super().reset()
        self.subject = self.first_step = None

    def update(self, first_steps: Mapping[str, int | None], finite: bool,
               counts: Mapping[str, int] | None = None) -> list[Finding]:
        if self.subject is not None:
            if finite:
                subject, self.subject = self.subject, None
                return found(self.clear(subject))
            return []
        if self.first_step is not None:  # fired and cleared in this fit: once per fit
            return []
        broke = {v: int(s) for v, s in first_steps.items() if s is not None and s >= 0}
        if not broke:
            return []
        step = min(broke.values())
        self.first_step = step
        self.subject = ", ".join(v for v, s in broke.items() if s == step)
        evidence = {"first_step": broke}
        if counts is not None:
            evidence["nonfinite_steps"] = {v: int(counts[v]) for v in broke if v in counts}
        return found(self.fire(self.subject, self.message, evidence))


class ExplodingGradients(Detector):
    """The step's global gradient norm jumps far above its recent history.

    Rule, per step: with ``m`` the median of the previous ``window`` steps' log10 global
    norms (non-finite steps enter the window as the median itself, so they move
    nothing; until the window is more than half full its empty slots count as +inf, so
    detection starts after ``window - window // 2`` steps and the median errs high), the
    step explodes when ``log10(global_norm) - m > log10(factor)``. It names each
    variable whose gradient norm is at least ``min_share`` of that step's global norm
    (the largest one if none is), each once per fit.

    `observe` applies the rule to one step's per-variable norms (a recorded series);
    `GradientCapture` applies the same rule in-graph on every step and `update` takes
    what it recorded: per variable (first exploding step, ratio to the median, share).

    An explosion is an event, but its alert stays active only while the run has not
    recovered: `calm` is fed the global norm of every step, and once it has stayed within
    ``sqrt(factor)`` of its level before the explosion (the median of the steps before it)
    for ``clear_after`` steps in a row, every firing variable is cleared and `rearm` is
    set, so that the capture records a later explosion of the same variables afresh.

    Args:
      factor: how far above the running median (100: two orders of magnitude).
      window: steps in the running median.
      min_share: fraction of the step's global norm a variable must carry to be named.
      clear_after: calm steps in a row that clear the alert (default: ``window``).
    """

    kind = "exploding_gradients"

    def __init__(self, factor: float = 100.0, window: int = 25, min_share: float = 0.1,
                 clear_after: int | None = None):
        super().__init__()
        if not factor > 1:
            raise ValueError(f"exploding_factor must be > 1, got {factor!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ValueError(f"exploding_window must be a positive integer, got {window!r}")
        if not 0 < min_share <= 1:
            raise ValueError(f"exploding_min_share must be in (0, 1], got {min_share!r}")
        clear_after = window if clear_after is None else clear_after
        if isinstance(clear_after, bool) or not isinstance(clear_after, int) or clear_after <= 0:
            raise ValueError(f"clear_after must be a positive integer, got {clear_after!r}")
        self.factor = float(factor)
        self.window = window
        self.min_share = float(min_share)
        self.clear_after = clear_after
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._history = collections.deque([math.inf] * self.window, maxlen=self.window)
        # (step, log10 global norm) of the recent steps `calm` saw: the level before an explosion.
        self._recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=max(4 * self.window, 256))
        self._level: float | None = None
        self._calm = 0
        #: Set when the alert cleared: the in-graph record of first exploding steps must be re-armed.
        self.rearm = False

    def running_median(self) -> float:
        """The (window // 2 + 1)-th largest log10 norm of the window (+inf while it fills)."""
        return sorted(self._history, reverse=True)[self.window // 2]

    def observe(self, step: int, norms: Mapping[str, float]) -> list[Finding]:
        """One step's per-variable gradient norms (every step, in order): fires, and clears via `calm`."""
        total = math.sqrt(sum(float(v) ** 2 for v in norms.values()))
        median = self.running_median()
        if not math.isfinite(total):
            self._history.append(median)
            return self.calm(step, total)
        log_norm = min(math.log10(max(total, 1e-19)), 39.0)
        self._history.append(log_norm)
        ratio_log = log_norm - median
        if not ratio_log > math.log10(self.factor):
            return self.calm(step, total)
        events = {name: (int(step), 10.0 ** ratio_log, float(v) / total if total > 0 else 0.0)
                  for name, v in norms.items()}
        return self.update(events) + self.calm(step, total)

    def calm(self, step: int, global_norm: float | None) -> list[Finding]:
        """One step's global norm: clears the alert once the run is back to its level (see the class)."""
        if global_norm is None or not math.isfinite(float(global_norm)):
            self._calm = 0
            return []
        log_norm = min(math.log10(max(float(global_norm), 1e-19)), 39.0)
        self._recent.append((int(step), log_norm))
        if not self.firing or self._level is None:
            return []
        self._calm = self._calm + 1 if log_norm <= self._level + 0.5 * math.log10(self.factor) else 0
        if self._calm < self.clear_after:
            return []
        cleared = found(*(self.clear(subject) for subject in sorted(self.firing)))
        self._level, self._calm, self.rearm = None, 0, True
        return cleared

    def _level_before(self, step: int) -> float | None:
        before = [v for s, v in self._recent if s < step]
        return _median(before[-self.window:]) if len(before) >= 3 else None

    def update(self, events: Mapping[str, tuple[int, float, float]]) -> list[Finding]:
        """Exploding steps recorded per variable: name -> (first step, ratio to the median, share)."""
        if not events:
            return []
        named = {n: e for n, e in events.items() if e[2] >= self.min_share}
        if not named:  # an explosion spread thin over many variables: name its largest part
            top = max(events, key=lambda n: events[n][2])
            named = {top: events[top]}
        out = []
        if not self.firing:  # a new explosion: the level to come back to
            self._level, self._calm = self._level_before(min(e[0] for e in named.values())), 0
        for name, (step, ratio, share) in named.items():
            out.append(self.fire(name, (
                f"At step {step} the global gradient norm jumped to {ratio:.3g}x its running median and this "
                f"variable carries {share:.0%} of it: {_ADVICE_EXPLODING}"),
                {"step": int(step), "ratio_to_median": float(ratio), "share_of_global_norm": float(share),
                 "factor": self.factor, "window": self.window}))
        return found(*out)


class VanishingGradients(Detector):
    """A layer's gradient, relative to its weights, stays far below the other layers'.

    Rule, per reading: for each layer with weights, ``r = log10(||g|| / ||w||)``; with
    ``m`` the median of ``r`` over the layers, a layer is low when ``m - r > decades``.
    It fires when a layer is low for ``window`` consecutive readings and clears on the
    first reading where it is not. Readings with fewer than ``min_layers`` comparable
    layers (or a median that is not finite) are skipped: in a two-tower model of two
    embedding tables there is no depth for gradients to vanish through.

    Args:
      decades: orders of magnitude below the median layer (2: 100x smaller).
      window: consecutive readings.
      min_layers: layers needed for a comparison.
    """

    kind = "vanishing_gradients"

    def __init__(self, decades: float = 2.0, window: int = 3, min_layers: int = 3):
        super().__init__()
        if not decades > 0:
            raise ValueError(f"vanishing_decades must be > 0, got {decades!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ValueError(f"vanishing_window must be a positive integer, got {window!r}")
        if isinstance(min_layers, bool) or not isinstance(min_layers, int) or min_layers < 2:
            raise ValueError(f"min_layers must be an integer >= 2, got {min_layers!r}")
        self.decades = float(decades)
        self.window = window
        self.min_layers = min_layers
        self.streak: dict[str, int] = {}

    def reset(self) -> None:
        super().reset()
        self.streak = {}

    @staticmethod
    def relative_gradients(grad_norms: Mapping[str, float], weight_norms: Mapping[str, float]) -> dict[str, float]:
        """log10(||g|| / ||w||) per layer with finite norms and nonzero weights (-inf for a zero gradient)."""
        out = {}
        for layer, g in grad_norms.items():
            w = weight_norms.get(layer)
            if w is None or not (math.isfinite(g) and math.isfinite(w)) or w <= 0 or g < 0:
                continue
            out[layer] = math.log10(g / w) if g > 0 else -math.inf
        return out

    def update(self, step: int, grad_norms: Mapping[str, float], weight_norms: Mapping[str, float]) -> list[Finding]:
        rel = self.relative_gradients(grad_norms, weight_norms)
        if len(rel) < self.min_layers:
            return []
        median = _median(list(rel.values()))
        if not math.isfinite(median):
            return []
        out = []
        for layer in grad_norms:
            r = rel.get(layer)
            if r is None:
                self.streak.pop(layer, None)
                continue
            below = median - r
            if below > self.decades:
                self.streak[layer] = self.streak.get(layer, 0) + 1
                if self.streak[layer] >= self.window:
                    ratio = 10.0 ** -below
                    out.append(self.fire(layer, (
                        f"This layer's gradient, relative to its weights, has been {ratio:.1e} of the median "
                        f"layer's for {self.streak[layer]} readings: use ReLU-family activations or normalisation "
                        "between layers, check its initialisation, or give it a larger learning rate."),
                        {"relative_gradient": 10.0 ** r if math.isfinite(r) else 0.0,
                         "median_relative_gradient": 10.0 ** median, "decades_below_median": below,
                         "decades": self.decades, "readings": self.streak[layer]}))
            else:
                self.streak.pop(layer, None)
                out.append(self.clear(layer))
        return found(*out)


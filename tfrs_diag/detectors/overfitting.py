"""Detectors of the training curve: overfitting (epoch trend), one-epoch overfitting, underfitting.

Fed plain numbers by `tfrs_diag.callbacks.OverfittingMonitor` (epoch logs, probe losses
per example, a trivial baseline, the names of layers whose gradients stalled); tested on
recorded series (tests/data/series/monitor_*.json). docs/diagnostics.md explains each
rule and the numbers it was tuned on.

>>> d = Underfitting(min_readings=2)    # a retrieval probe of 256: log(256) = 5.545 per example
>>> d.update(0, 0, seen=5.545, baseline=5.545)   # the first epoch is warm-up
[]
>>> [(f.action, f.subject) for f in d.update(10, 1, seen=5.540, baseline=5.545)]
[('fire', 'training probe')]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from tfrs_diag.detectors.base import Detector, Finding, found
from tfrs_diag.stats import trends as T

ACCURACY_HINTS = ("acc", "auc", "recall", "precision", "ndcg", "hit", "top_", "mrr", "map")
_MAX_MODE_HINTS = ACCURACY_HINTS + ("coverage",)


def mode_of(name: str) -> str:
    """"max" for metrics where higher is better (accuracy, recall, top-K...), else "min"."""
    return "max" if any(h in name.lower() for h in _MAX_MODE_HINTS) else "min"


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


class Overfitting(Detector):
    """``monitor`` worsens over the last ``window`` epochs while its training counterpart does not.

    Mann-Kendall one-sided p < ``alpha`` and a Theil-Sen slope in the worsening direction
    (a strictly monotone rise over 5 epochs gives p = 0.014, one inversion 0.043). Feed
    it each epoch's logs (`update`); ``tests`` holds the latest trend results, for the
    callback to write. Names validation accuracy metrics that still improve.
    """

    kind = "overfitting"

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", window: int = 5, alpha: float = 0.05):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 3:
            raise ValueError(f"window must be an integer >= 3, got {window!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.monitor, self.window, self.alpha = monitor, window, float(alpha)
        self.mode = mode_of(monitor) if mode == "auto" else mode
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.epochs: list[dict[str, float]] = []
        self.tests: dict[str, tuple[T.Trend, float]] = {}

    @property
    def train_key(self) -> str | None:
        return self.monitor[4:] if self.monitor.startswith("val_") else None

    def recent(self, key: str) -> list[float]:
        """The last ``window`` finite epoch values of ``key``."""
        return [e[key] for e in self.epochs if key in e and math.isfinite(e[key])][-self.window:]

    def update(self, values: Mapping[str, float], best_epoch: int | None = None) -> list[Finding]:
        self.epochs.append(dict(values))
        sign = 1.0 if self.mode == "min" else -1.0  # worse = up for "min"
        self.tests = {}
        for key in (self.monitor, self.train_key):
            series = self.recent(key) if key is not None else []
            if len(series) >= 3:
                t = T.trend(series)
                self.tests[key] = (t, t.p_increasing if sign > 0 else t.p_decreasing)
        val = self.tests.get(self.monitor)
        if val is None or val[0].n < self.window:
            return []
        t, p_worse = val
        train = self.tests.get(self.train_key)
        train_ok = train is None or (sign * train[0].slope <= 0 or train[1] >= self.alpha)
        if not (p_worse < self.alpha and sign * t.slope > 0 and train_ok):
            return found(self.clear(self.monitor))
        best = f" (best at epoch {best_epoch + 1})" if best_epoch is not None else ""
        improving = self.still_improving(values)
        if improving:  # the TFRS question: loss worse, top-K accuracy better -- which to stop on?
            advice = (f"{', '.join(improving)} still improve{'s' if len(improving) == 1 else ''}, so if that "
                      f"is what you serve, monitor it instead (OverfittingMonitor(monitor=...), EarlyStopping), "
                      "else stop earlier (on_overfit='restore_best') or add L2 to the embeddings.")
        else:
            advice = "stop earlier (on_overfit='restore_best'), add L2 or dropout to the embeddings, or use more data."
        return found(self.fire(
            self.monitor,
            f"{self.monitor} has worsened for {self.window} epochs while training {self.train_key or 'loss'} "
            f"did not{best}: {advice}",
            {"slope": t.slope, "p_worse": p_worse, "window": self.window, "best_epoch": best_epoch,
             "train_slope": train[0].slope if train else None, "still_improving": improving}))

    def still_improving(self, values: Mapping[str, float]) -> list[str]:
        """Validation accuracy metrics (not per-group breakdowns) that improve significantly
        over the same window; at most three."""
        out = []
        for key in sorted(values):
            if (not key.startswith("val_") or key == self.monitor or "/" in key
                    or not any(h in key.lower() for h in ACCURACY_HINTS)):
                continue
            series = self.recent(key)
            if len(series) < self.window:
                continue
            t = T.trend(series)
            if (t.p_increasing if mode_of(key) == "max" else t.p_decreasing) < self.alpha:
                out.append(key)
        return out[:3]


class OneEpochOverfitting(Detector):
    """The held-out probe loss jumps right after an epoch boundary while the training probe's falls.

    Within the first ``jump_fraction`` of an epoch after the first, a held-out reading is
    compared with the last reading of the previous epoch (the boundary). It is a jump when
    the rise is more than ``jump_threshold`` of the boundary value, **or** more than
    ``excess_threshold`` of what the model had gained over the trivial baseline
    (``baseline - before``). The second test is what sees it on MSE: a rating loss sits
    on an irreducible floor (MovieLens held-out MSE ~0.95), so a memorising hashed cross
    that throws away a third of the gain over the mean predictor (0.956 -> 1.049, with
    the mean predictor at 1.256) is a rise of only 9.7%.
    """

    kind = "one_epoch_overfitting"
    subject = "held-out probe"

    def __init__(self, jump_threshold: float = 0.1, excess_threshold: float = 0.25, jump_fraction: float = 0.5):
        super().__init__()
        for name, value in (("jump_threshold", jump_threshold), ("excess_threshold", excess_threshold)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0 < jump_fraction <= 1:
            raise ValueError(f"jump_fraction must be in (0, 1], got {jump_fraction!r}")
        self.jump_threshold, self.excess_threshold = float(jump_threshold), float(excess_threshold)
        self.jump_fraction = float(jump_fraction)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.boundary: dict[int, dict[str, Any]] = {}  # epoch -> its last reading
        self.epoch_steps: dict[int, int] = {}  # epoch -> its length in steps
        self._checked: set[int] = set()

    def end_epoch(self, epoch: int, step: int, heldout: float | None, seen: float | None, steps: int) -> None:
        """The reading at the end of ``epoch`` (``steps`` long): the next epoch's boundary."""
        self.boundary[epoch] = {"step": step, "heldout": heldout, "seen": seen}
        self.epoch_steps[epoch] = steps

    def update(self, step: int, epoch: int, heldout: float | None, seen: float | None,
               steps_into_epoch: int, baseline: float | None = None) -> list[Finding]:
        before = self.boundary.get(epoch - 1)
        if epoch < 1 or before is None or epoch in self._checked or not _finite(heldout, before["heldout"]):
            return []
        if steps_into_epoch > self.jump_fraction * self.epoch_steps[epoch - 1]:
            self._checked.add(epoch)  # this boundary's window is over without a jump
            return found(self.clear(self.subject))
        rise = T.relative_change(before["heldout"], heldout)
        gain = baseline - before["heldout"] if _finite(baseline) else float("nan")
        excess = (heldout - before["heldout"]) / gain if gain > 0 else float("nan")
        seen_fell = seen is None or before["seen"] is None or seen < before["seen"]
        jump = rise > self.jump_threshold or (math.isfinite(excess) and excess > self.excess_threshold)
        if not (jump and seen_fell):
            return []
        self._checked.add(epoch)
        evidence = {"heldout_before": before["heldout"], "heldout_after": heldout, "relative_rise": rise,
                    "share_of_gain_lost": excess, "baseline": baseline, "steps_into_epoch": steps_into_epoch,
                    "boundary_step": before["step"]}
        if seen is not None and before["seen"] is not None:
            evidence.update(seen_before=before["seen"], seen_after=seen)
        lost = f", {excess:.0%} of its gain over a trivial baseline," if math.isfinite(excess) else ""
        return found(self.fire(
            self.subject,
            f"Held-out loss rose {rise:.0%}{lost} within {steps_into_epoch} steps of epoch {epoch + 1} while the "
            f"training examples' loss fell: stop after epoch {epoch} (on_overfit='restore_best') or lower the "
            "embedding learning rate.", evidence))


class Underfitting(Detector):
    """Training does not get below a trivial baseline, or stalls with stalled gradients.

    Judged on per-example training losses (the training probe's; for plain Keras models
    without one, the epoch loss), from the last reading of the first epoch on (the first
    epoch is warm-up):

    - **at the baseline**: at least ``min_readings`` readings (over half an epoch at the
      default cadence: a healthy slow starter, recorded at 99.4% then 98.4% of log(256) in
      its first readings of epoch 2, is at 97.4% by the fifth), and every one of them is
      at or above ``(1 - margin) x baseline``. The baseline is the best trivial
      predictor's loss (the callback's lowest of: a given ``baseline_loss``, the mean
      predictor for MSE/BCE-like losses, the uniform softmax ``log(probe size)`` for a
      TFRS retrieval task, the untrained model). Recorded: a rating model at Adam(1e-6)
      stays at 13.79 per example against a mean predictor's 1.26; a retrieval model at
      5.545 against log(256) = 5.545.
    - **stalled**: the last ``plateau_window`` readings improve by less than
      ``plateau_tolerance`` on the ``plateau_window`` before, while ``stalled`` names
      layers whose gradients vanish or whose updates are tiny (`GradientStatistics`).

    Never while the held-out loss falls steadily (Mann-Kendall p < 0.05 over the last
    ``plateau_window`` readings) below ``(1 - margin) x baseline``: that model learns.
    The held-out loss is never judged on its own: recorded, an overfitting MovieLens
    retrieval model's held-out loss stays above log(256) from its first epoch on (5.94 to
    6.2 per example) while its training loss falls from 5.55 to 4.5. Clears once the loss
    is clearly below the baseline (``1 - 2 margin``) or improving by twice the tolerance. A
    loss that grew past ``diverging_ratio`` x its lowest reading is diverging (the gradients'
    alert), not underfitting.
    """

    kind = "underfitting"

    def __init__(self, margin: float = 0.02, min_readings: int = 5, plateau_window: int = 5,
                 plateau_tolerance: float = 0.01, alpha: float = 0.05, diverging_ratio: float = 10.0):
        super().__init__()
        if not 0 < margin < 0.5:
            raise ValueError(f"margin must be in (0, 0.5), got {margin!r}")
        for name, value, lo in (("min_readings", min_readings, 1), ("plateau_window", plateau_window, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not plateau_tolerance > 0:
            raise ValueError(f"plateau_tolerance must be > 0, got {plateau_tolerance!r}")
        self.margin, self.min_readings, self.diverging_ratio = float(margin), min_readings, float(diverging_ratio)
        self.plateau_window, self.plateau_tolerance, self.alpha = plateau_window, float(plateau_tolerance), alpha
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.readings: list[tuple[int, float | None, float | None]] = []  # epoch, seen, heldout

    def _since_warmup(self, index: int) -> list[float]:
        first = [i for i, r in enumerate(self.readings) if r[0] >= 1]
        if not first:
            return []
        start = max(first[0] - 1, 0)  # keep the end-of-first-epoch reading
        return [r[index] for r in self.readings[start:] if _finite(r[index])]

    def update(self, step: int, epoch: int, seen: float | None = None, heldout: float | None = None,
               baseline: float | None = None, stalled: Sequence[str] = ()) -> list[Finding]:
        """One reading: ``seen`` the training loss per example (the training probe's, or a
        mean-reduced epoch loss), ``heldout`` the held-out probe's (the veto only)."""
        self.readings.append((int(epoch), seen, heldout))
        subject = "training probe"
        series = self._since_warmup(1)
        if epoch < 1 or not series:
            return []
        has_base = _finite(baseline) and baseline > 0
        level = self.margin
        heldout_series = [r[2] for r in self.readings if _finite(r[2])][-self.plateau_window:]
        learning = (has_base and len(heldout_series) >= 3 and heldout_series[-1] < (1 - level) * baseline
                    and T.trend(heldout_series).p_decreasing < self.alpha)
        at_base = has_base and len(series) >= self.min_readings and min(series) >= (1 - level) * baseline
        improvement = T.relative_improvement(series, self.plateau_window) \
            if len(series) >= 2 * self.plateau_window else float("nan")
        stalled_now = bool(stalled) and math.isfinite(improvement) and improvement < self.plateau_tolerance
        diverging = series[-1] > self.diverging_ratio * min(series)
        if diverging:  # a loss that blows up is the gradients' story (exploding), not underfitting
            return found(self.clear(subject))
        if (at_base or stalled_now) and not learning:
            return found(self.fire(subject, self._message(series[-1], baseline if has_base else None, at_base,
                                                          list(stalled)),
                                   {"loss": series[-1], "baseline": baseline if has_base else None,
                                    "ratio_to_baseline": series[-1] / baseline if has_base else None,
                                    "readings": len(series), "relative_improvement_over_window": improvement,
                                    "window": self.plateau_window, "stalled_layers": list(stalled)}))
        clearly_better = has_base and series[-1] < (1 - 2 * level) * baseline
        if learning or (clearly_better and not stalled_now) or (
                math.isfinite(improvement) and improvement >= 2 * self.plateau_tolerance):
            return found(self.clear(subject))
        return []

    @staticmethod
    def _message(loss: float, baseline: float | None, at_base: bool, stalled: list[str]) -> str:
        if at_base and baseline is not None:
            times = f"{loss / baseline:.1f}x" if loss > 1.5 * baseline else "no lower than"
            why = f"the training loss ({loss:.4g} per example) is {times} a trivial predictor's ({baseline:.4g})"
        else:
            why = "the training loss stopped improving"
        if stalled:
            why += f" and the gradients of {', '.join(stalled[:3])} stalled"
        return (f"{why[0].upper()}{why[1:]}: raise the learning rate, widen the embeddings or the model, or "
                "train longer.")

"""What every detector is: a pure object fed readings (plain numbers) that says fire or clear.

A detector owns one alert kind, its thresholds and its advice sentence. It never reads
a model, a tensor or a file: callbacks capture numbers, feed them to detectors and write
what the detectors conclude (`Finding`) to the run's `tfrs_diag.summary.AlertLog`
(`apply_findings`). So each firing rule can be tested on a recorded series alone.

>>> class TooHigh(Detector):
...     kind = "exploding_gradients"
...     def update(self, value: float):
...         if value > 10:
...             return found(self.fire("loss", f"{value} is above 10: lower the learning rate."))
...         return found(self.clear("loss"))
>>> d = TooHigh()
>>> [f.action for f in d.update(50.0)], [f.action for f in d.update(50.0)], [f.action for f in d.update(1.0)]
(['fire'], [], ['clear'])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from tfrs_diag import summary as S


@dataclasses.dataclass(frozen=True)
class Finding:
    """A detector's conclusion from one reading: ``action`` "fire" or "clear" on ``subject``."""

    kind: str
    action: str  # "fire" or "clear"
    subject: str
    severity: str = "warning"
    message: str = ""
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_alert(self, step: int, epoch: int | None) -> S.Alert:
        return S.Alert(self.kind, self.severity, int(step), epoch, self.subject, self.message, dict(self.evidence))


class Detector:
    """Base of the detectors: remembers which subjects are firing so each fires and clears once.

    Subclasses set ``kind`` (an alert kind of `tfrs_diag.summary.ALERT_KINDS`) and
    ``severity``, take their thresholds in ``__init__`` and implement
    ``update(...) -> list[Finding]`` with `fire` and `clear`. `reset` forgets all
    state (a new `fit`, like Keras' ``EarlyStopping.on_train_begin``).
    """

    kind: ClassVar[str]
    severity: ClassVar[str] = "warning"

    def __init__(self) -> None:
        self.firing: set[str] = set()

    def reset(self) -> None:
        """Forgets every reading and firing subject."""
        self.firing = set()

    def fire(self, subject: str, message: str, evidence: Mapping[str, Any] | None = None) -> Finding | None:
        """A "fire" finding, or None when ``subject`` is already firing."""
        if subject in self.firing:
            return None
        self.firing.add(subject)
        return Finding(self.kind, "fire", subject, self.severity, message, evidence or {})

    def clear(self, subject: str) -> Finding | None:
        """A "clear" finding, or None when ``subject`` is not firing."""
        if subject not in self.firing:
            return None
        self.firing.discard(subject)
        return Finding(self.kind, "clear", subject, self.severity)


def found(*findings: Finding | None) -> list[Finding]:
    """The findings that are not None (`Detector.fire`/`clear` return None for no change)."""
    return [f for f in findings if f is not None]


class NonFinitePause:
    """After non-finite values, the other detectors of a run pause until values are finite again.

    A run whose gradients went NaN/Inf has garbage losses, norms and embeddings: any
    further alert (collapse, overfitting) would be a consequence, not a finding. Feed it
    whether the latest reading was finite; it returns a note to log once when the pause
    starts and once when it ends, and ``paused`` tells the callback to skip its detectors.

    >>> pause = NonFinitePause("OverfittingMonitor")
    >>> pause.update(False, step=40)
    'OverfittingMonitor: values are NaN/Inf since step 40; its other detectors pause until they are finite again.'
    >>> pause.paused, pause.update(False, step=41)
    (True, None)
    >>> pause.update(True, step=50)
    'OverfittingMonitor: values are finite again at step 50; its detectors resume.'
    """

    def __init__(self, owner: str):
        self.owner = owner
        self.since: int | None = None

    @property
    def paused(self) -> bool:
        return self.since is not None

    def reset(self) -> None:
        self.since = None

    def update(self, finite: bool, step: int) -> str | None:
        if not finite and self.since is None:
            self.since = int(step)
            return (f"{self.owner}: values are NaN/Inf since step {step}; its other detectors pause until "
                    "they are finite again.")
        if finite and self.since is not None:
            self.since = None
            return f"{self.owner}: values are finite again at step {step}; its detectors resume."
        return None


def all_finite(values: Iterable[float | None]) -> bool:
    """True when every given number is finite (None values are skipped)."""
    return all(math.isfinite(v) for v in values if v is not None)


def apply_findings(alert_log: S.AlertLog, findings: Sequence[Finding], step: int, epoch: int | None) -> None:
    """Writes findings to the run's alert log: fire records an alert, clear a "cleared" record."""
    for f in findings:
        if f.action == "fire":
            alert_log.fire(f.to_alert(step, epoch))
        else:
            alert_log.clear(f.kind, f.subject, int(step), epoch)

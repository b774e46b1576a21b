"""The alert log: one record and one printed line per alert, deduplicated per (kind, subject);
`active_alerts`: which of the alerts read back are still open."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping

from tfrs_diag.summary import writer as _w
from tfrs_diag.summary.schema import ALERT_TAG, SEVERITY_ORDER, Alert

_logger = logging.getLogger("tfrs_diag")


class AlertLog:
    """Deduplicates alerts per (kind, subject), writes them and prints each once.

    A condition that keeps holding does not alert again; when it goes away,
    `clear` records that, and it may fire again later.
    """

    def __init__(self, log_dir: str | None, run: str = "train", echo: bool = True):
        self._log_dir = log_dir
        self._run = run
        self._echo = echo
        self.active: dict[tuple[str, str], Alert] = {}
        self.history: list[Alert] = []

    def fire(self, alert: Alert) -> bool:
        """Records ``alert`` unless the same (kind, subject) is already firing."""
        key = (alert.kind, alert.subject)
        if key in self.active:
            return False
        self.active[key] = alert
        self._emit(alert)
        return True

    def clear(self, kind: str, subject: str, step: int, epoch: int | None = None) -> bool:
        alert = self.active.pop((kind, subject), None)
        if alert is None:
            return False
        cleared = dataclasses.replace(
            alert, step=int(step), epoch=epoch, status="cleared", severity="info",
            message=f"The condition no longer holds (it fired at step {alert.step}).",
            evidence={**alert.evidence, "fired_at_step": alert.step, "fired_message": alert.message},
        )
        self._emit(cleared)
        return True

    def _emit(self, alert: Alert) -> None:
        self.history.append(alert)
        if self._echo:
            print(str(alert), flush=True)
        _logger.info("%s", alert)
        if self._log_dir is not None:
            payload = alert.to_dict()
            # TensorBoard keeps one record per (tag, step), and a record at an earlier step than
            # the last one evicts the later ones (--load_fast). So alert records go out at
            # non-decreasing steps (the alert's own step is in its payload), and each carries
            # the alerts written before it at its record step (in this run, by any callback):
            # the last record of a step holds them all; see `expand_alert_records`.
            path = _w.run_path(self._log_dir, self._run)
            with _w.writers_lock:
                step, earlier = _w.alerts_at_step.get(path, (None, []))
                if step is None or alert.step > step:
                    step, earlier = alert.step, []
                _w.alerts_at_step[path] = (step, earlier + [payload])
            writer = _w.writer_for(self._log_dir, self._run)
            with writer.as_default():
                _w.write_record(ALERT_TAG, "alert", {**payload, "earlier_at_step": earlier} if earlier else payload, step)
            writer.flush()


def active_alerts(alerts: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The problems still open: per (kind, subject), the latest alert if it is not "cleared".

    Each comes with ``since_step`` and ``since_epoch``: where it first fired after its last
    clear. Ordered by severity (worst first), then by ``since_step``. ``alerts`` as
    `expand_alert_records` returns them (in step order).

    >>> fired = {"kind": "k", "subject": "a", "severity": "warning", "step": 5, "epoch": 0}
    >>> again = {**fired, "step": 9, "epoch": 1}
    >>> [(a["step"], a["since_step"]) for a in active_alerts([fired, again])]
    [(9, 5)]
    >>> active_alerts([fired, {**fired, "step": 7, "status": "cleared"}])
    []
    """
    open_: dict[tuple, dict] = {}
    for a in alerts:
        key = (a.get("kind"), a.get("subject"))
        if a.get("status") == "cleared":
            open_.pop(key, None)
        elif key in open_:
            open_[key] = {**a, "since_step": open_[key]["since_step"], "since_epoch": open_[key]["since_epoch"]}
        else:
            open_[key] = {**a, "since_step": a.get("step"), "since_epoch": a.get("epoch")}
    since = lambda a: a["since_step"] if isinstance(a["since_step"], int) else 0  # noqa: E731
    return sorted(open_.values(), key=lambda a: (-SEVERITY_ORDER.get(a.get("severity"), 0), since(a)))

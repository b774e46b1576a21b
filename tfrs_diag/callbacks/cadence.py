"""Default cadences: how often the callbacks read, from the steps per epoch.

Both aim for at least `READINGS_PER_EPOCH` readings per epoch, so that a detector that
needs a streak of readings sees one within an epoch without tuning, at a bounded cost.
"""

from __future__ import annotations

#: Default cadence when the steps per epoch are known: at least this many readings per epoch...
READINGS_PER_EPOCH = 8
#: ...but never more often than every this many steps (a reading costs ~5 ms of host work,
#: see docs/benchmarks.md: at most ~1.3 ms per step) ...
MIN_EVERY_N_STEPS = 4
#: ...nor less often than this (the cadence when the epoch length is unknown).
MAX_EVERY_N_STEPS = 100
#: The probes' cadence while the epoch length is unknown.
PROBE_FALLBACK_EVERY = 100


def default_every_n_steps(steps_per_epoch: int | None, steps_per_execution: int = 1) -> int:
    """The cadence `GradientStatistics` uses when ``every_n_steps`` is None.

    ``steps_per_epoch // 8`` clamped to [4, 100] (100 when the epoch length is unknown),
    rounded up to a multiple of ``steps_per_execution`` (statistics are read between
    executions).

    >>> default_every_n_steps(78), default_every_n_steps(94), default_every_n_steps(20), default_every_n_steps(5000)
    (9, 11, 4, 100)
    >>> default_every_n_steps(None), default_every_n_steps(78, steps_per_execution=4)
    (100, 12)
    """
    if steps_per_epoch is None or steps_per_epoch <= 0:
        n = MAX_EVERY_N_STEPS
    else:
        n = min(MAX_EVERY_N_STEPS, max(MIN_EVERY_N_STEPS, int(steps_per_epoch) // READINGS_PER_EPOCH))
    spe = max(1, int(steps_per_execution))
    return -(-n // spe) * spe


def default_probe_every(steps_per_epoch: int | None) -> int:
    """The default cadence: at least `READINGS_PER_EPOCH` readings per epoch (plus the epoch end).

    Deterministic (no timing): a fixed number of readings per epoch bounds the probes'
    cost to 2 x 9 x probe size forward passes per epoch, whatever the epoch's length.

    >>> default_probe_every(78), default_probe_every(5), default_probe_every(None)
    (9, 1, 100)
    """
    if not steps_per_epoch:
        return PROBE_FALLBACK_EVERY
    return max(1, int(steps_per_epoch) // READINGS_PER_EPOCH)


def steps_per_execution(model) -> int:
    """The model's ``steps_per_execution`` (1 when unset); statistics are read between executions."""
    spe = getattr(model, "_steps_per_execution", None)
    if spe is None:
        return 1
    try:
        return int(spe.numpy()) if hasattr(spe, "numpy") else int(spe)
    except Exception:  # pragma: no cover
        return 1

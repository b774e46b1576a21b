"""Restore-best for `OverfittingMonitor`: the best epoch by a monitored value, and its weights.

Like Keras' ``EarlyStopping(restore_best_weights=True)``: the weights (all model weights
except `EmbeddingProbe` usage counters and string tables) are copied to host memory at
each new best epoch, and put back on request.
"""

from __future__ import annotations

import math

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.layers.embedding_probe import EmbeddingProbe


class BestWeights:
    """Tracks the best epoch of a series (``mode`` "min" or "max"); keeps its weights when ``keep``."""

    def __init__(self, mode: str = "min", keep: bool = False):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.keep = mode, keep
        self.reset()

    def reset(self) -> None:
        self.epoch: int | None = None
        self.value: float | None = None
        self.weights: list[np.ndarray] | None = None

    def update(self, model, epoch: int, value: float, mode: str | None = None) -> bool:
        """Records ``value`` of ``epoch``; True (and weights copied) when it is the best so far."""
        if not math.isfinite(value):
            return False
        sign = 1.0 if (mode or self.mode) == "min" else -1.0
        if self.value is not None and not sign * value < sign * self.value:
            return False
        self.value, self.epoch = float(value), int(epoch)
        if self.keep:
            self.weights = [v.numpy() for v in restorable_variables(model)]
        return True

    def restore(self, model) -> int | None:
        """Puts the best epoch's weights back; returns that epoch (None when none were kept)."""
        if self.weights is None:
            return None
        for v, w in zip(restorable_variables(model), self.weights):
            v.assign(w)
        return self.epoch


def restorable_variables(model) -> list:
    """The model's weights minus usage counters and string tables (what restore_best puts back)."""
    counters = {id(m.usage_counts) for m in model.submodules if isinstance(m, EmbeddingProbe) and m.built}
    return [v for v in model.weights if id(v) not in counters and v.dtype != tf.string]

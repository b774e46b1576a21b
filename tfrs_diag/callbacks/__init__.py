"""Keras callbacks: thin glue around the pure computations in `tfrs_diag.stats`."""

from tfrs_diag.callbacks.beyond_accuracy import BeyondAccuracy
from tfrs_diag.callbacks.explanation import ExplanationCallback
from tfrs_diag.callbacks.gradients import GradientStatistics, NonFiniteGradientError
from tfrs_diag.callbacks.overfitting import OverfittingMonitor

__all__ = ["BeyondAccuracy", "ExplanationCallback", "GradientStatistics", "NonFiniteGradientError",
           "OverfittingMonitor"]

"""Detectors: one small pure object per alert kind, fed numbers, returning fire / clear findings.

The flow is capture -> compute -> detect -> write: callbacks capture readings (in-graph
statistics, probe losses, top-K metrics), `tfrs_diag.stats` computes, detectors decide,
and the callback writes the findings to its run's alert log (`apply_findings`).
"""

from tfrs_diag.detectors.base import Detector, Finding, NonFinitePause, all_finite, apply_findings, found
from tfrs_diag.detectors.embeddings import DeadEmbeddingRows, EmbeddingCollapse, EmbeddingMemorization
from tfrs_diag.detectors.gradients import ExplodingGradients, NonFiniteGradients, VanishingGradients
from tfrs_diag.detectors.fairness import ExposureConcentration, FairnessGap
from tfrs_diag.detectors.overfitting import OneEpochOverfitting, Overfitting, Underfitting

__all__ = [
    "Detector",
    "Finding",
    "NonFinitePause",
    "all_finite",
    "apply_findings",
    "found",
    "DeadEmbeddingRows",
    "EmbeddingCollapse",
    "EmbeddingMemorization",
    "ExposureConcentration",
    "FairnessGap",
    "ExplodingGradients",
    "NonFiniteGradients",
    "VanishingGradients",
    "OneEpochOverfitting",
    "Overfitting",
    "Underfitting",
]

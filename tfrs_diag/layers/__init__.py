"""Keras layers that plug into TFRS towers and top-K indexes.

`EmbeddingProbe` counts embedding lookups in-graph. The re-ranking and exploration
layers (`MMR`, `DPP`, `Calibrated`, `EpsilonGreedy`, `Boltzmann`, all `ReRanker`s) pick
the top-k of a retrieved pool; `ReRankedTopK` puts one on top of a TFRS top-K index.
"""

from tfrs_diag.layers.calibrated import Calibrated
from tfrs_diag.layers.dpp import DPP
from tfrs_diag.layers.embedding_probe import EmbeddingProbe
from tfrs_diag.layers.exploration import Boltzmann, EpsilonGreedy
from tfrs_diag.layers.mmr import MMR
from tfrs_diag.layers.reranked_topk import ReRankedTopK
from tfrs_diag.layers.rerank import ReRanker

__all__ = ["Boltzmann", "Calibrated", "DPP", "EmbeddingProbe", "EpsilonGreedy", "MMR", "ReRankedTopK", "ReRanker"]

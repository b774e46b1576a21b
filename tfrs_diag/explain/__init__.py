"""Post-hoc explanations of ranking and retrieval scores, attributed to input feature groups.

Every method has the same shape: construct it with the model (or a feature adapter) and a
background, then ``.attribute(examples) -> Attribution``; switch methods by changing one
name. All of them work in embedding space (see `tfrs_diag.explain.adapters`).

>>> from tfrs_diag import explain                                             # doctest: +SKIP
>>> a = explain.Shapley(model, background).attribute(examples)               # doctest: +SKIP
>>> a = explain.IntegratedGradients(model, background).attribute(examples)   # doctest: +SKIP
>>> print(a)                                                                  # doctest: +SKIP
"""

from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.adapters import (
    BASELINES,
    EmbeddingSpace,
    FeatureAdapter,
    RankingAdapter,
    RetrievalAdapter,
    TowerAdapter,
    as_adapter,
    resolve_groups,
)
from tfrs_diag.explain.attribution import Attribution
from tfrs_diag.explain.integrated_gradients import IntegratedGradients
from tfrs_diag.explain.lime import LimeSurrogate
from tfrs_diag.explain.occlusion import Occlusion
from tfrs_diag.explain.permutation import PermutationImportance
from tfrs_diag.explain.shapley import Shapley

__all__ = ["Attribution", "BASELINES", "EmbeddingSpace", "Explainer", "FeatureAdapter", "IntegratedGradients",
           "LimeSurrogate", "Occlusion", "PermutationImportance", "RankingAdapter", "RetrievalAdapter", "Shapley",
           "TowerAdapter", "as_adapter", "resolve_groups"]

"""Post-hoc explanations of ranking and retrieval scores, attributed to input feature groups.

Every method has the same shape: construct it with the model (or a feature adapter) and a
background, then ``.attribute(examples) -> Attribution``; switch methods by changing one
name. All of them work in embedding space (see `tfrs_diag.explain.adapters`). Models
without ``embed``/``score`` methods (the TFRS tutorials' models, plain Keras functional
or subclassed models) are split into their lookups and head by calling them on the
background rows (`tfrs_diag.explain.discovery`); where no split holds, the explainers
swap raw feature values in input space instead (no integrated gradients there).
Retrieval scores ``dot(query_tower, candidate_tower)``: pass ``query_model=`` and
``candidate_model=``, or let the tutorials' tower names be found.

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> from tfrs_diag import explain                                             # doctest: +SKIP
>>> a = explain.Shapley(model, background).attribute(examples)               # doctest: +SKIP
>>> a = explain.IntegratedGradients(model, background).attribute(examples)   # doctest: +SKIP
>>> a = explain.Shapley(listwise_model, background, output=lambda y: y[:, 0, 0]).attribute(examples)  # doctest: +SKIP
>>> print(a)                                                                  # doctest: +SKIP
"""

from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.adapters import (
    BASELINES,
    FeatureAdapter,
    RankingAdapter,
    RetrievalAdapter,
    TowerAdapter,
    as_adapter,
    resolve_groups,
)
from tfrs_diag.explain.attribution import Attribution
from tfrs_diag.explain.discovery import AutoAdapter, InputSpaceAdapter
from tfrs_diag.explain.embedding_space import EmbeddingSpace, FeatureCodec
from tfrs_diag.explain.integrated_gradients import IntegratedGradients
from tfrs_diag.explain.lime import LimeSurrogate
from tfrs_diag.explain.occlusion import Occlusion
from tfrs_diag.explain.permutation import PermutationImportance
from tfrs_diag.explain.shapley import Shapley
from tfrs_diag.explain.writer import write_attribution

#: Method names for `explainer` (and `tfrs_diag.callbacks.ExplanationCallback`).
METHODS = {
    "shapley": Shapley,
    "integrated_gradients": IntegratedGradients,
    "occlusion": Occlusion,
    "lime": LimeSurrogate,
    "permutation_importance": PermutationImportance,
}


def explainer(method: str, model, background=None, **kwargs) -> Explainer:
    """The explainer named ``method`` (a key of `METHODS`): switch methods by changing one name.

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> explainer("integrated_gradients", model, background, steps=64).attribute(examples)  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method](model, background, **kwargs)

__all__ = ["Attribution", "AutoAdapter", "BASELINES", "InputSpaceAdapter", "EmbeddingSpace", "Explainer", "FeatureAdapter", "FeatureCodec", "IntegratedGradients",
           "LimeSurrogate", "METHODS", "Occlusion", "PermutationImportance", "RankingAdapter", "RetrievalAdapter", "Shapley",
           "TowerAdapter", "as_adapter", "explainer", "resolve_groups", "write_attribution"]

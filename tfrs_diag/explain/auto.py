"""`auto_adapter`: the adapter the explainers build for a model without embed()/score() methods."""

from __future__ import annotations

from typing import Any, Mapping

from tfrs_diag.evaluation import CANDIDATE_TOWERS, QUERY_TOWERS
from tfrs_diag.explain.discovery import SPACES, NeedsRows, input_keys, probe_rows, split_or_fallback
from tfrs_diag.explain.recording import call_fn, is_layer, root_layers
from tfrs_diag.explain.towers import find_towers, own_call, retrieval_adapter


def auto_adapter(model, features: Mapping[str, Any] | None, *, output=None, query_model=None, candidate_model=None,
                 query_features=None, candidate_features=None, space: str = "auto"):
    """The adapter the explainers use for a model without ``embed``/``score`` methods.

    Retrieval (a score ``dot(query_tower, candidate_tower)``) when ``query_model``/
    ``candidate_model`` are given, or when ``model`` has no ``call`` of its own but has
    tower attributes (`find_towers`); otherwise the model's output ``model(features)``
    (after ``output``). Split by `discover` when possible, else in input space
    (``space="auto"``); ``space="embedding"`` raises instead of falling back,
    ``space="input"`` skips the split.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if features is None:
        raise NeedsRows(f"background: to explain {type(model).__name__} (no embed()/score() methods) the explainers "
                         "call it on a few feature rows to find its lookups; pass background=<feature dict>")
    probe = probe_rows(features, "background")
    retrieval = query_model is not None or candidate_model is not None or (
        not own_call(model) and find_towers(model) is not None)
    if retrieval:
        if output is not None:
            raise ValueError("output= picks a model output to explain; a retrieval score (query_model=/"
                             "candidate_model=) needs none")
        return retrieval_adapter(model, probe, query_model=query_model, candidate_model=candidate_model,
                                 query_features=query_features, candidate_features=candidate_features, space=space)
    if not callable(model):
        raise TypeError(f"cannot explain a {type(model).__name__}: pass a Keras model, a score function of feature "
                        "dicts, or a FeatureAdapter")
    if is_layer(model) and not own_call(model):
        raise TypeError(f"{type(model).__name__} has no call() and no query/candidate towers among "
                        f"{list(QUERY_TOWERS[:3] + CANDIDATE_TOWERS[:3])}: give it embed(features) and score(embeddings) "
                        "methods, pass query_model=/candidate_model= for a retrieval score, or pass a score function")
    name = type(model).__name__ if is_layer(model) else getattr(model, "__name__", "the score function")
    fn = call_fn(model)
    keys = input_keys(model, tuple(probe))
    return split_or_fallback(fn, root_layers(model), probe, output=output, vector=False, name=name, space=space,
                              input_keys=keys)

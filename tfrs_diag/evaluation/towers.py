"""Finding a retrieval model's query and candidate towers by the names the TFRS tutorials use."""

from __future__ import annotations

from typing import Sequence

from tfrs_diag._keras import tf


#: Attribute names of the query and candidate towers in the TFRS tutorials and in common
#: user code, looked for in this order when ``query_model``/``candidate_model`` are not given.
QUERY_TOWERS = ("query_model", "user_model", "_query_model", "_user_model", "query_tower", "user_tower",
                "_query_tower", "_user_tower", "query_encoder", "user_encoder")
CANDIDATE_TOWERS = ("candidate_model", "item_model", "movie_model", "_candidate_model", "_item_model",
                    "_movie_model", "candidate_tower", "item_tower", "movie_tower", "_candidate_tower",
                    "_item_tower", "candidate_encoder", "item_encoder")


def keras_attributes(model) -> list[str]:
    """Names of ``model``'s attributes that are Keras layers or models (what a tower can be)."""
    try:
        items = list(vars(model).items())
    except TypeError:  # no __dict__
        return []
    return [name for name, value in items
            if isinstance(value, tf.keras.layers.Layer) and not isinstance(value, tf.keras.metrics.Metric)]


def _attributes_hint(model) -> str:
    names = keras_attributes(model)
    return (f"{type(model).__name__}'s Keras layer/model attributes are: {', '.join(names)}" if names
            else f"{type(model).__name__} has no attributes that are Keras layers or models")


def resolve_tower(model, tower, names: Sequence[str], argument: str):
    """The tower ``tower`` names: a layer/callable, the name (or dotted path) of an attribute
    of ``model``, or None to look for the attributes ``names`` (None when none exists)."""
    if tower is None:
        for name in names:
            found = getattr(model, name, None)
            if found is not None and callable(found):
                return found
        return None
    if isinstance(tower, str):
        obj = model
        for part in tower.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ValueError(f"{argument}={tower!r}: {type(model).__name__} has no attribute {part!r}; "
                                 f"{_attributes_hint(model)}")
        if not callable(obj):
            raise ValueError(f"{argument}={tower!r} is a {type(obj).__name__}, not a layer or callable; "
                             f"{_attributes_hint(model)}")
        return obj
    if callable(tower):
        return tower
    raise TypeError(f"{argument}: pass the tower (a Keras layer/model or a callable) or the name of the "
                    f"model's attribute that holds it, got {type(tower).__name__}")


def missing_tower(model, argument: str, names: Sequence[str], extra: str = "") -> ValueError:
    return ValueError(f"{argument}: found no tower on {type(model).__name__} (looked for "
                      f"{', '.join(names[:6])}, ...); pass {argument}= the tower or the name of the attribute "
                      f"that holds it{extra}. {_attributes_hint(model)}")

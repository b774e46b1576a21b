"""The query and candidate towers of a retrieval model, and which features each one reads.

`find_towers` finds the towers of the tutorials' models (``user_model``/``movie_model``,
``query_model``/``candidate_model``, ``_query_model``/``_candidate_model``) by the
evaluation's names; `tower_inputs` finds which features each takes by watching
``compute_loss`` call them, stopped before the task runs; `retrieval_adapter` builds the
explainers' adapter over the two towers.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.evaluation import CANDIDATE_TOWERS, QUERY_TOWERS, resolve_tower
from tfrs_diag.explain.discovery import split_or_fallback
from tfrs_diag.explain.recording import Stop, call_fn, first_input, intercept, is_layer, match_feature, root_layers


def own_call(model) -> bool:
    return is_layer(model) and type(model).call is not tf.keras.Model.call


def find_towers(model) -> tuple[str, str] | None:
    """The attribute names of ``model``'s (query, candidate) towers, or None.

    The same vocabulary as the evaluation's (`tfrs_diag.evaluation.QUERY_TOWERS`,
    `CANDIDATE_TOWERS`): the first callable attribute of each list.
    """
    query = next((n for n in QUERY_TOWERS if callable(getattr(model, n, None))), None)
    candidate = next((n for n in CANDIDATE_TOWERS if callable(getattr(model, n, None))), None)
    return (query, candidate) if query is not None and candidate is not None else None


def _structure(spec, keys: Sequence[str], argument: str):
    """``query_features``-like spec -> a structure of feature names (str: one tensor; list: a dict)."""
    names = [spec] if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in keys]
    if unknown:
        raise ValueError(f"{argument} names {unknown}, which the background rows do not have; they have {list(keys)}")
    return spec if isinstance(spec, str) else {n: n for n in names}


def tower_inputs(model, query, candidate, probe: Mapping[str, np.ndarray]):
    """Which features each tower takes, as structures of feature names, by watching ``model``
    call them: ``compute_loss(copy of the rows)`` (stopped as soon as both towers were
    called, before any task or metric runs), else ``model(rows)``."""
    raw = {k: tf.constant(v) for k, v in probe.items()}
    ids = {id(t): n for n, t in raw.items()}
    roles = {id(query): "query_model", id(candidate): "candidate_model"}
    seen: dict[str, Any] = {}

    def handler(layer, call, args, kwargs):
        role = roles.get(id(layer))
        if role is not None and role not in seen:
            seen[role] = first_input(args, kwargs)
            if len(seen) == 2:
                raise Stop
        return call(*args, **kwargs)

    errors = []
    attempts = [getattr(model, "compute_loss", None)]
    if own_call(model):
        attempts.append(lambda feats, training=False: model(feats, training=training))
    for attempt in attempts:
        if attempt is None or len(seen) == 2:
            continue
        seen.clear()
        with intercept([t for t in (query, candidate) if is_layer(t)], handler):
            try:
                attempt(dict(raw), training=False)
            except Stop:
                pass
            except Exception as e:  # noqa: BLE001 - reported below with the fix
                errors.append(f"{type(e).__name__}: {e}")
    if len(seen) < 2:
        why = f" (it raised {errors[0]})" if errors else ""
        raise ValueError(f"cannot tell which features the towers take: {type(model).__name__}.compute_loss did not "
                         f"call both query_model and candidate_model on the background rows{why}; pass "
                         "query_features= and candidate_features= (a feature name, or a list of names for a tower "
                         "that takes a dict)")
    out = {}
    for role, inputs in seen.items():
        def name_of(t, role=role):
            name = match_feature(t, raw, ids)
            if name is None:
                raise ValueError(f"{role}'s input is computed inside {type(model).__name__}, not a feature of the "
                                 f"rows; pass {role.replace('_model', '_features')}=<feature name or names>")
            return name
        out[role] = tf.nest.map_structure(name_of, inputs)
    return out["query_model"], out["candidate_model"]


def _tower_fn(tower, structure) -> Callable:
    call = call_fn(tower)
    return lambda feats: call(tf.nest.map_structure(lambda n: feats[n], structure))


def retrieval_adapter(model, probe, *, query_model=None, candidate_model=None, query_features=None,
                      candidate_features=None, space: str = "auto"):
    """A `RetrievalAdapter` over the two towers of ``model``, each split (or in input space) by itself."""
    from tfrs_diag.explain.adapters import RetrievalAdapter

    if (query_model is None) != (candidate_model is None):
        raise ValueError("pass both query_model= and candidate_model= (layers, callables or attribute names)")
    if query_model is None:
        names = find_towers(model)
        if names is None:
            raise ValueError(f"{type(model).__name__} has no tower attributes among "
                             f"{list(QUERY_TOWERS[:3] + CANDIDATE_TOWERS[:3])}; pass query_model= and candidate_model=")
        query_model, candidate_model = names
    qname = query_model if isinstance(query_model, str) else getattr(query_model, "name", "query_model")
    cname = candidate_model if isinstance(candidate_model, str) else getattr(candidate_model, "name", "candidate_model")
    query = resolve_tower(model, query_model, QUERY_TOWERS, "query_model")
    candidate = resolve_tower(model, candidate_model, CANDIDATE_TOWERS, "candidate_model")
    keys = tuple(probe)
    given = {"query_features": query_features, "candidate_features": candidate_features}
    structs = {k: _structure(v, keys, k) for k, v in given.items() if v is not None}
    if len(structs) < 2:
        if not (is_layer(query) and is_layer(candidate)):
            raise ValueError("query_model/candidate_model are plain callables: pass query_features= and "
                             "candidate_features= (the feature name(s) each takes)")
        found = dict(zip(given, tower_inputs(model, query, candidate, probe)))
        structs = {k: structs.get(k, found[k]) for k in given}
    q_struct, c_struct = structs["query_features"], structs["candidate_features"]
    sides = []
    for tower, struct, label in ((query, q_struct, qname), (candidate, c_struct, cname)):
        side_keys = sorted(set(tf.nest.flatten(struct)), key=keys.index)
        sides.append(split_or_fallback(_tower_fn(tower, struct), root_layers(tower), probe, output=None,
                                        vector=True, name=label, space=space, input_keys=side_keys))
    return RetrievalAdapter(*sides)

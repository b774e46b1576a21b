"""Which variables the capture watches, and the readable paths it names them by."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from tfrs_diag._keras import tf


@dataclasses.dataclass(frozen=True)
class TrackedVariable:
    """Static facts about one variable the capture watches."""

    index: int
    name: str  # readable path, e.g. "user_model/embedding/embeddings"
    layer: str  # owning layer path, e.g. "user_model/embedding"
    shape: tuple[int, ...]
    sparse: bool  # gradient arrives as IndexedSlices
    sparse_index: int  # position among sparse variables, -1 for dense
    update_ratio: bool  # a previous-value copy is kept for ||dw||/||w||


def variable_names(model) -> dict[int, tuple[str, str]]:
    """Maps ``id(variable)`` to (readable variable path, owning layer path).

    Keras 2 variable names drop their parents ("embedding/embeddings:0"), which makes
    the two towers of a retrieval model hard to tell apart; layer paths do not.
    """
    names: dict[int, tuple[str, str]] = {}

    def visit(layer, prefix: str, seen: set[int]):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for v in getattr(layer, "_trainable_weights", []) + getattr(layer, "_non_trainable_weights", []):
            # Adapted lookups also track helper objects (VocabWeightHandler) here.
            if id(v) not in names and isinstance(getattr(v, "name", None), str):
                short = v.name.split(":")[0].split("/")[-1]
                names[id(v)] = (f"{prefix}/{short}" if prefix else short, prefix or short)
        children = []
        if hasattr(layer, "_flatten_layers"):
            children = list(layer._flatten_layers(include_self=False, recursive=False))
        for child in children:
            visit(child, f"{prefix}/{child.name}" if prefix else child.name, seen)

    visit(model, "", set())
    return names


def layer_paths(model) -> Iterator[tuple[str, tf.keras.layers.Layer]]:
    """Every sub-layer of ``model`` once, with its attribute path ("user_model/string_lookup")."""
    seen: set[int] = set()

    def attribute_names(layer) -> dict[int, str]:
        # Users know their towers by attribute ("user_model"), not by Keras name ("sequential").
        names: dict[int, str] = {}
        for key, value in vars(layer).items():
            if key.startswith("_self") or key == "_layers":
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value) \
                if isinstance(value, (list, tuple)) else [(None, value)]
            for sub, v in items:
                if isinstance(v, tf.keras.layers.Layer):
                    names.setdefault(id(v), key if sub is None else f"{key}[{sub!r}]")
        return names

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        yield prefix, layer
        names = attribute_names(layer)
        for child in layer._flatten_layers(include_self=False, recursive=False):
            name = names.get(id(child), child.name)
            yield from visit(child, f"{prefix}/{name}" if prefix else name)

    for path, layer in visit(model, ""):
        if path:
            yield path, layer


def unique_names(names: Sequence[str]) -> list[str]:
    """Suffixes repeated names: ["a", "a"] -> ["a", "a_2"]."""
    out, counts = [], {}
    for n in names:
        k = counts.get(n, 0)
        counts[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return out


def track(pairs, model, update_ratio_max_elements: int) -> list[TrackedVariable]:
    """The tracked variables of a step's (gradient, variable) pairs, in their order."""
    names = variable_names(model) if model is not None else {}
    raw, layers = [], []
    for g, v in pairs:
        full, layer = names.get(id(v), (None, None))
        if full is None:
            # Distributed variables: the model holds the container, pairs may hold it too.
            container = getattr(v, "_distributed_container", None)
            if callable(container):
                full, layer = names.get(id(container()), (None, None))
        if full is None:
            full = v.name.split(":")[0]
            layer = full.rsplit("/", 1)[0] if "/" in full else full
        raw.append(full)
        layers.append(layer)
    tracked, e = [], 0
    for i, ((g, v), name, layer) in enumerate(zip(pairs, unique_names(raw), layers)):
        sparse = isinstance(g, tf.IndexedSlices)
        size = int(np.prod(v.shape)) if v.shape.is_fully_defined() else 1 << 62
        tracked.append(TrackedVariable(i, name, layer, tuple(v.shape.as_list()), sparse, e if sparse else -1,
                                       sparse or size <= update_ratio_max_elements))
        e += sparse
    return tracked

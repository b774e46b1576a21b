"""Set-up checks that turn a model a diagnostic cannot work on into one clear error."""

from __future__ import annotations

from typing import Iterator

from tfrs_diag._keras import tf

# Preprocessing layers built on string or hash-table ops, which XLA cannot compile.
_NOT_XLA = ("StringLookup", "IntegerLookup", "TextVectorization", "Hashing", "HashedCrossing")


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


def check_xla_compatible(model, diagnostic: str) -> None:
    """Raises a ValueError naming the layer when ``jit_compile=True`` meets a lookup layer.

    The train step would fail anyway, deep inside XLA's "unsupported operations" error;
    this says which layer and what to do before the first step.
    """
    if not getattr(model, "_jit_compile", False):
        return
    bad = [(path, type(layer).__name__) for path, layer in layer_paths(model)
           if type(layer).__name__ in _NOT_XLA]
    if bad:
        listed = ", ".join(f"{path} ({kind})" for path, kind in bad)
        raise ValueError(
            f"{diagnostic}: the model is compiled with jit_compile=True but contains {listed}; XLA cannot "
            "compile string and hash-table lookups, so no training step can run. Move the lookups into the "
            "input pipeline (dataset.map(lambda x: {..., 'user_index': lookup(x['user_id'])})) and give the "
            "towers integer indices, or compile with jit_compile=False.")

"""Set-up checks that turn a model a diagnostic cannot work on into one clear error."""

from __future__ import annotations

from tfrs_diag.capture.variables import layer_paths

# Preprocessing layers built on string or hash-table ops, which XLA cannot compile.
_NOT_XLA = ("StringLookup", "IntegerLookup", "TextVectorization", "Hashing", "HashedCrossing")


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

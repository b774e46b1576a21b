"""The flat embedding view the explainers work in: every feature's embedding side by side.

`EmbeddingSpace` concatenates an adapter's per-feature embeddings into one row per
example, with each column's feature group, and back; `FeatureCodec` codes a feature dict
as a numeric matrix (each value's index among those seen) for model-agnostic tools such
as ``shap.KernelExplainer``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.explain.adapters import BASELINES, check_features, embedding_baseline, resolve_groups


class EmbeddingSpace:
    """Flat ``[n, D]`` embedding rows of an adapter, with each column's group.

    Concatenates the per-feature embeddings in ``adapter.feature_names`` order, so
    coalitions are column masks. ``col_group[j]`` is column j's group index, or
    ``num_groups`` for features in no group (kept at the example's value).
    """

    def __init__(self, adapter, groups=None):
        self.adapter = adapter
        self.groups = resolve_groups(adapter.feature_names, groups)
        self.group_names = tuple(self.groups)
        self._group_of = {f: i for i, feats in enumerate(self.groups.values()) for f in feats}
        self.slices: dict[str, tuple[int, int]] | None = None
        self.col_group: np.ndarray | None = None

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def _set_layout(self, emb: Mapping[str, tf.Tensor]) -> None:
        slices, start, cols = {}, 0, []
        for name in self.adapter.feature_names:
            e = emb[name]
            if e.shape.rank != 2:
                raise ValueError(f"feature {name!r} embeds to shape {e.shape}; explainers need [n, d] per feature")
            d = int(e.shape[-1])
            slices[name] = (start, start + d)
            cols += [self._group_of.get(name, self.num_groups)] * d
            start += d
        if self.slices is not None and slices != self.slices:
            raise ValueError(f"embedding widths changed: {slices} vs {self.slices}")
        self.slices = slices
        self.col_group = np.asarray(cols, dtype=np.int32)

    @property
    def dim(self) -> int:
        """Width D of the concatenated embedding row."""
        return int(self.col_group.shape[0])

    def embed(self, features: Mapping[str, Any], argument: str = "examples", batch_size: int = 8192) -> np.ndarray:
        """Validates ``features`` and returns their ``[n, D]`` float32 embedding rows."""
        arrays, n = check_features(self.adapter, features, argument)
        parts = []
        for lo in range(0, n, batch_size):
            chunk = {k: tf.constant(v[lo:lo + batch_size]) for k, v in arrays.items()}
            emb = self.adapter.embed(chunk)
            if self.col_group is None or self.slices is None:
                self._set_layout(emb)
            parts.append(tf.concat([tf.cast(tf.reshape(emb[f], [tf.shape(emb[f])[0], -1]), tf.float32)
                                    for f in self.adapter.feature_names], axis=1).numpy())
        return np.concatenate(parts, axis=0)

    def split(self, flat: tf.Tensor) -> dict[str, tf.Tensor]:
        """``[n, D]`` concatenated rows back into ``{feature: [n, d_feature]}``."""
        return {f: flat[:, a:b] for f, (a, b) in self.slices.items()}

    def head(self, flat: tf.Tensor) -> tf.Tensor:
        """The model's output ``[N]`` on flat embedding rows ``[N, D]``."""
        y = self.adapter.head(self.split(flat))
        y = tf.cast(y, tf.float32)
        if y.shape.rank == 2 and y.shape[-1] == 1:
            y = y[:, 0]
        return y

    def baseline_rows(self, kind: str, background: Mapping[str, Any] | None,
                      background_rows: np.ndarray | None = None) -> np.ndarray:
        """``[m, D]`` baseline rows in embedding space for ``kind`` in `BASELINES`.

        ``"background"``: the background rows themselves (values are averaged over them);
        ``"frequency"``: their mean (the frequency-weighted mean of each table's rows, with
        the background's id frequencies); ``"mean"``: the unweighted mean of each table's
        rows; ``"oov"``: each table's out-of-vocabulary row. ``background_rows``: the
        background already embedded (`embed`), to skip embedding it again.
        """
        if kind not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
        if kind in ("background", "frequency"):
            if background_rows is None:
                if background is None:
                    raise ValueError(f"baseline={kind!r} needs background rows: pass background=<feature dict>, "
                                     "or use baseline='mean' or 'oov'")
                background_rows = self.embed(background, argument="background")
            return background_rows if kind == "background" else background_rows.mean(axis=0, keepdims=True)
        row = np.concatenate([embedding_baseline(self.adapter, f, kind) for f in self.adapter.feature_names])
        return row[None, :].astype(np.float32)

    def linear_head(self):
        """The adapter's ``linear_head()`` (a leading Dense layer of the scorer), or None."""
        fn: Callable | None = getattr(self.adapter, "linear_head", None)
        return fn() if fn is not None else None


class FeatureCodec:
    """A feature dict as a numeric matrix and back, for model-agnostic tools (``shap.KernelExplainer``).

    Each column is coded as the index of its value among the values seen in ``frames``;
    `predict` decodes a code matrix into the model's feature dict and returns the model's
    outputs as float64 ``[N]``. This is the wrapper TFRS users write to run
    KernelExplainer on a feature-dict model; the benchmarks and tests compare with it.

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> codec = FeatureCodec(model, model.feature_names, background, examples)     # doctest: +SKIP
    >>> shap.KernelExplainer(codec.predict, codec.encode(background))              # doctest: +SKIP
    """

    def __init__(self, model, feature_names: Sequence[str], *frames: Mapping[str, Any]):
        self.model = model
        self.feature_names = tuple(feature_names)
        self.tables = {f: np.unique(np.concatenate([np.asarray(fr[f]) for fr in frames])) for f in self.feature_names}

    def encode(self, frame: Mapping[str, Any]) -> np.ndarray:
        """Feature dict -> float64 ``[n, features]`` code matrix (each value's index in its table)."""
        return np.stack([np.searchsorted(self.tables[f], np.asarray(frame[f])) for f in self.feature_names],
                        axis=1).astype(np.float64)

    def decode(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Code matrix -> the model's feature dict (the inverse of `encode`)."""
        codes = np.asarray(codes).astype(np.int64)
        return {f: self.tables[f][codes[:, j]] for j, f in enumerate(self.feature_names)}

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """The model's outputs for a code matrix, float64 ``[n]`` (what KernelExplainer calls)."""
        return np.asarray(self.model.predict_on_batch(self.decode(codes))).reshape(-1).astype(np.float64)

"""Adapters found by calling the model: the lookup -> embedding split, or the input-space fallback.

Users write TFRS models the tutorials' way: towers (`tf.keras.Sequential` or sub-models)
of `StringLookup`/`IntegerLookup`/`Hashing`/`Discretization`/`TextVectorization` and
`Embedding` layers, each fed by one input feature, whose outputs a head combines. They
have no ``embed()``/``score()`` methods. `discover` finds the split by itself:

1. It calls the model once on a few rows (``model(features, training=False)``) with the
   ``call`` of every sub-layer temporarily wrapped on the instance, and records which
   layer receives which raw input feature. A layer that receives one raw feature (or a
   non-float tensor derived from one, such as a lookup's ids) and returns a float tensor
   is that feature's *embedder*; only the outermost one counts (the `Sequential` tower,
   not the `Embedding` inside it). A layer called several times (a shared table) is told
   apart by the order of its calls.
2. Features the model reads outside every embedder are found by shuffling them across
   the rows: float features read directly (e.g. a normalised number concatenated into the
   head) become their own "embedding"; unused ones (the label, extra columns) are left
   out; a string or integer feature read by plain TensorFlow ops in ``call`` (a feature
   cross, a hash computed in ``call``) means the model cannot be split.
3. The split is checked: the model run with the embedders' outputs replaced by the
   recorded embeddings must reproduce its output.

`AutoAdapter.embed` runs the model and captures the embedders' outputs;
`AutoAdapter.head` runs the model with those outputs replaced by the given embeddings
(the lookups are skipped). Both are the `tfrs_diag.explain.adapters.FeatureAdapter`
protocol, so every explainer works on them unchanged.

When no split is found, `InputSpaceAdapter` is the fallback: each feature's "embedding"
is the index of its raw value in a table of the values seen, and ``head`` decodes the
indices and calls the model as it is. Coalitions then swap whole feature values of the
explained row with background rows (the same interventional Shapley values, at the cost
of calling the whole model for every coalition). Integrated gradients needs gradients
through embeddings and refuses such adapters.

The call interception is `tfrs_diag.explain.recording`'s; retrieval models are split
tower by tower (`tfrs_diag.explain.towers`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.explain.recording import Counting, Recording, Site, intercept, layers_of, same_values

#: Rows of the example features used to find the split (the model is called on them a few times).
PROBE_ROWS = 32

#: ``space=`` values of the explainers.
SPACES = ("auto", "embedding", "input")


class NeedsRows(ValueError):
    """The model has to be called on feature rows to be split, and none were given."""


# ---------------------------------------------------------------- the model as a function of feature dicts


def scores(y, output=None, *, vector: bool = False, who: str = "the model"):
    """``y`` (a model's output) as ``[n]`` scores (``[n, k]`` vectors when ``vector``), after ``output``.

    ``output``: an index or key into a tuple/dict output, or a callable mapping the output
    to what is explained (e.g. ``lambda y: y[:, 0, 0]``: a listwise model's first item).
    """
    if output is not None:
        y = output(y) if callable(output) else y[output]
    if isinstance(y, (tuple, list, Mapping)):
        what = f"a dict with keys {sorted(y)}" if isinstance(y, Mapping) else f"a {type(y).__name__} of {len(y)}"
        raise ValueError(f"{who} returns {what}; pass output=<index, key or callable> picking the score to "
                         "explain (for a retrieval score pass query_model= and candidate_model=)")
    y = tf.convert_to_tensor(y)
    if vector:
        if y.shape.rank != 2:
            raise ValueError(f"{who} returns shape {y.shape}; a retrieval tower must return [n, k] vectors")
        return y
    if y.shape.rank == 2 and y.shape[-1] == 1:
        y = y[:, 0]
    if y.shape.rank != 1:
        raise ValueError(f"{who} returns shape {y.shape}; the explainers explain one score per row: pass "
                         "output=<callable> mapping the output to [n] (e.g. output=lambda y: y[:, 0, 0] for the "
                         "first item of a list)")
    return y


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max()))))


def _numpy(v) -> np.ndarray:
    v = v.numpy() if isinstance(v, (tf.Tensor, tf.Variable)) else np.asarray(v)
    return v.reshape(1) if v.ndim == 0 else v


def _kind(values: np.ndarray) -> str:
    k = values.dtype.kind
    return "string" if k in "USO" else "int" if k in "iu" else "float" if k == "f" else k


def probe_rows(features: Mapping[str, Any], argument: str = "background", rows: int = PROBE_ROWS) -> dict:
    """A copy of the first ``rows`` rows of ``features`` as numpy arrays (the user's dict is not touched)."""
    if not isinstance(features, Mapping) or not features:
        raise TypeError(f"{argument} must be a non-empty feature dict {{name: array}}, got {type(features).__name__}")
    arrays = {str(k): _numpy(v) for k, v in features.items()}
    lengths = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{argument}: features have different numbers of rows: {lengths}")
    return {k: v[:rows] for k, v in arrays.items()}


def _tile(template: np.ndarray, n):
    return tf.repeat(tf.constant(template), n, axis=0)


def input_keys(model, keys: Sequence[str]) -> tuple[str, ...]:
    """The keys the model is fed: all of ``keys`` except what a functional model has no input for."""
    names = getattr(model, "input_names", None) if getattr(model, "_is_graph_network", False) else None
    return tuple(k for k in keys if names is None or k in names)


class AutoAdapter:
    """A model split into embedders found by `discover` and the rest of the model.

    Attributes:
      feature_names: the features attributed (those the model uses), in the rows' order.
      sites: the embedder calls (`Site`), in call order; a feature's embedding is the
        concatenation of its sites' flattened outputs.
      identity: float features read directly; their values are their own embedding.
      embedders: ``{feature: layer}`` where one layer ending in an `Embedding` embeds the
        feature (for the ``"mean"``/``"oov"`` baselines and dtype checks).
      space: ``"embedding"``.
    """

    space = "embedding"
    differentiable = True

    def __init__(self, fn: Callable, sites: Sequence[Site], identity: Sequence[str], feature_names: Sequence[str],
                 template: Mapping[str, np.ndarray], input_keys: Sequence[str], output=None, vector: bool = False,
                 name: str = "the model"):
        from tfrs_diag.explain.adapters import embedding_layer, _sublayers

        self.fn, self.sites, self.output, self.vector, self.name = fn, list(sites), output, vector, name
        self.identity = tuple(identity)
        self.feature_names = tuple(feature_names)
        self.template = {k: np.asarray(v[:1]) for k, v in template.items()}
        self.input_keys = tuple(input_keys)
        self.feature_kinds = {k: _kind(v) for k, v in template.items()}
        self._dtypes = {k: tf.as_dtype(tf.constant(v).dtype) for k, v in self.template.items()}
        self.layers = []
        for s in self.sites:
            if all(s.layer is not x for x in self.layers):
                self.layers.append(s.layer)
        self.embedders = {}
        for f in self.feature_names:
            own = [s for s in self.sites if s.feature == f]
            if len(own) == 1:
                table = embedding_layer(own[0].layer)
                if table is not None and _sublayers(own[0].layer)[-1] is table:
                    self.embedders[f] = own[0].layer

    def describe(self) -> str:
        parts = [f"{f} <- {', '.join(s.layer.name for s in self.sites if s.feature == f) or 'itself'}"
                 for f in self.feature_names]
        return f"{self.name} split into embedders: " + "; ".join(parts)

    def _feed(self, given: Mapping[str, Any], n) -> dict:
        feats = {}
        for k in self.input_keys:
            if k in given:
                v = given[k]
                feats[k] = v if isinstance(v, tf.Tensor) else tf.constant(v)
            else:
                feats[k] = _tile(self.template[k], n)
        return feats

    def embed(self, features):
        given = {k: features[k] for k in self.feature_names}
        n = tf.shape(next(iter(given.values())))[0]
        counting = Counting(self.sites)
        with intercept(self.layers, counting.handler):
            self.fn(self._feed(given, n))
        missing = [s for s in self.sites if s.key not in counting.captured]
        if missing:
            raise RuntimeError(f"{self.name}: embedder {missing[0]!r} was not called on these rows; the model's "
                               "structure depends on its inputs; give it embed()/score() methods")
        out = {}
        for f in self.feature_names:
            if f in self.identity:
                x = tf.convert_to_tensor(given[f])
                out[f] = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
            else:
                out[f] = tf.concat([tf.reshape(tf.cast(counting.captured[s.key], tf.float32), [n, s.width])
                                    for s in self.sites if s.feature == f], axis=1)
        return out

    def head(self, embeddings):
        n = tf.shape(next(iter(embeddings.values())))[0]
        given, replacements = {}, {}
        for f in self.identity:
            shape = self.template[f].shape[1:]
            given[f] = tf.cast(tf.reshape(embeddings[f], [-1, *shape]), self._dtypes[f])
        for f in self.feature_names:
            start = 0
            for s in self.sites:
                if s.feature != f:
                    continue
                part = embeddings[f][:, start:start + s.width]
                replacements[s.key] = tf.cast(tf.reshape(part, [-1, *s.shape]), s.dtype)
                start += s.width
        counting = Counting(self.sites, replacements)
        with intercept(self.layers, counting.handler):
            y = self.fn(self._feed(given, n))
        return scores(y, self.output, vector=self.vector, who=self.name)


class InputSpaceAdapter:
    """The fallback: each feature's "embedding" is the index of its raw value; ``head`` calls the model.

    Values are kept in per-feature tables (`tf.Variable`s that grow as new values are
    embedded, so traced functions see them). Coalitions of 0/1 masks mix indices exactly,
    so a coalition's value is the model's output on rows whose features are swapped whole
    between the example and a background row. Costs one model call per coalition row.

    Attributes:
      reason: why the model could not be split (None when input space was asked for).
      space: ``"input"``; ``differentiable``: False (no integrated gradients).
    """

    space = "input"
    differentiable = False

    def __init__(self, fn: Callable, feature_names: Sequence[str], template: Mapping[str, np.ndarray],
                 input_keys: Sequence[str], output=None, vector: bool = False, name: str = "the model",
                 reason: str | None = None):
        self.fn, self.output, self.vector, self.name, self.reason = fn, output, vector, name, reason
        self.feature_names = tuple(feature_names)
        self.template = {k: np.asarray(v[:1]) for k, v in template.items()}
        self.input_keys = tuple(input_keys)
        self.feature_kinds = {k: _kind(v) for k, v in template.items()}
        self.embedders: dict = {}
        self._index: dict[str, dict] = {f: {} for f in self.feature_names}
        self._values: dict[str, list] = {f: [] for f in self.feature_names}
        self._tables: dict[str, tf.Variable] = {}

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name} explained in input space{why}"

    @staticmethod
    def _key(row: np.ndarray):
        if not isinstance(row, np.ndarray):  # an element of a 1-D array (bytes, str, number)
            return row
        return row.item() if row.ndim == 0 else (row.shape, tuple(row.ravel().tolist()))

    def _codes(self, name: str, values: np.ndarray) -> np.ndarray:
        index, stored = self._index[name], self._values[name]
        codes = np.empty(values.shape[0], np.float32)
        grew = False
        for i, row in enumerate(values):
            key = self._key(row)
            code = index.get(key)
            if code is None:
                code = index[key] = len(stored)
                stored.append(row)
                grew = True
            codes[i] = code
        if len(stored) >= 1 << 24:
            raise ValueError(f"feature {name!r} has more than 2^24 distinct values; input-space codes are float32")
        if grew:
            table = np.stack(stored)
            var = self._tables.get(name)
            if var is None:
                self._tables[name] = tf.Variable(table, trainable=False,
                                                 shape=tf.TensorShape([None, *table.shape[1:]]))
            else:
                var.assign(table)
        return codes

    def embed(self, features):
        return {f: tf.constant(self._codes(f, _numpy(features[f]))[:, None]) for f in self.feature_names}

    def head(self, embeddings):
        n = tf.shape(next(iter(embeddings.values())))[0]
        feats = {}
        for k in self.input_keys:
            if k in self._tables:
                feats[k] = tf.gather(self._tables[k], tf.cast(tf.round(embeddings[k][:, 0]), tf.int32))
            else:
                feats[k] = _tile(self.template[k], n)
        return scores(self.fn(feats), self.output, vector=self.vector, who=self.name)


# ---------------------------------------------------------------- finding the split


def _used_features(fn, raw: Mapping[str, tf.Tensor], y: np.ndarray, keys: Sequence[str], output, vector, name):
    """The keys among ``keys`` whose values, shuffled across the rows, change the output."""
    used = []
    n = next(iter(raw.values())).shape[0]
    shift = np.roll(np.arange(n), 1)
    for k in keys:
        moved = dict(raw)
        moved[k] = tf.gather(raw[k], shift)
        if same_values(moved[k], raw[k]):
            continue  # the same value in every row: nothing to learn from these rows
        y2 = scores(fn(moved), output, vector=vector, who=name).numpy()
        if not _close(y2, y):
            used.append(k)
    return used


def discover(fn: Callable, layers: Sequence, probe: Mapping[str, np.ndarray], *, output=None, vector: bool = False,
             name: str = "the model", input_keys: Sequence[str] | None = None):
    """Finds the embedders of ``fn`` (a function of feature dicts calling ``layers``) on ``probe`` rows.

    Returns ``(adapter, None, used)`` when the split reproduces the model, else
    ``(None, reason, used)``; ``used`` lists the features the model's output depends on
    (for the input-space fallback). The model's own errors on the rows raise a TypeError.
    """
    keys = tuple(input_keys if input_keys is not None else probe)
    raw = {k: tf.constant(probe[k]) for k in keys}
    recording = Recording(raw)
    with intercept(layers, recording.handler):
        y = scores(_call_on_rows(fn, raw, name), output, vector=vector, who=name).numpy()
    sites = recording.sites()
    embedded = [k for k in keys if any(s.feature == k for s in sites)]
    others = _used_features(fn, raw, y, [k for k in keys if k not in embedded], output, vector, name)
    used = [k for k in keys if k in embedded or k in others]
    if not used:
        return None, "its output does not change with any feature of the rows", used
    hidden = [k for k in others if raw[k].dtype.is_floating is False]
    if hidden:
        return None, (f"it reads feature(s) {hidden} outside any layer mapping one feature to a float vector "
                      "(e.g. with TensorFlow ops in call)"), used
    if not sites:
        return None, "no layer maps one input feature to a float vector", used
    adapter = AutoAdapter(fn, sites, [k for k in others], used, probe, keys, output, vector, name)
    try:
        rebuilt = adapter.head(adapter.embed(raw)).numpy()
    except Exception as e:  # noqa: BLE001 - any failure means the split does not hold
        return None, f"running it with the embedders' outputs replaced failed ({type(e).__name__}: {e})", used
    if not _close(rebuilt, y):
        return None, ("running it with the embedders' outputs replaced does not reproduce its output "
                      f"(max difference {np.abs(rebuilt - y).max():.3g}): it reads the raw features elsewhere too"), used
    return adapter, None, used


def _call_on_rows(fn, raw, name):
    """``fn(copy of raw)``; the model's own errors become a TypeError saying what the explainers call."""
    try:
        return fn(dict(raw))
    except Exception as e:  # noqa: BLE001 - any error of the user's model, re-raised with the fix
        raise TypeError(f"calling {name} on the background rows failed ({type(e).__name__}: {e}); the explainers "
                        "call model(features) with the rows' feature dict {name: array}: give the model "
                        "embed(features) and score(embeddings) methods, or pass a FeatureAdapter") from e


def split_or_fallback(fn, layers, probe, *, output, vector, name, space, input_keys=None):
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    keys = tuple(input_keys if input_keys is not None else probe)
    if space != "input" and layers:
        adapter, reason, used = discover(fn, layers_of(*layers), probe, output=output, vector=vector, name=name, input_keys=keys)
        if adapter is not None:
            return adapter
    else:
        raw = {k: tf.constant(probe[k]) for k in keys}
        y = scores(_call_on_rows(fn, raw, name), output, vector=vector, who=name).numpy()
        used = _used_features(fn, raw, y, keys, output, vector, name)
        reason = None if space == "input" else f"{name} is a function, not a Keras model: there are no layers to split"
    if space == "embedding":
        raise ValueError(f"space='embedding': cannot split {name} into lookups and a head: {reason}. Give it "
                         "embed(features) and score(embeddings) methods, or use space='auto' to explain it in "
                         "input space")
    if not used:
        raise ValueError(f"{name}'s output does not change when any feature of the background rows is shuffled "
                         f"across them (features {list(keys)}); pass background rows that differ")
    if reason is not None and layers:  # a plain function is expected to be explained in input space
        warnings.warn(f"tfrs_diag.explain: cannot split {name} into lookups and a head ({reason}); explaining it "
                      "in input space instead: coalitions swap raw feature values and call the whole model "
                      "(integrated gradients is not available)", stacklevel=4)
    return InputSpaceAdapter(fn, used, probe, keys, output, vector, name, reason)

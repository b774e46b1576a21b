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

Retrieval: `find_towers` finds the query and candidate towers of the tutorials' models
(``user_model``/``movie_model``, ``query_model``/``candidate_model``,
``_query_model``/``_candidate_model``) and `tower_inputs` which features each takes (by
watching ``compute_loss`` call them, stopped before the task runs).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.evaluation import CANDIDATE_TOWERS, QUERY_TOWERS, resolve_tower

#: Rows of the example features used to find the split (the model is called on them a few times).
PROBE_ROWS = 32

#: ``space=`` values of the explainers.
SPACES = ("auto", "embedding", "input")


class NeedsRows(ValueError):
    """The model has to be called on feature rows to be split, and none were given."""


class _Stop(Exception):
    """Raised by a wrapped tower once both towers' inputs are known (stops compute_loss early)."""


def _is_layer(obj) -> bool:
    return isinstance(obj, tf.keras.layers.Layer)


def layers_of(*roots) -> list:
    """Every layer under ``roots`` (roots included), each once, metrics excluded."""
    out, seen = [], set()
    for root in roots:
        if not _is_layer(root):
            continue
        for layer in root._flatten_layers(include_self=True, recursive=True):
            if id(layer) in seen or isinstance(layer, tf.keras.metrics.Metric):
                continue
            seen.add(id(layer))
            out.append(layer)
    return out


@contextlib.contextmanager
def _intercept(layers: Sequence, handler: Callable):
    """Temporarily routes ``layer.call`` of each layer through ``handler(layer, call, args, kwargs)``.

    The wrapper is set on the instance (Keras looks ``self.call`` up on every
    ``__call__``) and removed on exit, whatever happens; the class is never touched.
    """
    installed = []
    try:
        for layer in layers:
            had = "call" in layer.__dict__
            previous = layer.__dict__.get("call")
            original = layer.call

            def wrapper(*args, _layer=layer, _original=original, **kwargs):
                fn = _original
                if not tf.executing_eagerly() and getattr(_layer, "_should_use_autograph", lambda: False)():
                    fn = tf.__internal__.autograph.tf_convert(_original,
                                                              tf.__internal__.autograph.control_status_ctx())
                return handler(_layer, fn, args, kwargs)

            object.__setattr__(layer, "call", tf.autograph.experimental.do_not_convert(wrapper))
            installed.append((layer, had, previous))
        yield
    finally:
        for layer, had, previous in reversed(installed):
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")


def _first_input(args, kwargs):
    return args[0] if args else kwargs.get("inputs")


def _other_tensors(args, kwargs) -> bool:
    rest = [args[1:], {k: v for k, v in kwargs.items() if k not in ("inputs", "training", "mask")}]
    return any(isinstance(x, (tf.Tensor, tf.Variable)) for x in tf.nest.flatten(rest))


def _same_values(a: tf.Tensor, b: tf.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(tf.reduce_all(tf.equal(a, b)))


def _match_feature(x, raw: Mapping[str, tf.Tensor], ids: Mapping[int, str]) -> str | None:
    """The raw feature ``x`` is (by identity, else by value when exactly one feature matches)."""
    if not isinstance(x, tf.Tensor):
        return None
    name = ids.get(id(x))
    if name is not None:
        return name
    matches = [n for n, t in raw.items() if _same_values(t, x)]
    return matches[0] if len(matches) == 1 else None


class _Node:
    __slots__ = ("layer", "source", "children", "out")

    def __init__(self, layer, source):
        self.layer, self.source, self.children, self.out = layer, source, [], None


class _Recording:
    """The call tree of one model call, with which raw feature reaches which layer."""

    def __init__(self, raw: Mapping[str, tf.Tensor]):
        self.raw = dict(raw)
        self.ids = {id(t): n for n, t in raw.items()}
        self.keep: list = []  # derived tensors stay alive so their ids stay unique
        self.root = _Node(None, None)
        self.stack = [self.root]

    def handler(self, layer, call, args, kwargs):
        source = None if _other_tensors(args, kwargs) else _match_feature(_first_input(args, kwargs), self.raw,
                                                                           self.ids)
        node = _Node(layer, source)
        self.stack[-1].children.append(node)
        self.stack.append(node)
        try:
            out = call(*args, **kwargs)
        finally:
            self.stack.pop()
        if source is not None and isinstance(out, tf.Tensor):
            if out.dtype.is_floating:
                node.out = out  # embedder of `source`
            else:  # ids, tokens, buckets: still one feature's
                self.ids[id(out)] = source
                self.keep.append(out)
        return out

    def sites(self) -> list["Site"]:
        """Outermost embedders in call order, each with its layer's call count (pre-order)."""
        counts: dict[int, int] = {}
        sites: list[Site] = []

        def walk(node):
            for child in node.children:
                k = counts.get(id(child.layer), 0)
                counts[id(child.layer)] = k + 1
                if child.out is not None:
                    if child.out.shape.rank is None or child.out.shape.rank < 1:
                        continue
                    sites.append(Site(child.layer, k, child.source, tuple(child.out.shape[1:]), child.out.dtype))
                else:
                    walk(child)

        walk(self.root)
        return sites


class Site:
    """One embedder call: ``layer``'s ``occurrence``-th call in a model call maps ``feature``
    to an output of shape ``[n, *shape]`` and ``dtype``."""

    def __init__(self, layer, occurrence: int, feature: str, shape: tuple, dtype):
        self.layer, self.occurrence, self.feature, self.shape, self.dtype = layer, occurrence, feature, shape, dtype
        self.width = int(np.prod(shape)) if shape else 1

    @property
    def key(self) -> tuple[int, int]:
        return id(self.layer), self.occurrence

    def __repr__(self) -> str:
        return f"Site({self.layer.name!r}#{self.occurrence} <- {self.feature!r}, {list(self.shape)})"


class _Counting:
    """Counts calls of the embedder layers outside embedder calls, as `_Recording.sites` does."""

    def __init__(self, sites: Sequence[Site], replacements=None):
        self.by_key = {s.key: s for s in sites}
        self.replacements = replacements
        self.counts: dict[int, int] = {}
        self.depth = 0
        self.captured: dict[tuple[int, int], tf.Tensor] = {}

    def handler(self, layer, call, args, kwargs):
        if self.depth:
            return call(*args, **kwargs)
        k = self.counts.get(id(layer), 0)
        self.counts[id(layer)] = k + 1
        site = self.by_key.get((id(layer), k))
        if site is None:
            return call(*args, **kwargs)
        if self.replacements is not None:
            return self.replacements[site.key]
        self.depth += 1
        try:
            out = call(*args, **kwargs)
        finally:
            self.depth -= 1
        self.captured[site.key] = out
        return out


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


def _input_keys(model, keys: Sequence[str]) -> tuple[str, ...]:
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
        counting = _Counting(self.sites)
        with _intercept(self.layers, counting.handler):
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
        counting = _Counting(self.sites, replacements)
        with _intercept(self.layers, counting.handler):
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
        if _same_values(moved[k], raw[k]):
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
    recording = _Recording(raw)
    with _intercept(layers, recording.handler):
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


def _call_fn(model) -> Callable:
    if _is_layer(model):
        return lambda feats: model(feats, training=False)
    return lambda feats: model(feats)


def _root_layers(obj) -> list:
    if _is_layer(obj):
        return [obj]
    owner = getattr(obj, "__self__", None)  # a bound method of a model
    return [owner] if _is_layer(owner) else []


def _split_or_fallback(fn, layers, probe, *, output, vector, name, space, input_keys=None):
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


# ---------------------------------------------------------------- retrieval towers


def _own_call(model) -> bool:
    return _is_layer(model) and type(model).call is not tf.keras.Model.call


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
            seen[role] = _first_input(args, kwargs)
            if len(seen) == 2:
                raise _Stop
        return call(*args, **kwargs)

    errors = []
    attempts = [getattr(model, "compute_loss", None)]
    if _own_call(model):
        attempts.append(lambda feats, training=False: model(feats, training=training))
    for attempt in attempts:
        if attempt is None or len(seen) == 2:
            continue
        seen.clear()
        with _intercept([t for t in (query, candidate) if _is_layer(t)], handler):
            try:
                attempt(dict(raw), training=False)
            except _Stop:
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
            name = _match_feature(t, raw, ids)
            if name is None:
                raise ValueError(f"{role}'s input is computed inside {type(model).__name__}, not a feature of the "
                                 f"rows; pass {role.replace('_model', '_features')}=<feature name or names>")
            return name
        out[role] = tf.nest.map_structure(name_of, inputs)
    return out["query_model"], out["candidate_model"]


def _tower_fn(tower, structure) -> Callable:
    call = _call_fn(tower)
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
        if not (_is_layer(query) and _is_layer(candidate)):
            raise ValueError("query_model/candidate_model are plain callables: pass query_features= and "
                             "candidate_features= (the feature name(s) each takes)")
        found = dict(zip(given, tower_inputs(model, query, candidate, probe)))
        structs = {k: structs.get(k, found[k]) for k in given}
    q_struct, c_struct = structs["query_features"], structs["candidate_features"]
    sides = []
    for tower, struct, label in ((query, q_struct, qname), (candidate, c_struct, cname)):
        side_keys = sorted(set(tf.nest.flatten(struct)), key=keys.index)
        sides.append(_split_or_fallback(_tower_fn(tower, struct), _root_layers(tower), probe, output=None,
                                        vector=True, name=label, space=space, input_keys=side_keys))
    return RetrievalAdapter(*sides)


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
        not _own_call(model) and find_towers(model) is not None)
    if retrieval:
        if output is not None:
            raise ValueError("output= picks a model output to explain; a retrieval score (query_model=/"
                             "candidate_model=) needs none")
        return retrieval_adapter(model, probe, query_model=query_model, candidate_model=candidate_model,
                                 query_features=query_features, candidate_features=candidate_features, space=space)
    if not callable(model):
        raise TypeError(f"cannot explain a {type(model).__name__}: pass a Keras model, a score function of feature "
                        "dicts, or a FeatureAdapter")
    if _is_layer(model) and not _own_call(model):
        raise TypeError(f"{type(model).__name__} has no call() and no query/candidate towers among "
                        f"{list(QUERY_TOWERS[:3] + CANDIDATE_TOWERS[:3])}: give it embed(features) and score(embeddings) "
                        "methods, pass query_model=/candidate_model= for a retrieval score, or pass a score function")
    name = type(model).__name__ if _is_layer(model) else getattr(model, "__name__", "the score function")
    fn = _call_fn(model)
    keys = _input_keys(model, tuple(probe))
    return _split_or_fallback(fn, _root_layers(model), probe, output=output, vector=False, name=name, space=space,
                              input_keys=keys)

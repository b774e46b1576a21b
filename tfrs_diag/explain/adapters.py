"""Feature adapters: a model split into per-feature embedding lookups and the head after them.

Every explainer in `tfrs_diag.explain` works in embedding space: it looks each
feature up once, then forms coalitions, paths or shuffles of the embedding vectors and
runs only the part of the model after the lookups. An adapter says how to do that split.

The protocol (`FeatureAdapter`):

- ``feature_names``: the input keys the model reads;
- ``embed(features) -> {name: [n, d] tensor}``: the lookups;
- ``head(embeddings) -> [n] tensor``: everything after them;
- optionally ``embedders`` (``{name: layer}``) so baselines "oov"/"mean" and input
  dtype checks can find each feature's lookup and `Embedding` table, and
  ``linear_head()`` returning ``(kernel, bias, activation, rest)`` when the head begins
  with a `Dense` layer over the concatenated embeddings (exact Shapley then forms
  coalitions after that layer's per-feature products, which is much cheaper).

Provided adapters:

- `RankingAdapter`: a model with ``embed(features)`` and ``score(embeddings)`` methods
  (`tfrs_diag.models.RankingModel`, or your own model written that way);
- `TowerAdapter`: one tower that is a `tf.keras.Sequential` of lookup -> `Embedding` ->
  more layers, split after its last `Embedding`, outputting a vector;
- `RetrievalAdapter`: ``score = dot(query_tower(x), candidate_tower(item))`` from two
  adapters, attributing query-side and candidate-side features
  (`RetrievalAdapter.from_two_tower` for `tfrs_diag.models.TwoTowerModel`).

- `tfrs_diag.explain.discovery.AutoAdapter`: any other feature-dict model, split by
  calling it on a few rows and recording which sub-layer maps which raw feature to its
  embedding (the TFRS tutorials' towers); `tfrs_diag.explain.discovery.InputSpaceAdapter`
  when no such split holds (raw values swapped, the whole model called).

`as_adapter(model, background)` picks one of these for a model, or passes an adapter through.

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> from tfrs_diag import datasets, models                                    # doctest: +SKIP
>>> data = datasets.synthetic(num_users=50, num_items=80, num_interactions=500)  # doctest: +SKIP
>>> adapter = as_adapter(models.RankingModel(data.train))                     # doctest: +SKIP
>>> adapter.feature_names                                                      # doctest: +SKIP
('user_id', 'item_id', 'user_gender', 'user_age_bucket', 'item_category')
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from tfrs_diag._keras import tf

#: Baselines in embedding space (see `embedding_baseline`).
BASELINES = ("background", "frequency", "mean", "oov")


@runtime_checkable
class FeatureAdapter(Protocol):
    """A model split into per-feature embedding lookups (`embed`) and the part after them (`head`)."""

    feature_names: tuple[str, ...]

    def embed(self, features: Mapping[str, Any]) -> Mapping[str, tf.Tensor]: ...

    def head(self, embeddings: Mapping[str, tf.Tensor]) -> tf.Tensor: ...


# ---------------------------------------------------------------- lookups and tables


def _sublayers(layer) -> list:
    return list(layer.layers) if isinstance(layer, tf.keras.Sequential) else [layer]


def lookup_layer(embedder):
    """The `StringLookup`/`IntegerLookup` inside ``embedder`` (a layer or Sequential), or None."""
    for layer in _sublayers(embedder):
        if isinstance(layer, (tf.keras.layers.StringLookup, tf.keras.layers.IntegerLookup)):
            return layer
    return None


def embedding_layer(embedder):
    """The last `Embedding` inside ``embedder``, or None."""
    found = None
    for layer in _sublayers(embedder):
        if isinstance(layer, tf.keras.layers.Embedding):
            found = layer
    return found


def expected_kind(embedder) -> str | None:
    """``"string"`` or ``"int"``: the input dtype kind ``embedder`` takes (None: unknown)."""
    if embedder is None:
        return None
    lookup = lookup_layer(embedder)
    if isinstance(lookup, tf.keras.layers.StringLookup):
        return "string"
    if isinstance(lookup, tf.keras.layers.IntegerLookup):
        return "int"
    first = _sublayers(embedder)[0]
    if isinstance(first, tf.keras.layers.Embedding):
        return "int"
    return None


def _kind_of(values: np.ndarray) -> str:
    if values.dtype.kind in "USO":
        return "string"
    if values.dtype.kind in "iu":
        return "int"
    if values.dtype.kind == "f":
        return "float"
    return values.dtype.kind


def check_features(adapter, features: Mapping[str, Any], argument: str) -> tuple[dict[str, np.ndarray], int]:
    """Validates a feature dict for ``adapter``: every feature present, equal rows, right dtype.

    Returns ``(arrays, n)``. Errors name the feature and the argument.
    """
    if not isinstance(features, Mapping):
        raise TypeError(f"{argument} must be a feature dict {{name: array}}, got {type(features).__name__}")
    embedders = getattr(adapter, "embedders", {}) or {}
    arrays: dict[str, np.ndarray] = {}
    n = None
    for name in adapter.feature_names:
        if name not in features:
            raise ValueError(f"{argument} has no feature {name!r}, which the model takes; "
                             f"it has {sorted(features)}; add a {name!r} column")
        v = features[name]
        v = v.numpy() if isinstance(v, tf.Tensor) else np.asarray(v)
        if v.ndim == 0:
            v = v.reshape(1)
        kind = expected_kind(embedders.get(name)) or (getattr(adapter, "feature_kinds", None) or {}).get(name)
        if kind is not None and _kind_of(v) != kind:
            takes, give = {"string": ("string ids (StringLookup)", "strings"), "int": ("integer ids", "integers"),
                           "float": ("float values", "floats")}.get(kind, (f"dtype kind {kind!r}", "those"))
            raise ValueError(f"{argument}[{name!r}] has dtype {v.dtype} but feature {name!r} takes {takes}; "
                             f"pass {give}")
        if n is None:
            n = v.shape[0]
        elif v.shape[0] != n:
            raise ValueError(f"{argument}[{name!r}] has {v.shape[0]} rows, other features have {n}")
        arrays[name] = v
    if not n:
        raise ValueError(f"{argument} has no rows")
    return arrays, int(n)


def embedding_baseline(adapter, name: str, kind: str) -> np.ndarray:
    """The ``[d]`` baseline embedding of feature ``name``: ``"oov"`` row or table ``"mean"``.

    Needs the adapter's ``embedders`` to hold a layer ending in an `Embedding` (with a
    `StringLookup`/`IntegerLookup` with an OOV index for ``"oov"``).
    """
    embedder = (getattr(adapter, "embedders", {}) or {}).get(name)
    table_layer = embedding_layer(embedder) if embedder is not None else None
    if table_layer is None or _sublayers(embedder)[-1] is not table_layer:
        raise ValueError(f"baseline={kind!r} needs feature {name!r} to be embedded by a layer ending in an "
                         "Embedding; use baseline='background' or 'frequency' (from background rows) instead")
    table = table_layer.embeddings.numpy()
    if kind == "mean":
        return table.mean(axis=0)
    lookup = lookup_layer(embedder)
    if lookup is None or getattr(lookup, "num_oov_indices", 0) < 1:
        raise ValueError(f"baseline='oov' needs feature {name!r} to go through a StringLookup/IntegerLookup "
                         "with num_oov_indices >= 1; use baseline='mean' or 'frequency' instead")
    oov_index = 1 if lookup.mask_token is not None else 0
    return table[oov_index]


# ---------------------------------------------------------------- adapters


class RankingAdapter:
    """Adapter for a model with ``embed(features) -> {name: [n, d]}`` and ``score(embeddings)``.

    `tfrs_diag.models.RankingModel` is such a model. When the model has a ``scorer``
    `tf.keras.Sequential` starting with `Dense` and ``score`` is
    ``scorer(concat(embeddings in feature_names order))`` (``linear_scorer=True``, the
    default when a ``scorer`` attribute exists), `linear_head` lets exact Shapley form
    coalitions after that first layer.

    Args:
      model: the model.
      feature_names: input keys (default: ``model.feature_names``).
      embedders: ``{name: layer}`` for baselines and dtype checks (default: ``model.embedders``).
    """

    def __init__(self, model, feature_names: Sequence[str] | None = None,
                 embedders: Mapping[str, Any] | None = None, linear_scorer: bool | None = None):
        if not (callable(getattr(model, "embed", None)) and callable(getattr(model, "score", None))):
            raise TypeError(f"{type(model).__name__} has no embed()/score() methods; wrap it in a FeatureAdapter "
                            "(see tfrs_diag.explain.adapters)")
        names = feature_names if feature_names is not None else getattr(model, "feature_names", None)
        if not names:
            raise ValueError("feature_names: the model has no feature_names attribute; pass the input keys")
        self.model = model
        self.feature_names = tuple(names)
        self.embedders = dict(embedders if embedders is not None else getattr(model, "embedders", {}) or {})
        scorer = getattr(model, "scorer", None)
        self._scorer = scorer if (linear_scorer if linear_scorer is not None else scorer is not None) else None

    def embed(self, features):
        emb = self.model.embed(features)
        return {n: emb[n] for n in self.feature_names}

    def head(self, embeddings):
        return self.model.score(embeddings)

    def linear_head(self):
        """``(kernel [D, H], bias [H], activation, rest)`` when the scorer starts with Dense, else None."""
        scorer = self._scorer
        if not isinstance(scorer, tf.keras.Sequential) or not scorer.layers:
            return None
        first = scorer.layers[0]
        if not isinstance(first, tf.keras.layers.Dense):
            return None
        rest_layers = scorer.layers[1:]

        def rest(x):
            for layer in rest_layers:
                x = layer(x)
            return x

        bias = first.bias if first.use_bias else tf.zeros([first.units], first.kernel.dtype)
        return first.kernel, bias, first.activation, rest


class TowerAdapter:
    """One tower (a `tf.keras.Sequential` of lookup -> `Embedding` -> layers) taking one feature.

    `embed` runs the layers up to and including the last `Embedding`; `head` runs the
    rest (identity when there is none) and returns ``[n, k]`` vectors.
    """

    def __init__(self, tower, feature_name: str):
        if not isinstance(tower, tf.keras.Sequential):
            raise TypeError(f"tower for {feature_name!r} must be a tf.keras.Sequential, got {type(tower).__name__}; "
                            "write a FeatureAdapter for other towers")
        layers = list(tower.layers)
        idx = [i for i, layer in enumerate(layers) if isinstance(layer, tf.keras.layers.Embedding)]
        if not idx:
            raise ValueError(f"tower for {feature_name!r} has no Embedding layer to split after")
        self._lookup_layers = layers[:idx[-1] + 1]
        self._head_layers = layers[idx[-1] + 1:]
        self.feature_names = (feature_name,)
        self.embedders = {feature_name: tf.keras.Sequential(self._lookup_layers)}

    def embed(self, features):
        x = features[self.feature_names[0]]
        for layer in self._lookup_layers:
            x = layer(x)
        return {self.feature_names[0]: x}

    def head(self, embeddings):
        x = embeddings[self.feature_names[0]]
        for layer in self._head_layers:
            x = layer(x)
        return x


class RetrievalAdapter:
    """``score(x) = dot(query(x), candidate(x))`` for (query, item) pairs in one feature dict.

    ``query`` and ``candidate`` are adapters whose heads return vectors (e.g.
    `TowerAdapter`); their features are attributed side by side, query features first.
    The explained output is the pair's retrieval score, so Shapley values of a pair sum to
    its score minus the base value.
    """

    def __init__(self, query, candidate):
        overlap = set(query.feature_names) & set(candidate.feature_names)
        if overlap:
            raise ValueError(f"query and candidate towers both take {sorted(overlap)}; give them distinct keys")
        self.query = query
        self.candidate = candidate
        self.query_features = tuple(query.feature_names)
        self.candidate_features = tuple(candidate.feature_names)
        self.feature_names = self.query_features + self.candidate_features
        self.embedders = {**getattr(query, "embedders", {}), **getattr(candidate, "embedders", {})}

    def describe(self) -> str:
        """How each tower is explained."""
        def side(adapter):
            fn = getattr(adapter, "describe", None)
            return fn() if fn is not None else f"{type(adapter).__name__} over {list(adapter.feature_names)}"
        return f"retrieval score dot(query, candidate); query: {side(self.query)}; candidate: {side(self.candidate)}"

    @property
    def space(self) -> str:
        """``"embedding"``, or ``"input"`` when either tower is explained in input space."""
        sides = {getattr(self.query, "space", "embedding"), getattr(self.candidate, "space", "embedding")}
        return "input" if "input" in sides else "embedding"

    @property
    def differentiable(self) -> bool:
        return getattr(self.query, "differentiable", True) and getattr(self.candidate, "differentiable", True)

    @property
    def reason(self) -> str | None:
        return getattr(self.query, "reason", None) or getattr(self.candidate, "reason", None)

    @property
    def feature_kinds(self) -> dict:
        return {**(getattr(self.query, "feature_kinds", None) or {}),
                **(getattr(self.candidate, "feature_kinds", None) or {})}

    @classmethod
    def from_two_tower(cls, model) -> "RetrievalAdapter":
        """From a model with ``user_model``/``item_model`` Sequential towers and ``user_key``/``item_key``."""
        return cls(TowerAdapter(model.user_model, model.user_key), TowerAdapter(model.item_model, model.item_key))

    def embed(self, features):
        return {**self.query.embed(features), **self.candidate.embed(features)}

    def query_vectors(self, embeddings):
        """The query tower's output vectors from the embeddings of the query features."""
        return self.query.head({n: embeddings[n] for n in self.query_features})

    def candidate_vectors(self, embeddings):
        """The candidate tower's output vectors from the embeddings of the candidate features."""
        return self.candidate.head({n: embeddings[n] for n in self.candidate_features})

    def head(self, embeddings):
        return tf.reduce_sum(self.query_vectors(embeddings) * self.candidate_vectors(embeddings), axis=-1)


def as_adapter(model, features: Mapping[str, Any] | None = None, *, output=None, query_model=None,
               candidate_model=None, query_features=None, candidate_features=None, space: str = "auto") -> Any:
    """An adapter for ``model``.

    - adapters (``feature_names``, ``embed()``, ``head()``) pass through;
    - models with ``embed``/``score`` methods get a `RankingAdapter`;
    - `tfrs_diag.models.TwoTowerModel` (``user_model``/``item_model``/``user_key``) a
      `RetrievalAdapter` of its towers;
    - any other feature-dict model (the TFRS tutorials' models, plain Keras functional
      or subclassed models, a score function) is split by calling it on ``features``
      (the background rows): see `tfrs_diag.explain.auto.auto_adapter` for
      ``output``, ``query_model``/``candidate_model`` (explain a retrieval score; found
      by name when the model has no ``call``), ``query_features``/``candidate_features``
      and ``space`` (``"auto"``: embedding space when the split is found, else input
      space; ``"embedding"``; ``"input"``).
    """
    custom = any(v is not None for v in (output, query_model, candidate_model, query_features, candidate_features))
    if not custom and space == "auto":
        if hasattr(model, "feature_names") and callable(getattr(model, "head", None)) \
                and callable(getattr(model, "embed", None)):
            return model
        if callable(getattr(model, "embed", None)) and callable(getattr(model, "score", None)):
            return RankingAdapter(model)
        if hasattr(model, "user_model") and hasattr(model, "item_model") and hasattr(model, "user_key"):
            return RetrievalAdapter.from_two_tower(model)
    from tfrs_diag.explain.auto import auto_adapter

    return auto_adapter(model, features, output=output, query_model=query_model, candidate_model=candidate_model,
                        query_features=query_features, candidate_features=candidate_features, space=space)


# ---------------------------------------------------------------- groups


def resolve_groups(feature_names: Sequence[str],
                   groups: Mapping[str, Sequence[str] | str] | Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """``{group: features}`` from a user's ``groups`` (default: one group per input key).

    ``groups`` may map names to features (``{"user": ["user_id", "user_gender"], ...}``)
    or list features (each its own group). Features in no group keep the example's value
    in every coalition (they are not attributed). Raises naming an unknown feature.
    """
    if groups is None:
        return {n: (n,) for n in feature_names}
    if isinstance(groups, str):
        raise TypeError("groups must be a list of features or a {group: [features]} dict, not a string")
    if isinstance(groups, Mapping):
        out = {str(g): (f,) if isinstance(f, str) else tuple(f) for g, f in groups.items()}
    else:
        out = {str(f): (str(f),) for f in groups}
    if not out:
        raise ValueError("groups is empty; leave it None for one group per input feature")
    seen: dict[str, str] = {}
    for g, feats in out.items():
        if not feats:
            raise ValueError(f"groups[{g!r}] names no feature")
        for f in feats:
            if f not in feature_names:
                raise ValueError(f"groups[{g!r}] names feature {f!r}, which the model does not take; "
                                 f"its features are {list(feature_names)}")
            if f in seen:
                raise ValueError(f"feature {f!r} is in two groups ({seen[f]!r} and {g!r}); put it in one")
            seen[f] = g
    return out

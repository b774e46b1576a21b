"""`tfrs_diag.evaluate`: accuracy, diversity, popularity bias, exposure and fairness in one pass.

Candidate embeddings are computed once; each query batch runs one matmul and one
`tf.math.top_k` of the largest K, and every metric family reads that one result.

>>> from tfrs_diag import datasets, models, evaluate
>>> data = datasets.synthetic(num_users=40, num_items=60, num_interactions=600)
>>> model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
>>> result = evaluate(model, data.items["item_id"], data.test, k=(5, 10), user_group_keys=("user_group",),
...                   item_popularity=data.item_popularity)
>>> 0.0 <= result["ndcg_at_10"] <= 1.0, result.queries > 0
(True, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from tfrs_diag._graph import rare_cond
from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import check_ks
from tfrs_diag.metrics.batch import TopKBatch
from tfrs_diag.metrics.factory import USER_GROUP_PREFIX, metric_families
from tfrs_diag.metrics.topk import PAD, IdMapper, top_k

_logger = logging.getLogger("tfrs_diag")


# ------------------------------------------------------------------ result


@dataclasses.dataclass
class EvaluationResult(Mapping[str, float]):
    """Scalar metrics (a read-only mapping) plus per-group tables.

    ``tables[key]`` holds one row per user group of ``key`` (``count`` and each accuracy
    metric); ``item_group_table`` one row per item group (relevant share, exposure share
    and disparity per K).
    """

    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]]
    item_group_table: list[dict[str, Any]]
    ks: tuple[int, ...]
    queries: int
    missing_positives: int
    #: Per K, the Lorenz curve of per-item exposure (`ItemExposure.lorenz`), 101 points.
    exposure_lorenz: dict[int, dict[str, list[float]]] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        try:
            return self.metrics[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a computed metric; available: {', '.join(sorted(self.metrics))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "tables": self.tables, "item_groups": self.item_group_table,
                "ks": list(self.ks), "queries": self.queries, "missing_positives": self.missing_positives}

    def __str__(self) -> str:
        lines = [f"{self.queries} queries, K = {', '.join(map(str, self.ks))}"
                 + (f", {self.missing_positives} positives not in the candidate set" if self.missing_positives else "")]
        families = [("accuracy", ("recall", "ndcg", "mrr", "hit_rate")),
                    ("diversity", ("coverage", "gini", "entropy_norm", "novelty", "ild")),
                    ("popularity", ("arp", "aplt", "pop_rsp", "pop_reo")),
                    ("exposure", ("exposure_gini", "exposure_gap"))]
        for title, names in families:
            rows = [(n, [self.metrics.get(f"{n}_at_{k}") for k in self.ks]) for n in names]
            rows = [(n, v) for n, v in rows if any(x is not None for x in v)]
            if rows:
                lines.append("")
                lines.append(f"{title:<14}" + "".join(f"{'@' + str(k):>10}" for k in self.ks))
                for n, vals in rows:
                    lines.append(f"  {n:<12}" + "".join(f"{'' if v is None else f'{v:.4f}':>10}" for v in vals))
        for key, rows in self.tables.items():
            k = self.ks[0]
            lines.append("")
            lines.append(f"by {key} (@{k})  " + "  ".join(f"{c:>9}" for c in ("count", "recall", "ndcg", "hit_rate")))
            for r in rows:
                lines.append(f"  {str(r['group']):<14}" + "  ".join(
                    f"{r[c] if c == 'count' else r[f'{c}_at_{k}']:>9.4g}" for c in ("count", "recall", "ndcg", "hit_rate")))
            lines.append(f"  gap (max-min) ndcg@{k}: {self.metrics.get(f'{key}/ndcg_at_{k}_gap', float('nan')):.4f}")
        return "\n".join(lines)


# ------------------------------------------------------------------ inputs

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


def _missing_tower(model, argument: str, names: Sequence[str], extra: str = "") -> ValueError:
    return ValueError(f"{argument}: found no tower on {type(model).__name__} (looked for "
                      f"{', '.join(names[:6])}, ...); pass {argument}= the tower or the name of the attribute "
                      f"that holds it{extra}. {_attributes_hint(model)}")


def _decoded(arr: np.ndarray) -> np.ndarray:
    """Bytes from TensorFlow (object or ``S`` arrays) as ``str`` arrays, so they compare equal
    to the ids of numpy inputs; bytes that are not UTF-8 stay bytes."""
    if arr.dtype.kind == "O" and arr.size and isinstance(arr.flat[0], bytes):
        arr = arr.astype(np.bytes_)
    if arr.dtype.kind == "S":
        try:
            return np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            return arr
    return arr


def _dataset_rows(dataset, argument: str, spec) -> list:
    """Every element of ``dataset`` as numpy batches.

    Unbatched elements hold at least one scalar (the item id), batches none: a dataset
    with a scalar component is batched here, one of vectors only is read as batched.
    """
    specs = tf.nest.flatten(spec)
    for s in specs:
        if not isinstance(s, tf.TensorSpec):
            raise ValueError(f"{argument}: the dataset yields a {type(s).__name__}; only dense tensors are "
                             "supported (convert ragged/sparse features to dense, e.g. with .to_tensor())")
    if any(s.shape.rank == 0 for s in specs):
        dataset = dataset.batch(8192)
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        raise ValueError(f"{argument}: the dataset is empty")
    return batches


def as_feature_dict(data, argument: str = "data") -> dict[str, np.ndarray]:
    """``data`` (a feature dict of arrays or tensors, or a `tf.data.Dataset` of feature dicts,
    batched or not) as a new dict of numpy arrays with one row per interaction."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, Mapping) or not spec:
            raise ValueError(f"{argument}: a tf.data.Dataset must yield feature dicts (e.g. {{'user_id': ..., "
                             f"'movie_title': ...}}), got elements {spec}; for (features, labels) pairs pass "
                             f"{argument}.map(lambda x, y: x)")
        batches = _dataset_rows(data, argument, spec)
        return {k: _decoded(np.concatenate([b[k] for b in batches])) for k in spec}
    if isinstance(data, Mapping):
        return {k: _decoded(np.asarray(v)) for k, v in data.items()}
    raise ValueError(f"{argument}: pass a feature dict of arrays (e.g. {{'user_id': [...], 'movie_title': [...]}}) "
                     f"or a tf.data.Dataset of feature dicts, got {type(data).__name__}")


def as_ids(candidates, argument: str = "candidates") -> np.ndarray:
    """``candidates`` (an array/list/tensor of ids, or a `tf.data.Dataset` of ids, batched or
    not) as a 1-D numpy array."""
    if isinstance(candidates, tf.data.Dataset):
        spec = candidates.element_spec
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank not in (0, 1):
            raise ValueError(f"{argument}: a tf.data.Dataset of candidates must yield ids (scalars, or 1-D batches "
                             f"of ids), got elements {spec}; for a dataset of feature dicts map it to the id, e.g. "
                             f"{argument}.map(lambda x: x['movie_title'])")
        ids = np.concatenate([np.reshape(b, [-1]) for b in _dataset_rows(candidates, argument, spec)])
    else:
        try:
            ids = np.asarray(candidates)
        except Exception as e:  # noqa: BLE001 - anything numpy cannot take
            raise ValueError(f"{argument}: pass a 1-D array of candidate ids or a tf.data.Dataset of ids, "
                             f"got {type(candidates).__name__}") from e
    ids = _decoded(ids)
    if ids.ndim != 1 or len(ids) == 0 or ids.dtype.kind not in "iuUSO":
        raise ValueError(f"{argument}: pass a non-empty 1-D array of candidate ids (str or int) or a "
                         f"tf.data.Dataset of ids, got {type(candidates).__name__} of shape {ids.shape} "
                         f"and dtype {ids.dtype}")
    return ids


def normalize_query_features(query_features) -> str | tuple[str, ...] | None:
    """``None``, one feature name, or a tuple of names (the query tower then gets a dict)."""
    if query_features is None or isinstance(query_features, str):
        return query_features
    if isinstance(query_features, Sequence) and query_features and all(isinstance(n, str) for n in query_features):
        return tuple(query_features)
    raise ValueError(f"query_features: pass a feature name or a non-empty sequence of names, got {query_features!r}")


@dataclasses.dataclass
class Queries:
    """Evaluation queries: one per distinct query id, or one per row without a query key."""

    features: dict[str, np.ndarray]  # first row of each query
    positives: np.ndarray  # [Q, P] candidate indices, PAD-padded, MISSING for unknown ids
    groups: dict[str, np.ndarray]  # key -> [Q] group index
    group_names: dict[str, tuple[str, ...]]
    exclude: np.ndarray | None  # [Q, S] candidate indices to exclude


def _group_codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    names, codes = np.unique(values.astype(str) if values.dtype.kind in "USO" else values, return_inverse=True)
    return codes.astype(np.int32), tuple(str(n) for n in names)


def _in_search_order(indices: np.ndarray) -> np.ndarray:
    return np.concatenate([np.sort(indices[indices >= 0]), indices[indices < 0]])


def _padded(lists: Sequence[np.ndarray]) -> np.ndarray:
    width = max(1, max((len(x) for x in lists), default=1))
    out = np.full((len(lists), width), PAD, np.int32)
    for i, x in enumerate(lists):
        out[i, : len(x)] = x
    return out


def _check_columns(data: Mapping[str, np.ndarray], query_key, item_key, query_features, user_group_keys) -> int:
    """Checks that the named features exist, have one row each, and that ids are 1-D."""
    keys = sorted(data)
    named = [("query_key", query_key), ("item_key", item_key)]
    named += [("query_features", f) for f in ((query_features,) if isinstance(query_features, str)
                                              else query_features or ())]
    named += [("user_group_keys", k) for k in user_group_keys]
    for argument, key in named:
        if key is not None and key not in data:
            raise KeyError(f"{argument}: {key!r} is not a feature of the evaluation data; available keys: {keys}")
        if key is not None and np.ndim(data[key]) == 0:
            raise ValueError(f"{argument}: {key!r} is a scalar; the evaluation data needs one value per row")
    if query_key is not None and np.ndim(data[query_key]) != 1:
        raise ValueError(f"query_key: {query_key!r} has shape {np.shape(data[query_key])}, but queries are grouped by "
                         "a 1-D id (one value per row). Name a 1-D id feature (e.g. query_key='user_id'), or leave "
                         f"query_key out and pass query_features={query_key!r} to make every row its own query")
    for argument, key in [("item_key", item_key)] + [("user_group_keys", k) for k in user_group_keys]:
        if np.ndim(data[key]) != 1:
            raise ValueError(f"{argument}: {key!r} has shape {np.shape(data[key])}; it must be 1-D (one id per row)")
    rows = {key: len(data[key]) for _, key in named if key is not None}
    if len(set(rows.values())) > 1:
        raise ValueError(f"data: the features have different numbers of rows: {rows}")
    n = next(iter(rows.values()))
    if n == 0:
        raise ValueError("the evaluation data is empty: pass at least one (query, item) row")
    return n


def group_queries(data: Mapping[str, np.ndarray], query_key: str | None, item_key: str, mapper: IdMapper,
                  user_group_keys: Sequence[str] = (), exclude_seen: Mapping[str, np.ndarray] | None = None,
                  group_names: Mapping[str, Sequence[str]] | None = None, query_features=None) -> Queries:
    """Groups interaction rows by ``query_key`` into queries with their positives.

    With ``query_key=None`` every row is its own query (its item is its one positive):
    for queries that are not ids, e.g. a sequence of watched items.
    """
    n = _check_columns(data, query_key, item_key, query_features, user_group_keys)
    items = np.asarray(data[item_key])
    if query_key is None:
        if exclude_seen is not None:
            raise ValueError("exclude_seen: needs query_key, the 1-D id that links the seen interactions to the "
                             "evaluation queries; without query_key every row is its own query")
        positives = mapper(items).astype(np.int32)[:, None]
        features = {k: np.asarray(v) for k, v in data.items() if np.ndim(v) and len(v) == n}
        uniq = None
    else:
        qvals = np.asarray(data[query_key])
        uniq, first_idx, inverse = np.unique(qvals, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        # Deduplicate by raw id, then map: two different unknown ids stay two missing positives.
        raw_items, item_codes = np.unique(items, return_inverse=True)
        item_codes = item_codes.reshape(-1)
        code_to_index = mapper(raw_items)
        # Candidate indices ascending, ids missing from the candidates (negative) last: the hit
        # matrix's binary search then needs no in-graph sort.
        positives = _padded([_in_search_order(code_to_index[np.unique(item_codes[order[bounds[q]:bounds[q + 1]]])])
                             for q in range(len(uniq))])
        features = {k: np.asarray(v)[first_idx] for k, v in data.items() if np.ndim(v) and len(v) == n}
    groups, names = {}, {}
    for key in user_group_keys:
        if group_names and key in group_names:
            names[key] = tuple(str(n) for n in group_names[key])
            vals = features[key]
            if vals.dtype.kind in "iu":
                codes = vals.astype(np.int32)
            else:
                lookup = {n: i for i, n in enumerate(names[key])}
                codes = np.array([lookup[str(v)] for v in vals], np.int32)
            groups[key] = codes
        else:
            groups[key], names[key] = _group_codes(features[key])
    exclude = None
    if exclude_seen is not None:
        for argument, key in (("exclude_seen", query_key), ("exclude_seen", item_key)):
            if key not in exclude_seen:
                raise KeyError(f"{argument}: the seen-interactions data has no {key!r}; "
                               f"available keys: {sorted(exclude_seen)}")
        seen_q = np.asarray(exclude_seen[query_key])
        if seen_q.ndim != 1:
            raise ValueError(f"exclude_seen: {query_key!r} has shape {seen_q.shape}; it must be 1-D like query_key")
        seen_items = mapper(np.asarray(exclude_seen[item_key]))
        pos_of = {q: i for i, q in enumerate(uniq.tolist())}
        lists: list[list[int]] = [[] for _ in range(len(uniq))]
        for q, it in zip(seen_q.tolist(), seen_items.tolist()):
            i = pos_of.get(q)
            if i is not None and it >= 0:
                lists[i].append(it)
        exclude = _padded([np.unique(np.asarray(x, np.int32)) for x in lists])
    return Queries(features, positives, groups, names, exclude)


# ------------------------------------------------------------------ evaluator


def _is_tfrs_model(model) -> bool:
    try:
        import tensorflow_recommenders as tfrs  # noqa: PLC0415
    except ImportError:  # pragma: no cover - tfrs is a dependency
        return False
    return isinstance(model, tfrs.models.Model)


@contextlib.contextmanager
def _cross_replica_state():
    """Metric state that the evaluation step may update in a strategy's cross-replica context.

    Keras metrics created inside a `tf.distribute` strategy scope (``fit`` runs callbacks
    inside one) get ``ON_READ`` variables, which refuse ``assign_add`` outside a replica
    context. The evaluation runs once, not once per replica, so its state is one plain
    variable per metric on the strategy's first device, as without a strategy.
    """
    if not tf.distribute.has_strategy():
        yield
        return
    try:
        # What the strategies' variable creators take for "one plain variable on this device".
        from tensorflow.python.distribute.numpy_dataset import SingleDevice  # noqa: PLC0415
    except ImportError:  # pragma: no cover - moved in a future TensorFlow: the state stays as Keras makes it
        yield
        return
    device = SingleDevice(tf.distribute.get_strategy().extended.worker_devices[0])

    def creator(next_creator, **kwargs):
        kwargs["colocate_with"] = device
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield


def _copy(features):
    """A fresh dict for each tower call: towers that ``pop`` features must not change ours."""
    return dict(features) if isinstance(features, dict) else features


class TopKEvaluator:
    """Reusable one-pass evaluation: build once, `run(model)` whenever you like.

    `evaluate` is a one-shot wrapper and documents the arguments;
    `tfrs_diag.callbacks.BeyondAccuracy` keeps one evaluator so its compiled step is traced
    once for the whole training. ``data``, ``candidates`` and ``exclude_seen`` are
    converted to numpy once, here; queries and their batches are built at the first `run`.

    >>> from tfrs_diag import datasets, models
    >>> data = datasets.synthetic(num_users=30, num_items=40, num_interactions=400)
    >>> model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    >>> evaluator = TopKEvaluator(data.items["item_id"], data.test, k=5, query_key="user_id",
    ...                           item_key="item_id", query_model="user_model", candidate_model="item_model")
    >>> evaluator.run(model).ks
    (5,)
    """

    def __init__(self, candidates, data, k: Sequence[int] | int = (10, 100), *,
                 query_key: str | None = None, item_key: str | None = None, query_features=None,
                 query_model=None, candidate_model=None,
                 user_group_keys: Sequence[str] = (), user_group_names: Mapping[str, Sequence[str]] | None = None,
                 item_groups=None, item_group_names: Sequence[str] | None = None,
                 item_popularity=None, item_is_head=None, exclude_seen=None, batch_size: int = 1024,
                 diversity_embeddings: bool = True):
        ks = check_ks(k)
        cand_ids = as_ids(candidates, "candidates")
        self.mapper = IdMapper(cand_ids)
        self.candidate_ids = cand_ids
        n = self.mapper.size
        if max(ks) > n:
            warnings.warn(f"k={max(ks)} is larger than the catalog ({n} candidates); clamped to {n}", stacklevel=2)
            ks = tuple(sorted({min(x, n) for x in ks}))
        self.ks = ks
        if isinstance(user_group_keys, str):
            user_group_keys = (user_group_keys,)
        self.query_key, self.item_key = query_key, item_key
        self.query_features = normalize_query_features(query_features)
        if exclude_seen is not None and query_key is None and self.query_features is not None:
            raise ValueError("exclude_seen: needs query_key, the 1-D id that links the seen interactions to the "
                             "evaluation queries; with query_features and no query_key every row is its own query")
        self.query_model, self.candidate_model = query_model, candidate_model
        self.batch_size = int(batch_size)
        self._data = as_feature_dict(data, "data")
        self._user_group_keys = tuple(user_group_keys)
        self._user_group_names = user_group_names
        self._exclude_seen = None if exclude_seen is None else as_feature_dict(exclude_seen, "exclude_seen")
        self.item_popularity = None if item_popularity is None else np.asarray(item_popularity, np.float64)
        self.item_is_head = item_is_head
        self.diversity_embeddings = diversity_embeddings
        self.item_groups, self.item_group_names = None, None
        if item_groups is not None:
            groups = np.asarray(item_groups)
            if groups.shape != (n,):
                raise ValueError(f"item_groups must have one entry per candidate ({n}), got shape {groups.shape}")
            if item_group_names is not None and groups.dtype.kind in "iu":
                self.item_groups, self.item_group_names = groups.astype(np.int32), tuple(map(str, item_group_names))
            else:
                self.item_groups, self.item_group_names = _group_codes(groups)
        self._queries: Queries | None = None
        self._batch_tensors: list | None = None
        self._step = None

    # -- helpers
    def _resolve_keys(self, model):
        qk, qf = self.query_key, self.query_features
        if qk is None and qf is None:
            qk = getattr(model, "user_key", None) or getattr(model, "query_key", None)
        ik = self.item_key or getattr(model, "item_key", None) or getattr(model, "candidate_key", None)
        if ik is None:
            raise ValueError("item_key: name the item id feature of the data (e.g. item_key='movie_title')")
        if qk is None and qf is None:
            raise ValueError("query_key: name the query id feature of the data (e.g. query_key='user_id'), or pass "
                             "query_features, the feature(s) the query tower takes (without query_key every row "
                             "is then its own query, e.g. query_features='context_movie_id')")
        return qk, ik, qf if qf is not None else qk

    def queries(self, model) -> Queries:
        if self._queries is None:
            qk, ik, qf = self._resolve_keys(model)
            self._queries = group_queries(self._data, qk, ik, self.mapper, self._user_group_keys,
                                          self._exclude_seen, self._user_group_names, query_features=qf)
            self.query_key, self.item_key, self.query_features = qk, ik, qf
        return self._queries

    def query_tower(self, model, query_model=None):
        """The query tower: ``query_model`` (or the constructor's), else a tower attribute of
        ``model`` (`QUERY_TOWERS`), else ``model`` itself when it is not a `tfrs.Model`."""
        tower = resolve_tower(model, query_model if query_model is not None else self.query_model,
                              QUERY_TOWERS, "query_model")
        if tower is None:
            if _is_tfrs_model(model) or not callable(model):
                raise _missing_tower(model, "query_model", QUERY_TOWERS)
            tower = model
        return tower

    def candidate_tower(self, model, candidate_model=None):
        """The candidate tower: ``candidate_model`` (or the constructor's), else a tower
        attribute of ``model`` (`CANDIDATE_TOWERS`)."""
        tower = resolve_tower(model, candidate_model if candidate_model is not None else self.candidate_model,
                              CANDIDATE_TOWERS, "candidate_model")
        if tower is None:
            raise _missing_tower(model, "candidate_model", CANDIDATE_TOWERS, " (or candidate_embeddings=)")
        return tower

    def candidate_embeddings(self, model, candidate_model=None) -> tf.Tensor:
        """Embeddings of every candidate, computed once per evaluation (in chunks)."""
        tower = self.candidate_tower(model, candidate_model)
        return tf.concat([tf.cast(tower(tf.constant(self.candidate_ids[i:i + 8192])), tf.float32)
                          for i in range(0, len(self.candidate_ids), 8192)], axis=0)

    def run(self, model_or_query_tower, candidate_model=None, candidate_embeddings=None, *,
            query_model=None) -> EvaluationResult:
        """Evaluates ``model_or_query_tower`` (a TFRS model with towers, or a query tower).

        ``query_model``/``candidate_model`` (a tower, or the name of the model's attribute)
        override the constructor's; ``candidate_embeddings`` ([num candidates, d]) skips
        the candidate tower.
        """
        model = model_or_query_tower
        query_tower = self.query_tower(model, query_model)
        q = self.queries(model)
        if candidate_embeddings is None:
            candidate_embeddings = self.candidate_embeddings(model, candidate_model)
        cand = tf.convert_to_tensor(candidate_embeddings, tf.float32)
        if cand.shape.rank != 2 or cand.shape[0] != self.mapper.size:
            raise ValueError(f"candidate_embeddings has shape {cand.shape}; it needs one row per candidate id "
                             f"({self.mapper.size})")
        key = (query_tower, tuple(cand.shape), tf.distribute.get_strategy())
        if self._step is None or self._step[0] != key:
            with _cross_replica_state():
                self._step = (key, self._build_step(query_tower, cand if self.diversity_embeddings else None, q))
        _, (step_fn, metrics, reader) = self._step
        batches = self._batches(q)
        for i, (features, positives, groups, exclude) in enumerate(batches):
            # The first batch also resets the state, the last also reads every result:
            # one traced call per batch and nothing else.
            out = step_fn(features, cand, positives, groups, exclude, tf.constant(i == 0),
                          tf.constant(i == len(batches) - 1))
        return collect_results(metrics, self.ks, q.group_names, lambda: reader.read(*out))

    def _batches(self, q: Queries) -> list:
        """The query batches as tensors, built once: they are the same at every evaluation."""
        if self._batch_tensors is None:
            names = self.query_features
            batches = []
            for lo in range(0, len(q.positives), self.batch_size):
                sl = slice(lo, lo + self.batch_size)
                features = (tf.constant(q.features[names][sl]) if isinstance(names, str)
                            else {name: tf.constant(q.features[name][sl]) for name in names})
                # Positives are left-aligned: trim each batch to its own widest row.
                width = max(1, int((q.positives[sl] != PAD).sum(axis=1).max()))
                groups = {key: tf.constant(q.groups[key][sl]) for key in self._user_group_keys}
                exclude = tf.constant(q.exclude[sl]) if q.exclude is not None else None
                batches.append((features, tf.constant(q.positives[sl, :width]), groups, exclude))
            self._batch_tensors = batches
        return self._batch_tensors

    def _build_step(self, query_tower, item_embeddings, q: Queries):
        metrics = metric_families(self.ks, self.mapper.size, item_popularity=self.item_popularity,
                                  item_is_head=self.item_is_head, item_groups=self.item_groups,
                                  item_group_names=self.item_group_names,
                                  user_group_names={key: q.group_names[key] for key in self._user_group_keys},
                                  item_embeddings=item_embeddings)
        k_max = max(self.ks)
        state = [v for m in metrics.values() for v in m.variables]
        reader = _ResultReader(metrics)

        def begin(cand):
            for v in state:
                v.assign(tf.zeros(v.shape, v.dtype))
            if item_embeddings is not None:
                metrics["diversity"].set_item_embeddings(cand)
            return tf.constant(True)

        def step(features, cand, positives, groups, exclude, first, last):
            rare_cond(first, lambda: begin(cand), lambda: tf.constant(False))
            top = top_k(query_tower(_copy(features)), cand, k_max, exclude)
            # group_queries stores positives in search order (_in_search_order).
            batch = TopKBatch(top.indices, positives, user_groups=groups, exclude=exclude,
                              positives_in_search_order=True)
            for m in metrics.values():
                m.update_state(batch)
            return rare_cond(last, reader.compute, reader.placeholder)

        return tf.function(step, reduce_retracing=True), metrics, reader


class _ResultReader:
    """Every family's results as one float64 vector (plus the exposure state for the Lorenz curves).

    Computed inside the last batch's traced step and read with one host transfer:
    reading a hundred-odd result tensors one by one costs more than computing them.
    """

    def __init__(self, metrics: Mapping[str, Any]):
        self.metrics = metrics
        self.names: list[tuple[str, str]] = []
        self._exposure = metrics.get("exposure")

    def compute(self):
        vectors = []
        self.names = []
        for key, m in self.metrics.items():
            family_names, vector = m.result_vector()
            self.names.extend((key, name) for name in family_names)
            vectors.append(vector)
        exposure = self._exposure.exposure.read_value() if self._exposure is not None else tf.zeros([0, 0])
        return tf.concat(vectors, axis=0), exposure

    def placeholder(self):
        """What the other batches return: zeros shaped like `compute`'s output, computing nothing."""
        size = sum(len(names) for m in self.metrics.values() for names, _ in m.result_blocks())
        exposure = self._exposure.exposure.shape if self._exposure is not None else [0, 0]
        return tf.zeros([size], tf.float64), tf.zeros(exposure, tf.float32)

    def read(self, vector, exposure):
        """``({family: {name: value}}, exposure array or None)`` on the host."""
        out: dict[str, dict[str, float]] = {key: {} for key in self.metrics}
        for (key, name), value in zip(self.names, vector.numpy().tolist()):
            out[key][name] = value
        return out, (exposure.numpy() if self._exposure is not None else None)


def collect_results(metrics: Mapping[str, Any], ks: Sequence[int],
                    group_names: Mapping[str, Sequence[str]], result_fn=None) -> EvaluationResult:
    """Flattens the families' results into an `EvaluationResult` with group tables.

    ``result_fn`` (``() -> ({family: {name: value}}, exposure)``, see `_ResultReader`) reads
    results computed in one traced call; eager `Metric.result` calls cost far more than
    the evaluation itself.
    """
    flat: dict[str, float] = {}
    tables = {}
    if result_fn is not None:
        raw, exposure_state = result_fn()
    else:
        raw, exposure_state = {key: m.result() for key, m in metrics.items()}, None
    for key, m in metrics.items():
        # NaN marks an undefined result (docs/metrics.md, "Undefined cases"): left out.
        res = {k: float(v) for k, v in raw[key].items() if not np.isnan(v)}
        if not key.startswith(USER_GROUP_PREFIX):
            flat.update({k: v for k, v in res.items() if "/" not in k})
            continue
        gkey = key[len(USER_GROUP_PREFIX):]
        # Gap statistics are headline numbers; per-group values go to the table.
        flat.update({f"{gkey}/{k}": v for k, v in res.items() if "/" not in k})
        rows = []
        for g in group_names[gkey]:
            row = {"group": g, "count": int(res[f"count/{g}"])}
            row.update({k[: -len(g) - 1]: v for k, v in res.items() if k.endswith(f"/{g}") and not k.startswith("count/")})
            rows.append(row)
        tables[gkey] = rows
    item_rows = []
    if "exposure" in metrics:
        exp = {k: float(v) for k, v in raw["exposure"].items()}
        for g in metrics["exposure"].group_names:
            row = {"group": g, "relevant_share": exp[f"relevant_share/{g}"]}
            for k in ks:
                row[f"exposure_share_at_{k}"] = exp[f"exposure_share_at_{k}/{g}"]
                disparity = exp[f"exposure_disparity_at_{k}/{g}"]
                row[f"exposure_disparity_at_{k}"] = None if np.isnan(disparity) else disparity  # None: undefined
            item_rows.append(row)
    missing = int(flat.pop("missing_positives", 0))
    queries = int(flat.pop("evaluated_queries", 0))
    lorenz = metrics["exposure"].lorenz(exposure=exposure_state) if "exposure" in metrics else {}
    return EvaluationResult(flat, tables, item_rows, tuple(ks), queries, missing, lorenz)


def evaluate(model_or_query_tower, candidates, data, k: Sequence[int] | int = (10, 100),
             *, user_group_keys: Sequence[str] = (), item_groups=None, item_popularity=None, item_is_head=None,
             exclude_seen=None, query_key: str | None = None, item_key: str | None = None,
             query_features: str | Sequence[str] | None = None, query_model=None, candidate_model=None,
             candidate_embeddings=None, batch_size: int = 1024, **kwargs) -> EvaluationResult:
    """Top-K accuracy, diversity, popularity bias, exposure and user-group fairness in one pass.

    Args:
      model_or_query_tower: a TFRS retrieval model with a query and a candidate tower, or a
        query tower (then pass ``candidate_model`` or ``candidate_embeddings``).
      candidates: the catalog: a 1-D array of candidate item ids, or a `tf.data.Dataset` of
        ids, batched or not (e.g. the tutorials' ``movies = ...map(lambda x: x["movie_title"])``);
        aligned with ``item_groups``, ``item_popularity`` and ``candidate_embeddings``.
      data: evaluation interactions, one row per (query, relevant item): a feature dict of
        arrays (e.g. ``dataset.test``) or a `tf.data.Dataset` of feature dicts, batched (with
        or without ``drop_remainder``) or not. Converted to numpy once.
      k: one K or several; all come from one search of the largest K (clamped to the
        catalog size with a warning).
      user_group_keys: features of ``data`` whose values define user groups (e.g.
        ``("user_group", "user_gender")``); accuracy is reported per group with gaps.
      item_groups: group label per candidate (e.g. category) for exposure shares.
      item_popularity: phi(i) per candidate, share of training interactions (novelty,
        ARP, APLT, PopRSP, PopREO); ``item_is_head`` overrides the 80% head rule.
      exclude_seen: training interactions (feature dict or dataset with the query and item
        keys): each query's seen items are left out of its top-K. Needs ``query_key``.
      query_key: the 1-D id queries are grouped by: rows with the same value form one query
        whose positives are their items, and the query tower sees the first row's features.
        Default: the model's ``user_key``/``query_key`` attribute, unless ``query_features``
        is given; then, without ``query_key``, every row is its own query (e.g. a sequence
        of watched items and the next item).
      item_key: the feature holding each row's relevant item id (default: the model's
        ``item_key``/``candidate_key`` attribute).
      query_features: what the query tower takes: one feature name (the tower gets that
        tensor, which may be multi-dimensional, e.g. ``"context_movie_id"`` of shape
        [n, 5]) or a sequence of names (the tower gets a dict of tensors, e.g.
        ``("user_id", "timestamp")``). Default: ``query_key``.
      query_model: the query tower, or the name (dotted path) of the model's attribute
        that holds it. Default: the first of `QUERY_TOWERS` the model has (``query_model``,
        ``user_model``, ``_query_model``, ``query_tower``, ``user_tower``, ...), else
        ``model_or_query_tower`` itself unless it is a `tfrs.Model`.
      candidate_model: the candidate tower or its attribute name. Default: the first of
        `CANDIDATE_TOWERS` (``candidate_model``, ``item_model``, ``movie_model``,
        ``_candidate_model``, ``candidate_tower``, ``item_tower``, ...). A model without
        a known tower raises a ValueError listing its Keras layer attributes.
      candidate_embeddings: [num candidates, d] embeddings to use instead of the
        candidate tower.
      batch_size: queries per top-K step.
      **kwargs: more `TopKEvaluator` arguments (``user_group_names``,
        ``item_group_names``, ``diversity_embeddings``).

    Towers get copies of the feature dicts, so a tower that pops features changes
    nothing. Inside a `tf.distribute` strategy scope the evaluation runs once (not per
    replica) and gives the one-device values.

    Returns:
      an `EvaluationResult`: a mapping of metric names (``ndcg_at_10``,
      ``coverage_at_100``, ``user_group/ndcg_at_10_gap``, ...) to floats, with per-group
      tables; ``print(result)`` shows a table.

    The TFRS README quickstart's model (towers ``user_model`` and ``movie_model``, found by
    name) on a dataset of ratings and a dataset of titles:

    >>> import numpy as np, tensorflow as tf, tensorflow_recommenders as tfrs
    >>> users, titles = np.array(["u1", "u2", "u3"]), np.array(["a", "b", "c", "d"])
    >>> class MovieLensModel(tfrs.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.user_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=users),
    ...                                                tf.keras.layers.Embedding(4, 8)])
    ...         self.movie_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=titles),
    ...                                                 tf.keras.layers.Embedding(5, 8)])
    ...         self.task = tfrs.tasks.Retrieval()
    >>> ratings = tf.data.Dataset.from_tensor_slices({"user_id": ["u1", "u1", "u2", "u3"],
    ...                                               "movie_title": ["a", "c", "b", "d"]})
    >>> movies = tf.data.Dataset.from_tensor_slices(titles)
    >>> result = evaluate(MovieLensModel(), movies, ratings, k=2, query_key="user_id", item_key="movie_title")
    >>> result.queries, 0.0 <= result["recall_at_2"] <= 1.0
    (3, True)
    """
    evaluator = TopKEvaluator(candidates, data, k, query_key=query_key, item_key=item_key,
                              query_features=query_features, query_model=query_model,
                              candidate_model=candidate_model, user_group_keys=user_group_keys,
                              item_groups=item_groups, item_popularity=item_popularity, item_is_head=item_is_head,
                              exclude_seen=exclude_seen, batch_size=batch_size, **kwargs)
    return evaluator.run(model_or_query_tower, candidate_embeddings=candidate_embeddings)


def evaluate_ranking(scores, candidates, labels, k: Sequence[int] | int = (5, 10), *, num_items: int,
                     relevance_threshold: float | None = None, user_groups=None,
                     user_group_names: Sequence[str] | None = None, item_groups=None,
                     item_group_names: Sequence[str] = (), item_popularity=None) -> EvaluationResult:
    """NDCG, exposure and the other families for a ranking model's order of candidate lists.

    A ranking model scores a list of candidates per query; its order is the ranking.

    Args:
      scores: [Q, L] model scores of each query's candidates (NaN pads short lists).
      candidates: [Q, L] candidate indices (0..num_items-1; -1 pads).
      labels: [Q, L] relevance: bool, or graded values with ``relevance_threshold``
        (e.g. ratings >= 4 are relevant); gain is binary, as everywhere.
      k: list lengths (clamped to L with a warning).
      user_groups: optional [Q] group index per query for per-group accuracy.

    >>> import numpy as np
    >>> r = evaluate_ranking(np.array([[0.9, 0.1, 0.5]]), np.array([[4, 7, 2]]),
    ...                      np.array([[0, 1, 0]]), k=3, num_items=10)
    >>> round(r["ndcg_at_3"], 4), r["mrr_at_3"]      # the relevant item is ranked last
    (0.5, 0.3333333432674408)
    """
    scores = np.asarray(scores, np.float64)
    cands = np.asarray(candidates, np.int64)
    labels = np.asarray(labels)
    if not (scores.shape == cands.shape == labels.shape) or scores.ndim != 2:
        raise ValueError(f"scores, candidates and labels must all be [queries, list] arrays of one shape; got "
                         f"{scores.shape}, {cands.shape}, {labels.shape}")
    if cands.max(initial=-1) >= num_items:
        raise ValueError(f"candidates holds index {cands.max()} >= num_items={num_items}")
    relevant = labels >= relevance_threshold if relevance_threshold is not None else labels.astype(bool)
    ks = check_ks(k)
    width = scores.shape[1]
    if max(ks) > width:
        warnings.warn(f"k={max(ks)} is longer than the candidate lists ({width}); clamped to {width}", stacklevel=2)
        ks = tuple(sorted({min(x, width) for x in ks}))
    pad = (cands < 0) | np.isnan(scores)
    order = np.argsort(np.where(pad, np.inf, -scores), axis=1, kind="stable")
    ranked = np.take_along_axis(cands, order, axis=1)[:, : max(ks)]
    # Pads at the end of a short list point at no item: give them an index past the
    # catalog so they never count as a hit, and leave them out of exposure below.
    positives = np.where(relevant & ~pad, cands, PAD).astype(np.int32)
    n_pad = (ranked < 0).sum()
    if n_pad:
        raise ValueError("every query needs at least max(k) real candidates; pad fewer or lower k")
    names = {}
    if user_groups is not None:
        names["user_group"] = tuple(user_group_names or (str(g) for g in range(int(np.max(user_groups)) + 1)))
    metrics = metric_families(ks, num_items, item_popularity=item_popularity, item_groups=item_groups,
                              item_group_names=item_group_names, user_group_names=names)
    groups = {"user_group": tf.constant(np.asarray(user_groups, np.int32))} if user_groups is not None else None
    batch = TopKBatch(tf.constant(ranked.astype(np.int32)), tf.constant(positives), user_groups=groups)
    for m in metrics.values():
        m.update_state(batch)
    return collect_results(metrics, ks, {key: metrics[USER_GROUP_PREFIX + key].group_names for key in names})

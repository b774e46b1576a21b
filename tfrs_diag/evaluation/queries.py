"""The evaluation's inputs: interactions and candidates in the forms users pass, grouped per query."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics.topk import PAD, IdMapper


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


def group_codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    names, codes = np.unique(values.astype(str) if values.dtype.kind in "USO" else values, return_inverse=True)
    return codes.astype(np.int32), tuple(str(n) for n in names)


def in_search_order(indices: np.ndarray) -> np.ndarray:
    return np.concatenate([np.sort(indices[indices >= 0]), indices[indices < 0]])


def padded(lists: Sequence[np.ndarray]) -> np.ndarray:
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
        positives = padded([in_search_order(code_to_index[np.unique(item_codes[order[bounds[q]:bounds[q + 1]]])])
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
            groups[key], names[key] = group_codes(features[key])
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
        exclude = padded([np.unique(np.asarray(x, np.int32)) for x in lists])
    return Queries(features, positives, groups, names, exclude)

"""`TopKEvaluator`: one top-K pass per query batch that every metric family reads."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag._graph import rare_cond
from tfrs_diag._keras import tf
from tfrs_diag.evaluation.queries import (
    Queries,
    as_feature_dict,
    as_ids,
    group_codes,
    group_queries,
    normalize_query_features,
)
from tfrs_diag.evaluation.result import EvaluationResult
from tfrs_diag.evaluation.tradeoff import RerankTables, rerank, sweep
from tfrs_diag.evaluation.towers import CANDIDATE_TOWERS, QUERY_TOWERS, missing_tower, resolve_tower
from tfrs_diag.metrics._base import check_ks
from tfrs_diag.metrics.batch import TopKBatch
from tfrs_diag.metrics.factory import USER_GROUP_PREFIX, metric_families
from tfrs_diag.metrics.topk import PAD, IdMapper, top_k


# ------------------------------------------------------------------ evaluator

#: `run(verbose=1)` shows a progress bar from this many query batches on (fewer take a moment).
PROGRESS_MIN_BATCHES = 4


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
    if not tf.distribute.has_strategy() or getattr(tf.distribute.get_strategy(), "_should_use_with_coordinator", False):
        # ParameterServerStrategy: its variables live on the parameter servers, plain (not
        # ON_READ) and updatable from the coordinator, where callbacks run.
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
                 diversity_embeddings: bool = True, reranker=None, rerank_pool: int = 100):
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
                self.item_groups, self.item_group_names = group_codes(groups)
        self.reranker, self.rerank_pool, self._rerank_tables = reranker, int(rerank_pool), None
        if reranker is not None:
            from tfrs_diag.layers.rerank import ReRanker  # noqa: PLC0415  (layers import TFRS)

            if not isinstance(reranker, ReRanker):
                raise TypeError(f"reranker must be a tfrs_diag.layers.ReRanker (MMR, DPP, Calibrated, EpsilonGreedy, "
                                f"Boltzmann), got {type(reranker).__name__}")
            if self.rerank_pool < max(self.ks):
                raise ValueError(f"rerank_pool ({rerank_pool}) must be at least the largest k ({max(self.ks)})")
            self.rerank_pool = min(self.rerank_pool, n)
            self._rerank_tables = RerankTables(reranker, n, self.item_groups, item_is_head, self.item_popularity)
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
                raise missing_tower(model, "query_model", QUERY_TOWERS)
            tower = model
        return tower

    def candidate_tower(self, model, candidate_model=None):
        """The candidate tower: ``candidate_model`` (or the constructor's), else a tower
        attribute of ``model`` (`CANDIDATE_TOWERS`)."""
        tower = resolve_tower(model, candidate_model if candidate_model is not None else self.candidate_model,
                              CANDIDATE_TOWERS, "candidate_model")
        if tower is None:
            raise missing_tower(model, "candidate_model", CANDIDATE_TOWERS, " (or candidate_embeddings=)")
        return tower

    def candidate_embeddings(self, model, candidate_model=None) -> tf.Tensor:
        """Embeddings of every candidate, computed once per evaluation (in chunks)."""
        tower = self.candidate_tower(model, candidate_model)
        return tf.concat([tf.cast(tower(tf.constant(self.candidate_ids[i:i + 8192])), tf.float32)
                          for i in range(0, len(self.candidate_ids), 8192)], axis=0)

    @property
    def user_group_keys(self) -> tuple[str, ...]:
        """The features whose values define the user groups reported."""
        return self._user_group_keys

    def run(self, model_or_query_tower, candidate_model=None, candidate_embeddings=None, *,
            query_model=None, verbose: int = 0) -> EvaluationResult:
        """Evaluates ``model_or_query_tower`` (a TFRS model with towers, or a query tower).

        ``query_model``/``candidate_model`` (a tower, or the name of the model's attribute)
        override the constructor's; ``candidate_embeddings`` ([num candidates, d]) skips
        the candidate tower. ``verbose=1`` shows a progress bar over the query batches
        when there are `PROGRESS_MIN_BATCHES` or more.
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
        progress = (tf.keras.utils.Progbar(len(batches), unit_name="query batch")
                    if verbose and len(batches) >= PROGRESS_MIN_BATCHES else None)
        for i, (features, positives, groups, exclude) in enumerate(batches):
            # The first batch also resets the state, the last also reads every result:
            # one traced call per batch and nothing else.
            out = step_fn(features, cand, positives, groups, exclude, tf.constant(i == 0),
                          tf.constant(i == len(batches) - 1))
            if progress is not None:
                progress.update(i + 1)
        result = collect_results(metrics, self.ks, q.group_names, lambda: reader.read(*out))
        # A diverged tower's top-K lists are arbitrary: say so, so that no one reads them as findings.
        bad_rows = int(tf.reduce_sum(tf.cast(tf.logical_not(tf.reduce_all(tf.math.is_finite(cand), axis=1)), tf.int32)))
        return dataclasses.replace(result, query_key=self.query_key, nonfinite_candidates=bad_rows)

    def sweep(self, model_or_query_tower, values, **run_kwargs) -> list[dict]:
        """The trade-off of the reranker's knob: one `run` per value (the knob restored after).

        Returns one row per value, ``{"knob", "value", "ndcg_at_<K>", "recall_at_<K>",
        "coverage_at_<K>", "ild_at_<K>", "novelty_at_<K>", "aplt_at_<K>", "gini_at_<K>",
        "exposure_gini_at_<K>"}`` (those this evaluation computes), each from one pass's
        re-ranked lists. ``run_kwargs`` go to `run`.
        """
        return sweep(self, model_or_query_tower, values, **run_kwargs)

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
            tables = self._rerank_tables
            top = top_k(query_tower(_copy(features)), cand, self.rerank_pool if tables else k_max, exclude)
            indices = top.indices if tables is None else rerank(top, cand, tables, k_max)
            # group_queries stores positives in search order (in_search_order).
            batch = TopKBatch(indices, positives, user_groups=groups, exclude=exclude,
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

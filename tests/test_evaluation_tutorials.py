"""`evaluate` and `BeyondAccuracy` on the official TFRS tutorials' models (tests/tutorial_models.py).

Every value is checked against a brute-force numpy reference written here from the
metric definitions (docs/metrics.md): the towers embed the queries and the catalog, numpy
scores every candidate, sorts, and counts hits. Nothing here reuses tfrs_diag's metric code.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_diag
from tfrs_diag import summary
from tfrs_diag.callbacks import BeyondAccuracy

from tutorial_models import cases, movielens_like

RETRIEVAL = ["quickstart", "basic_retrieval", "deep_retrieval", "multitask", "sequential", "hashed",
             "own_train_step", "xla_two_tower"]
K = (5, 10)
ACCURACY = ("recall", "ndcg", "mrr", "hit_rate", "coverage")


# ------------------------------------------------------------------ the numpy reference


def _tower_input(features, names, rows):
    if isinstance(names, str):
        return tf.constant(features[names][rows])
    return {n: tf.constant(features[n][rows]) for n in names}


def reference(query_tower, candidate_tower, candidates, features, *, item_key, query_features, query_key=None,
              ks=K, exclude_seen=None, groups=None):
    """Brute force: per query, score every candidate, sort, and count hits (numpy, float64).

    Queries are the distinct ``query_key`` values (first row's features), or every row
    without ``query_key``. ``groups``: a feature name; returns per-group values too.
    """
    n = len(features[item_key])
    if query_key is None:
        members = [[r] for r in range(n)]
    else:
        by_id: dict = {}
        for r, q in enumerate(features[query_key].tolist()):
            by_id.setdefault(q, []).append(r)
        members = list(by_id.values())
    first = np.array([m[0] for m in members])
    q_emb = np.asarray(query_tower(_tower_input(features, query_features, first)), np.float64)
    c_emb = np.asarray(candidate_tower(tf.constant(candidates)), np.float64)
    scores = q_emb @ c_emb.T
    index = {c: i for i, c in enumerate(candidates.tolist())}
    if exclude_seen is not None:
        seen: dict = {}
        for q, it in zip(exclude_seen[query_key].tolist(), exclude_seen[item_key].tolist()):
            seen.setdefault(q, set()).add(index[it])
        for i, m in enumerate(members):
            for j in seen.get(features[query_key][m[0]].item(), ()):
                scores[i, j] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    out: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    for k in ks:
        top = order[:, :k]
        rec, ndcg, mrr, hit = [], [], [], []
        for i, m in enumerate(members):
            pos = {index[features[item_key][r].item()] for r in m}
            hits = np.array([t in pos for t in top[i]], float)
            disc = 1.0 / np.log2(np.arange(2, k + 2))
            rec.append(hits.sum() / len(pos))
            ndcg.append((hits * disc).sum() / disc[: min(len(pos), k)].sum())
            mrr.append(1.0 / (np.argmax(hits) + 1) if hits.any() else 0.0)
            hit.append(float(hits.any()))
        for name, values in (("recall", rec), ("ndcg", ndcg), ("mrr", mrr), ("hit_rate", hit)):
            per_query[f"{name}_at_{k}"] = np.array(values)
            out[f"{name}_at_{k}"] = float(np.mean(values))
        out[f"coverage_at_{k}"] = len(np.unique(top)) / len(candidates)
    out["queries"] = len(members)
    if groups is not None:
        labels = np.array([str(features[groups][m[0]]) for m in members])
        for g in np.unique(labels):
            sel = labels == g
            out[f"{g}/count"] = int(sel.sum())
            for name, values in per_query.items():
                out[f"{g}/{name}"] = float(values[sel].mean())
    return out


def _case_reference(model, case, features=None, **kw):
    kw.setdefault("query_key", case.query_key)
    kw.setdefault("query_features", case.query_features)
    return reference(getattr(model, case.query_model), getattr(model, case.candidate_model), case.candidates,
                     case.test_features if features is None else features, item_key=case.item_key, **kw)


def _assert_matches(result, expected, ks=K):
    """``result`` (an EvaluationResult or a dict of values) equals the reference."""
    values = result.metrics if isinstance(result, tfrs_diag.EvaluationResult) else result
    for k in ks:
        for name in ACCURACY:
            key = f"{name}_at_{k}"
            assert values[key] == pytest.approx(expected[key], abs=2e-6), key
    if isinstance(result, tfrs_diag.EvaluationResult):
        assert result.queries == expected["queries"]


def _same(a, b):
    assert a.queries == b.queries and a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def zoo():
    return cases(movielens_like())


@pytest.fixture(scope="module")
def trained(zoo, tmp_path_factory):
    """``trained(name)``: the case's model after one epoch with `BeyondAccuracy` (once per module)."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            case = zoo[name]
            tf.keras.utils.set_random_seed(0)
            model = case.build()
            log_dir = tmp_path_factory.mktemp(name)
            # Tutorial style: the unbatched validation dataset, towers found by name.
            cb = BeyondAccuracy(str(log_dir), case.validation, case.candidates, k=K, query_key=case.query_key,
                                item_key=case.item_key, query_features=case.query_features, verbose=0)
            model.fit(case.train.batch(case.batch_size), epochs=1, verbose=0, callbacks=[cb])
            cache[name] = (model, cb, log_dir)
        return cache[name]

    return get


def _evaluate(model, case, features=None, **kw):
    for name in ("query_key", "item_key", "query_features", "candidates"):
        kw.setdefault(name, getattr(case, name))
    return tfrs_diag.evaluate(model, kw.pop("candidates"), case.test_features if features is None else features,
                              k=K, **kw)


# ------------------------------------------------------------------ every tutorial


@pytest.mark.parametrize("name", RETRIEVAL)
def test_evaluate_finds_the_towers_and_matches_numpy(trained, zoo, name):
    model, _, _ = trained(name)
    case = zoo[name]
    expected = _case_reference(model, case)
    result = _evaluate(model, case)
    _assert_matches(result, expected)
    assert result["recall_at_10"] > 0  # something to compare: the models learn in an epoch


@pytest.mark.parametrize("name", RETRIEVAL)
def test_beyond_accuracy_writes_tags_that_match_numpy(trained, zoo, name):
    model, cb, log_dir = trained(name)
    case = zoo[name]
    expected = _case_reference(model, case)
    assert len(cb.history) == 1
    _assert_matches(cb.history[-1][1], expected)
    run = summary.read_run(str(log_dir / "validation"))
    for k in K:
        for metric in ("recall", "ndcg", "mrr", "hit_rate"):
            (step, value), = run.scalars[f"tfrs_diag/rank/{metric}_at_{k}"]
            assert value == pytest.approx(expected[f"{metric}_at_{k}"], abs=2e-6)
        (_, value), = run.scalars[f"tfrs_diag/div/coverage_at_{k}"]
        assert value == pytest.approx(expected[f"coverage_at_{k}"], abs=1e-6)
    assert step == int(model.optimizer.iterations.numpy())
    assert "tfrs_diag/fair/groups" in run.records


# ------------------------------------------------------------------ towers


class _Renamed(tfrs.Model):
    """The quickstart's towers under names no default looks for."""

    def __init__(self, model):
        super().__init__()
        self.users = model.user_model
        self.titles = model.movie_model
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        return self.task(self.users(features["user_id"]), self.titles(features["movie_title"]))


def test_towers_passed_as_objects_or_attribute_names(trained, zoo, tmp_path):
    model, _, _ = trained("quickstart")
    case = zoo["quickstart"]
    expected = _case_reference(model, case)
    default = _evaluate(model, case)
    _same(_evaluate(model, case, query_model=model.user_model, candidate_model=model.movie_model), default)
    _same(_evaluate(model, case, query_model="user_model", candidate_model="movie_model"), default)
    _same(_evaluate(model.user_model, case, candidate_model=model.movie_model), default)  # the query tower itself
    renamed = _Renamed(model)
    _same(_evaluate(renamed, case, query_model="users", candidate_model="titles"), default)
    _same(_evaluate(renamed, case, query_model=renamed.users, candidate_model=renamed.titles), default)
    # A model whose towers are the tutorials' under other names: BeyondAccuracy takes the names too.
    cb = BeyondAccuracy(str(tmp_path), case.validation, case.candidates, k=K, query_key="user_id",
                        item_key="movie_title", query_model="users", candidate_model="titles", log_metrics="all",
                        verbose=0)
    cb.set_model(renamed)
    logs: dict = {}
    cb.on_epoch_end(0, logs)
    _assert_matches({k[4:]: v for k, v in logs.items()}, expected)


def test_missing_towers_raise_naming_the_argument_and_listing_the_layers(trained, zoo, tmp_path):
    model, _, _ = trained("quickstart")
    case = zoo["quickstart"]
    renamed = _Renamed(model)
    with pytest.raises(ValueError, match=r"query_model: found no tower on _Renamed.*attributes are: users, titles, task"):
        _evaluate(renamed, case)
    with pytest.raises(ValueError, match=r"candidate_model: found no tower .*candidate_embeddings.*users, titles, task"):
        _evaluate(renamed, case, query_model="users")
    with pytest.raises(ValueError, match=r"query_model='user_tower': _Renamed has no attribute 'user_tower'; .*users, "
                                         r"titles, task"):
        _evaluate(renamed, case, query_model="user_tower", candidate_model="titles")
    with pytest.raises(TypeError, match="candidate_model: pass the tower"):
        _evaluate(model, case, candidate_model=3)
    cb = BeyondAccuracy(str(tmp_path), case.validation, case.candidates, k=K, query_key="user_id",
                        item_key="movie_title", query_model="users", verbose=0)
    renamed.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    with pytest.raises(ValueError, match=r"candidate_model: .*users, titles, task"):
        renamed.fit(case.train.batch(256), epochs=1, verbose=0, callbacks=[cb])
    assert int(renamed.optimizer.iterations.numpy()) == 0  # failed before training, not after an epoch


# ------------------------------------------------------------------ query shapes


def test_multi_feature_queries_reach_the_tower(trained, zoo):
    model, _, _ = trained("deep_retrieval")
    case = zoo["deep_retrieval"]
    assert case.query_features == ("user_id", "timestamp")
    result = _evaluate(model, case)
    _assert_matches(result, _case_reference(model, case))
    # Other timestamps, other query embeddings, other results: the timestamp reaches the tower.
    late = dict(case.test_features, timestamp=np.full_like(case.test_features["timestamp"],
                                                           case.test_features["timestamp"].max()))
    shifted = _evaluate(model, case, features=late)
    _assert_matches(shifted, _case_reference(model, case, late))
    assert any(abs(shifted[f"ndcg_at_{k}"] - result[f"ndcg_at_{k}"]) > 1e-4 for k in K)
    # Without query_key every row is its own query, with its own timestamp.
    rows = _evaluate(model, case, query_key=None)
    assert rows.queries == len(case.test_features["user_id"]) > result.queries
    _assert_matches(rows, _case_reference(model, case, query_key=None))


def test_sequence_queries_are_one_query_per_row(trained, zoo):
    model, _, _ = trained("sequential")
    case = zoo["sequential"]
    features = case.test_features
    assert features["context_movie_id"].ndim == 2 and case.query_key is None
    result = _evaluate(model, case)
    assert result.queries == len(features["label_movie_id"])
    _assert_matches(result, _case_reference(model, case))
    with pytest.raises(ValueError, match=r"query_key: 'context_movie_id' has shape \(\d+, 5\).*1-D id.*leave "
                                         r"query_key out"):
        _evaluate(model, case, query_key="context_movie_id")
    with pytest.raises(ValueError, match="exclude_seen: needs query_key"):
        _evaluate(model, case, exclude_seen=features)


def test_user_groups_are_per_query_in_both_modes(trained, zoo):
    # Grouped by user id: the group of a query is its user's.
    model, _, _ = trained("quickstart")
    case = zoo["quickstart"]
    features = dict(case.test_features, parity=np.array([int(u) % 2 for u in case.test_features["user_id"]]))
    result = _evaluate(model, case, features=features, user_group_keys=("parity",))
    expected = _case_reference(model, case, features, groups="parity")
    for row in result.tables["parity"]:
        assert row["count"] == expected[f"{row['group']}/count"]
        for k in K:
            for metric in ("recall", "ndcg", "hit_rate"):
                assert row[f"{metric}_at_{k}"] == pytest.approx(expected[f"{row['group']}/{metric}_at_{k}"], abs=2e-6)
    # One query per row: each row's group.
    model, _, _ = trained("sequential")
    case = zoo["sequential"]
    features = dict(case.test_features, last=np.array([int(s[-1]) % 3 for s in case.test_features["context_movie_id"]]))
    result = _evaluate(model, case, features=features, user_group_keys=("last",))
    expected = _case_reference(model, case, features, groups="last")
    assert sum(r["count"] for r in result.tables["last"]) == result.queries
    for row in result.tables["last"]:
        assert row["count"] == expected[f"{row['group']}/count"]
        assert row["ndcg_at_10"] == pytest.approx(expected[f"{row['group']}/ndcg_at_10"], abs=2e-6)


def test_exclude_seen_is_per_query(trained, zoo):
    model, _, _ = trained("quickstart")
    case = zoo["quickstart"]
    seen = {k: v for k, v in zip(("user_id", "movie_title"), next(iter(
        case.train.batch(100_000).map(lambda x: (x["user_id"], x["movie_title"])).as_numpy_iterator())))}
    seen = {k: np.char.decode(v.astype(np.bytes_), "utf-8") for k, v in seen.items()}
    result = _evaluate(model, case, exclude_seen=seen)
    _assert_matches(result, _case_reference(model, case, exclude_seen=seen))
    assert result["recall_at_10"] != pytest.approx(_evaluate(model, case)["recall_at_10"], abs=1e-6)


# ------------------------------------------------------------------ inputs


@pytest.mark.parametrize("name", ["quickstart", "sequential", "hashed"])
def test_datasets_of_each_kind_give_the_same_result_as_dicts(trained, zoo, name):
    model, _, _ = trained(name)
    case = zoo[name]
    features = case.test_features
    expected = _evaluate(model, case)
    unbatched = tf.data.Dataset.from_tensor_slices(features)
    _same(_evaluate(model, case, features=unbatched), expected)
    _same(_evaluate(model, case, features=unbatched.batch(4096)), expected)
    _same(_evaluate(model, case, features=unbatched.batch(64).prefetch(2)), expected)
    if name != "quickstart":  # the element shapes above are what differs between the cases
        return
    # drop_remainder: static batch shapes, and the dropped rows are not evaluated.
    kept = (len(features[case.item_key]) // 128) * 128
    _same(_evaluate(model, case, features=unbatched.batch(128, drop_remainder=True)),
          _evaluate(model, case, features={k: v[:kept] for k, v in features.items()}))
    movies = tf.data.Dataset.from_tensor_slices(case.candidates)  # the tutorials' catalog dataset
    _same(_evaluate(model, case, candidates=movies), expected)
    _same(_evaluate(model, case, candidates=movies.batch(7)), expected)
    _same(_evaluate(model, case, candidates=list(case.candidates)), expected)


def test_bad_inputs_name_the_argument(trained, zoo):
    model, _, _ = trained("quickstart")
    case = zoo["quickstart"]
    pairs = tf.data.Dataset.from_tensor_slices((case.test_features["user_id"], case.test_features["movie_title"]))
    with pytest.raises(ValueError, match=r"data: a tf.data.Dataset must yield feature dicts.*map\(lambda x, y: x\)"):
        _evaluate(model, case, features=pairs)
    with pytest.raises(ValueError, match="data: pass a feature dict of arrays"):
        _evaluate(model, case, features=[("1", "a")])
    with pytest.raises(ValueError, match="data: the dataset is empty"):
        _evaluate(model, case, features=tf.data.Dataset.from_tensor_slices(case.test_features).take(0))
    catalog = tf.data.Dataset.from_tensor_slices({"movie_title": case.candidates})
    with pytest.raises(ValueError, match=r"candidates: a tf.data.Dataset of candidates must yield ids.*"
                                         r"map\(lambda x: x\['movie_title'\]\)"):
        _evaluate(model, case, candidates=catalog)
    with pytest.raises(ValueError, match="candidates: pass a non-empty 1-D array"):
        _evaluate(model, case, candidates=case.candidates[:, None])
    with pytest.raises(ValueError, match="query_features: pass a feature name"):
        _evaluate(model, case, query_features=[1])
    with pytest.raises(KeyError, match=r"query_features: 'timestamp' is not a feature.*available keys"):
        _evaluate(model, case, query_features=("user_id", "timestamp"))


def test_towers_get_copies_and_user_data_is_left_alone(trained, zoo):
    model, _, _ = trained("deep_retrieval")
    case = zoo["deep_retrieval"]
    features = dict(case.test_features)
    before = {k: v.copy() for k, v in features.items()}

    def popping_tower(inputs):  # a tower that consumes its input dict
        timestamp = inputs.pop("timestamp")
        return model.query_model({"user_id": inputs.pop("user_id"), "timestamp": timestamp})

    evaluator = tfrs_diag.TopKEvaluator(case.candidates, features, K, query_key="user_id", item_key="movie_title",
                                        query_features=("user_id", "timestamp"), batch_size=16)
    first = evaluator.run(model, query_model=popping_tower)
    _same(evaluator.run(model, query_model=popping_tower), first)  # its batches are intact
    _same(first, _evaluate(model, case))
    assert features.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(features[k], before[k])


# ------------------------------------------------------------------ distribution


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "deep_retrieval"])
def test_mirrored_strategy_equals_one_device(zoo, name, tmp_path, mirrored_strategy):
    case = zoo[name]
    tf.keras.utils.set_random_seed(0)
    with mirrored_strategy.scope():
        model = case.build()
    cb = BeyondAccuracy(str(tmp_path), case.validation, case.candidates, k=K, query_key=case.query_key,
                        item_key=case.item_key, query_features=case.query_features, verbose=0)
    model.fit(case.train.batch(case.batch_size), epochs=1, verbose=0, callbacks=[cb])
    distributed = cb.history[-1][1]
    one_device = _evaluate(model, case)  # outside the scope, on the trained weights
    _same(distributed, one_device)
    _assert_matches(distributed, _case_reference(model, case))
    with mirrored_strategy.scope():
        _same(_evaluate(model, case), one_device)
    (_, value), = summary.read_run(str(tmp_path / "validation")).scalars["tfrs_diag/rank/ndcg_at_10"]
    assert value == pytest.approx(one_device["ndcg_at_10"], abs=1e-6)

"""The explainers on the TFRS tutorials' models (tests/tutorial_models.py), with no adapter written.

The reference is a brute-force Shapley value of our own: every coalition enumerated in
plain Python, the model called on feature dicts whose features are swapped whole between
the explained row and each background row. The auto-found lookup/head split must agree
with it to 1e-4 (exact Shapley in embedding space equals it when each embedder reads one
feature), and so must the input-space fallback on a model the split cannot handle.
"""

import glob
import itertools
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from tensorboard.compat.proto import event_pb2

import tfrs_diag
import tutorial_models as tm
from tfrs_diag import summary
from tfrs_diag.explain import (
    IntegratedGradients,
    LimeSurrogate,
    Occlusion,
    PermutationImportance,
    RetrievalAdapter,
    Shapley,
)
from tfrs_diag.explain.discovery import AutoAdapter, InputSpaceAdapter
from tfrs_diag.explain.writer import CHART_TAG, TABLE_TAG


@pytest.fixture(scope="module")
def data():
    return tm.movielens_like(num_users=40, num_movies=50, num_ratings=1500)


@pytest.fixture(scope="module")
def zoo(data):
    return tm.cases(data)


def _rows(dataset, n):
    batch = next(iter(dataset.batch(n)))
    if isinstance(batch, tuple):  # (features, label) of the plain Keras cases
        batch = batch[0]
    return {k: v.numpy() for k, v in batch.items()}


def _take(d, lo, hi):
    return {k: v[lo:hi] for k, v in d.items()}


def _trained(case, epochs=1):
    tf.keras.utils.set_random_seed(0)
    model = case.build()
    model.fit(case.train.batch(case.batch_size), epochs=epochs, verbose=0)
    return model


def _model_score(model, output=None):
    def score(rows):
        y = model({k: tf.constant(v) for k, v in rows.items()}, training=False)
        y = output(y) if output is not None else y
        return np.asarray(y, np.float64).reshape(-1)
    return score


def brute_force_shapley(score, examples, background, features):
    """Shapley values by enumeration in input space, and the base value.

    ``v(S) = mean_b score(row with the features in S from the example, the rest from
    background row b)``; ``phi_g = sum_{S without g} |S|!(F-|S|-1)!/F! (v(S+g) - v(S))``.
    Keys of the background that are not in ``features`` always come from the background.
    """
    f = len(features)
    m = len(next(iter(background.values())))
    n = len(examples[features[0]])
    coalitions = list(itertools.product((0, 1), repeat=f))
    values = np.zeros((n, f))
    for i in range(n):
        rows = {k: [] for k in background}
        for s in coalitions:
            for k in background:
                if k in features and s[features.index(k)]:
                    rows[k].append(np.repeat(examples[k][i:i + 1], m, axis=0))
                else:
                    rows[k].append(background[k])
        out = score({k: np.concatenate(v) for k, v in rows.items()}).reshape(len(coalitions), m).mean(axis=1)
        v = dict(zip(coalitions, out))
        for g in range(f):
            for s in coalitions:
                if s[g]:
                    continue
                size = sum(s)
                w = math.factorial(size) * math.factorial(f - size - 1) / math.factorial(f)
                v_with = v[s[:g] + (1,) + s[g + 1:]]
                values[i, g] += w * (v_with - v[s])
    return values, float(np.mean(score(background)))


# ------------------------------------------------------------------ ranking tutorials, auto split

RANKING = {
    "basic_ranking": ("user_id", "movie_title"),
    "batchnorm_dropout": ("user_id", "movie_title"),
    "dcn": tuple(tm._DCN_STR + tm._DCN_INT),
    "functional_ctr": ("user_index", "movie_index"),
    "subclassed_ctr": ("user_index", "movie_index"),
    "listwise": ("user_id", "movie_title"),
}


@pytest.mark.parametrize("name", list(RANKING))
def test_auto_split_equals_brute_force_shapley(zoo, name):
    case = zoo[name]
    model = _trained(case)
    rows = _rows(case.validation, 16)
    background, examples = _take(rows, 0, 6 if name == "dcn" else 10), _take(rows, 10, 13)
    before = {k: v.copy() for k, v in background.items()}
    output = (lambda y: y[:, 0, 0]) if name == "listwise" else None  # the first list item's score

    explainer = Shapley(model, background, output=output, mode="exact")
    a = explainer.attribute(examples)

    assert explainer.feature_space == "embedding" and isinstance(explainer.adapter, AutoAdapter)
    assert a.group_names == RANKING[name]  # the label and unused columns are not players
    assert a.extras["space"] == "embedding"
    expected, base = brute_force_shapley(_model_score(model, output), examples, background, list(RANKING[name]))
    np.testing.assert_allclose(a.values, expected, atol=1e-4)
    assert np.abs(expected).max() > 1e-3  # a trained model: the comparison is not of zeros
    # Efficiency: the values sum to f(x) - E[f(background)].
    np.testing.assert_allclose(a.outputs, _model_score(model, output)(examples), atol=1e-5)
    np.testing.assert_allclose(a.base_value, base, atol=1e-5)
    np.testing.assert_allclose(a.values.sum(1), a.outputs - base, atol=1e-4)
    # The user's rows are untouched (the ranking tutorials' compute_loss pops the label).
    assert background.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(background[k], before[k])


def test_basic_ranking_split_finds_the_tutorial_towers(zoo):
    model = _trained(zoo["basic_ranking"])
    background = _rows(zoo["basic_ranking"].validation, 8)
    adapter = Shapley(model, background).adapter
    inner = model.ranking_model
    assert [(s.layer, s.feature) for s in adapter.sites] == [(inner.user_embeddings, "user_id"),
                                                             (inner.movie_embeddings, "movie_title")]
    # Each tower ends in its Embedding: the "mean"/"oov" baselines work on the tutorial model.
    oov = Shapley(model, background, baseline="oov").attribute(_take(background, 0, 2))
    np.testing.assert_allclose(oov.values.sum(1) + oov.base_value, oov.outputs, atol=1e-4)
    # The instance's call methods are restored: no wrapper is left on the user's layers.
    assert all("call" not in layer.__dict__ for layer in model._flatten_layers(include_self=True))
    # Integrated gradients runs at the found embeddings; its completeness gap is reported.
    ig = IntegratedGradients(model, background, steps=16).attribute(_take(background, 0, 3))
    assert ig.extras["space"] == "embedding" and np.all(np.isfinite(ig.values)) and np.all(ig.delta < 0.05)


class _MovieOnly(tm._RankingModel):
    """The basic ranking tutorial's model with the user tower's output zeroed: a planted dummy."""

    def call(self, inputs):
        user_id, movie_title = inputs
        user_embedding = 0.0 * self.user_embeddings(user_id)
        return self.ratings(tf.concat([user_embedding, self.movie_embeddings(movie_title)], axis=1))


def test_score_of_one_feature_gets_all_the_attribution(zoo, data):
    tf.keras.utils.set_random_seed(0)
    model = tm._RankingTask(_MovieOnly(np.unique(data.ratings["user_id"]), np.unique(data.movies)))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(zoo["basic_ranking"].train.batch(256), epochs=1, verbose=0)
    rows = _rows(zoo["basic_ranking"].validation, 30)
    a = Shapley(model, _take(rows, 0, 20)).attribute(_take(rows, 20, 30))
    np.testing.assert_allclose(a["user_id"], 0.0, atol=1e-6)  # the dummy gets nothing ...
    np.testing.assert_allclose(a["movie_title"], a.outputs - a.base_value, atol=1e-5)  # ... the movie everything
    assert np.abs(a["movie_title"]).max() > 1e-3


def test_planted_movie_effect_is_learned_and_found(data):
    """Ratings that depend on the movie only: after training, the movie carries the attribution."""
    r = data.ratings
    planted = {"user_id": r["user_id"], "movie_title": r["movie_title"],
               "user_rating": (1.0 + 4.0 * (np.searchsorted(data.movies, r["movie_title"]) % 2)).astype(np.float32)}
    tf.keras.utils.set_random_seed(0)
    model = tm.basic_ranking(data)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    model.fit(tf.data.Dataset.from_tensor_slices(planted).batch(128), epochs=4, verbose=0)
    background, examples = _take(planted, 0, 20), _take(planted, 100, 120)
    a = Shapley(model, background).attribute(examples)
    share = np.abs(a["movie_title"]).mean() / np.abs(a.values).sum(1).mean()
    corr = np.corrcoef(a["movie_title"], examples["user_rating"])[0, 1]
    assert share > 0.8, a  # (0.91 with this seed; an even split would be 0.5)
    # the movie's attributions follow the planted rating: the 5-star movies get positive values
    assert corr > 0.8


# ------------------------------------------------------------------ the input-space fallback


class _CrossedRanking(tfrs.Model):
    """A ranking model with a feature cross computed from raw ids in call: no per-feature split."""

    def __init__(self, data, bins=64):
        super().__init__()
        self.user = tm._lookup_tower(np.unique(data.ratings["user_id"]), 4)
        self.cross = tf.keras.Sequential([tf.keras.layers.Hashing(bins), tf.keras.layers.Embedding(bins, 4)])
        self.head = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())

    def call(self, features):
        crossed = tf.strings.join([features["user_id"], features["movie_title"]], separator="|")
        return self.head(tf.concat([self.user(features["user_id"]), self.cross(crossed)], axis=1))

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        return self.task(labels=labels, predictions=self(features))


@pytest.fixture
def crossed(zoo, data):
    model = _CrossedRanking(data)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(zoo["basic_ranking"].train.batch(256), epochs=1, verbose=0)
    return model, _rows(zoo["basic_ranking"].validation, 16)


def test_input_space_fallback_equals_brute_force(crossed):
    model, rows = crossed
    background, examples = _take(rows, 0, 10), _take(rows, 10, 13)
    with pytest.warns(UserWarning, match="cannot split _CrossedRanking.*movie_title.*input space"):
        explainer = Shapley(model, background, mode="exact")
    assert explainer.feature_space == "input" and isinstance(explainer.adapter, InputSpaceAdapter)
    a = explainer.attribute(examples)
    assert a.group_names == ("user_id", "movie_title") and a.extras["space"] == "input"
    expected, base = brute_force_shapley(_model_score(model), examples, background, ["user_id", "movie_title"])
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(a.values, expected, atol=1e-4)
    np.testing.assert_allclose(a.values.sum(1) + base, _model_score(model)(examples), atol=1e-4)
    assert "user_rating" in background  # compute_loss pops the label; our copies, not the user's dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sampled = Shapley(model, background, mode="sampled", num_permutations=8).attribute(examples)
        np.testing.assert_allclose(sampled.values.sum(1) + sampled.base_value, sampled.outputs, atol=1e-4)
        occ = Occlusion(model, background).attribute(examples)
        np.testing.assert_allclose(occ.base_value, base, atol=1e-5)
        lime = LimeSurrogate(model, background).attribute(examples)
        assert lime.values.shape == (3, 2) and np.all(lime.fidelity <= 1 + 1e-9)
        pi = PermutationImportance(model, metric="rmse", target="user_rating", repeats=2).attribute(rows)
        assert pi.values.shape == (1, 2) and pi.extras["space"] == "input"
        # Integrated gradients has no path between string ids: the error names the method and others.
        with pytest.raises(ValueError, match="IntegratedGradients.*input space.*Use Shapley"):
            IntegratedGradients(model, background)
        with pytest.raises(ValueError, match="baseline='mean'.*baseline='background'"):
            Shapley(model, background, baseline="mean")
    with pytest.raises(ValueError, match="space='embedding'.*movie_title"):
        Shapley(model, background, space="embedding")


def test_forced_input_space_agrees_with_the_split(zoo):
    model = _trained(zoo["basic_ranking"])
    rows = _rows(zoo["basic_ranking"].validation, 16)
    background, examples = _take(rows, 0, 10), _take(rows, 10, 14)
    split = Shapley(model, background).attribute(examples)
    raw = Shapley(model, background, space="input")
    assert raw.feature_space == "input"
    np.testing.assert_allclose(raw.attribute(examples).values, split.values, atol=1e-4)
    # A plain score function of feature dicts: input space, no warning, the same values.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_function = Shapley(lambda f: model(f)[:, 0] * 2.0, background)
    assert by_function.feature_space == "input"
    np.testing.assert_allclose(by_function.attribute(examples).values, 2.0 * split.values, atol=1e-4)
    # New values after the first call extend the tables (the traced head reads them).
    more = _take(rows, 14, 16)
    np.testing.assert_allclose(raw.attribute(more).values, Shapley(model, background).attribute(more).values,
                               atol=1e-4)


# ------------------------------------------------------------------ retrieval


def _tower_score(model, query, candidate, q_inputs, c_inputs):
    def score(rows):
        t = {k: tf.constant(v) for k, v in rows.items()}
        q = getattr(model, query)(tf.nest.map_structure(lambda n: t[n], q_inputs))
        c = getattr(model, candidate)(tf.nest.map_structure(lambda n: t[n], c_inputs))
        return tf.reduce_sum(q * c, axis=1).numpy().astype(np.float64)
    return score


@pytest.mark.parametrize("name,towers,q_inputs,c_inputs", [
    pytest.param("quickstart", ("user_model", "movie_model"), "user_id", "movie_title", marks=pytest.mark.slow),
    pytest.param("deep_retrieval", ("query_model", "candidate_model"),
                 {"user_id": "user_id", "timestamp": "timestamp"}, "movie_title", marks=pytest.mark.slow),
    ("sequential", ("_query_model", "_candidate_model"), "context_movie_id", "label_movie_id"),
])
def test_retrieval_towers_found_by_name(zoo, name, towers, q_inputs, c_inputs):
    case = zoo[name]
    model = _trained(case)
    rows = _rows(case.validation, 14)
    background, examples = _take(rows, 0, 10), _take(rows, 10, 14)
    explainer = Shapley(model, background)
    adapter = explainer.adapter
    assert isinstance(adapter, RetrievalAdapter) and explainer.feature_space == "embedding"
    q_features = sorted(tf.nest.flatten(q_inputs), key=list(rows).index)  # in the rows' order
    features = q_features + [c_inputs]
    assert adapter.query_features == tuple(q_features) and adapter.candidate_features == (c_inputs,)
    a = explainer.attribute(examples)
    expected, base = brute_force_shapley(_tower_score(model, *towers, q_inputs, c_inputs), examples, background,
                                         features)
    assert np.abs(expected).max() > 1e-4
    np.testing.assert_allclose(a.values, expected, atol=1e-4)
    np.testing.assert_allclose(a.values.sum(1) + base, a.outputs, atol=1e-4)


def test_retrieval_towers_given_and_recall_importance(zoo, data):
    case = zoo["multitask"]  # has its own call returning a tuple: towers must be named
    model = _trained(case)
    rows = _rows(case.validation, 40)
    background = _take(rows, 0, 10)
    with pytest.raises(ValueError, match="tuple of 3.*output=.*query_model="):
        Shapley(model, background)
    by_name = Shapley(model, background, query_model="user_model", candidate_model="movie_model")
    by_layer = Shapley(model, background, query_model=model.user_model, candidate_model=model.movie_model)
    a, b = by_name.attribute(_take(rows, 10, 13)), by_layer.attribute(_take(rows, 10, 13))
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    assert "user_rating" in background  # compute_loss popped it from our copy only
    rating = Shapley(model, background, output=2).attribute(_take(rows, 10, 13))  # the rating head
    np.testing.assert_allclose(rating.outputs, model(_take(rows, 10, 13))[2].numpy().ravel(), atol=1e-5)
    recall = PermutationImportance(model, metric="recall@10", candidates={"movie_title": data.movies},
                                   query_model="user_model", candidate_model="movie_model", repeats=2)
    r = recall.attribute(rows)
    assert r.group_names == ("user_id", "movie_title") and np.all(np.isfinite(r.values))


# ------------------------------------------------------------------ errors and the callback


def test_unexplainable_models_say_what_to_do(zoo):
    case = zoo["listwise"]
    model = case.build()
    rows = _rows(case.validation, 8)
    with pytest.raises(ValueError, match=r"shape \(8, 5, 1\).*output=<callable>"):
        Shapley(model, rows)
    with pytest.raises(ValueError, match="background"):
        Shapley(model, baseline="mean")

    class _NoCall(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.tower = tf.keras.layers.Embedding(10, 2)

        def compute_loss(self, features, training=False):
            return tf.reduce_sum(self.tower(features["x"]))

    with pytest.raises(TypeError, match="embed\\(features\\).*query_model="):
        Shapley(_NoCall(), {"x": np.arange(4)})
    with pytest.raises(ValueError, match="pass both query_model= and candidate_model="):
        Shapley(zoo["quickstart"].build(), _rows(zoo["quickstart"].validation, 4), query_model="user_model")
    with pytest.raises(ValueError, match="query_model='user_tower'.*no attribute 'user_tower'"):
        Shapley(zoo["quickstart"].build(), _rows(zoo["quickstart"].validation, 4), query_model="user_tower",
                candidate_model="movie_model")


def test_explanation_callback_on_the_ranking_tutorial(zoo, tmp_path):
    case = zoo["basic_ranking"]
    tf.keras.utils.set_random_seed(0)
    model = case.build()
    rows = _rows(case.validation, 23)
    background, examples = _take(rows, 0, 20), _take(rows, 20, 23)
    cb = tfrs_diag.callbacks.ExplanationCallback(examples, log_dir=str(tmp_path), background=background,
                                                 label_key=("user_id", "movie_title"))
    model.fit(case.train.batch(256), epochs=2, verbose=0, callbacks=[cb])
    summary.close_writer(str(tmp_path))

    run = summary.read_run(str(tmp_path / "train"))
    records = run.records[TABLE_TAG]
    assert [r["epoch"] for _, r in records] == [0, 1]
    for (_, payload), (_, attribution) in zip(records, cb.history):
        assert payload["group_names"] == ["user_id", "movie_title"]
        assert payload["examples"][0] == f"{examples['user_id'][0].decode()} {examples['movie_title'][0].decode()}"
        np.testing.assert_allclose(np.array(payload["values"]).sum(1) + payload["base_value"], payload["outputs"],
                                   atol=1e-4)
    # the last record explains the model after fit (the explainer was refreshed, not stale)
    np.testing.assert_allclose(records[-1][1]["outputs"], _model_score(model)(examples), atol=1e-5)
    for group in ("user_id", "movie_title"):
        assert len(run.scalars[summary.tag("explain", "mean_abs", group)]) == 2
    images = [v for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
              for raw in tf.data.TFRecordDataset(path)
              for v in event_pb2.Event.FromString(raw.numpy()).summary.value if v.tag == CHART_TAG]
    assert len(images) == 2
    assert "user_rating" in background and "user_rating" in examples

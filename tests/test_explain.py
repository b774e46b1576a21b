"""tfrs_diag.explain: Shapley axioms, IG completeness, occlusion, LIME, permutation importance,
retrieval pairs and bad input, on toy adapters with known answers and small TFRS models."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag import datasets, models
from tfrs_diag.explain import (
    Attribution,
    IntegratedGradients,
    LimeSurrogate,
    Occlusion,
    PermutationImportance,
    RankingAdapter,
    RetrievalAdapter,
    Shapley,
)
from tfrs_diag.explain.integrated_gradients import quadrature
from tfrs_diag.explain.permutation import auc
from tfrs_diag.explain.shapley import all_coalitions, shapley_weights


class ToyAdapter:
    """Integer features f0..f{k-1}, each looked up in a fixed random table, then ``head_fn``.

    ``shared`` lists features that use f0's table (interchangeable with f0).
    """

    def __init__(self, num_features, head_fn, dim=3, vocab=12, shared=(), seed=0):
        rng = np.random.default_rng(seed)
        self.feature_names = tuple(f"f{i}" for i in range(num_features))
        self.tables = {n: tf.constant(rng.normal(size=(vocab, dim)).astype(np.float32)) for n in self.feature_names}
        for n in shared:
            self.tables[n] = self.tables["f0"]
        self.head_fn = head_fn

    def embed(self, features):
        return {n: tf.gather(self.tables[n], features[n]) for n in self.feature_names}

    def head(self, embeddings):
        return self.head_fn(embeddings)


def _rows(adapter, n, seed, vocab=12):
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, vocab, size=n) for name in adapter.feature_names}


def _mlp_head(names, seed=1, activation=tf.tanh, hidden=8):
    rng = np.random.default_rng(seed)
    w1 = tf.constant(rng.normal(size=(3 * len(names), hidden)).astype(np.float32))
    w2 = tf.constant(rng.normal(size=(hidden, 1)).astype(np.float32))

    def head(e):
        x = tf.concat([e[n] for n in names], axis=1)
        return tf.matmul(activation(tf.matmul(x, w1)), w2)[:, 0]

    return head


@pytest.fixture(scope="module")
def small_data():
    return datasets.synthetic(num_users=60, num_items=90, num_interactions=1200, seed=2)


def _take(d, lo, hi):
    return {k: v[lo:hi] for k, v in d.items()}


def _ranking_model(data, hidden=(16, 8), seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = models.RankingModel(data.train, embedding_dim=4, hidden=hidden)
    model(_take(data.train, 0, 2))  # build
    return model


# ------------------------------------------------------------------ the Shapley axioms


def test_shapley_efficiency_on_ranking_model(small_data):
    model = _ranking_model(small_data)
    background, examples = _take(small_data.train, 0, 30), _take(small_data.test, 0, 7)
    a = Shapley(model, background).attribute(examples)
    f_x = model(examples).numpy().ravel()
    f_bg = model(background).numpy().ravel().mean()
    np.testing.assert_allclose(a.outputs, f_x, atol=1e-6)
    np.testing.assert_allclose(a.base_value, f_bg, atol=1e-6)
    np.testing.assert_allclose(a.values.sum(axis=1), f_x - f_bg, atol=1e-5)
    assert a.values.shape == (7, 5) and a.group_names == tuple(model.feature_names)
    assert np.abs(a.values).max() > 1e-3  # not trivially zero


def test_linear_first_layer_shortcut_equals_plain_coalitions(small_data):
    model = _ranking_model(small_data)
    background, examples = _take(small_data.train, 0, 20), _take(small_data.test, 0, 5)
    fast = Shapley(model, background).attribute(examples)
    plain = Shapley(RankingAdapter(model, linear_scorer=False), background).attribute(examples)
    assert RankingAdapter(model).linear_head() is not None
    np.testing.assert_allclose(fast.values, plain.values, atol=1e-5)


def test_symmetry_and_dummy():
    names = ("f0", "f1", "f2", "f3")

    def head(e):  # f0 and f1 enter symmetrically; f3 is ignored
        s = e["f0"] + e["f1"]
        return tf.reduce_sum(tf.tanh(s) * tf.sigmoid(e["f2"]), axis=1) + tf.reduce_sum(s * s, axis=1)

    adapter = ToyAdapter(4, head, shared=("f1",))
    background = _rows(adapter, 25, seed=3)
    background["f1"] = background["f0"].copy()  # interchangeable in the background too
    examples = _rows(adapter, 6, seed=4)
    examples["f1"] = examples["f0"].copy()
    a = Shapley(adapter, background).attribute(examples)
    np.testing.assert_allclose(a["f0"], a["f1"], atol=1e-6)
    np.testing.assert_allclose(a["f3"], 0.0, atol=1e-6)  # float32 round-off only; others are ~1
    assert np.abs(a["f2"]).max() > 1e-3
    assert names == a.group_names


def test_linear_model_closed_form(small_data):
    # hidden=() leaves one Dense(1): f = sum_g w_g . e_g + b, so phi_g = w_g . (e_g(x) - mean_b e_g(b)).
    model = _ranking_model(small_data, hidden=())
    background, examples = _take(small_data.train, 0, 40), _take(small_data.test, 0, 6)
    a = Shapley(model, background).attribute(examples)
    kernel = model.scorer.layers[0].kernel.numpy()[:, 0]
    ex, bg = model.embed(examples), model.embed(background)
    start = 0
    for name in model.feature_names:
        d = ex[name].shape[1]
        expected = (ex[name].numpy() - bg[name].numpy().mean(0)) @ kernel[start:start + d]
        np.testing.assert_allclose(a[name], expected, atol=1e-5, err_msg=name)
        start += d
    # Additive model: occlusion, IG and LIME agree with Shapley, and LIME fits exactly.
    for method in (Occlusion(model, background), IntegratedGradients(model, background, steps=4),
                   LimeSurrogate(model, background)):
        other = method.attribute(examples)
        np.testing.assert_allclose(other.values, a.values, atol=1e-5, err_msg=method.method)
    assert LimeSurrogate(model, background).attribute(examples).fidelity.min() > 1 - 1e-6


def test_shapley_weights_give_known_two_player_values():
    masks = all_coalitions(2)  # {}, {0}, {1}, {0,1}
    v = np.array([[0.0, 1.0, 2.0, 10.0]])
    # phi_0 = (v0 - v{}) / 2 + (v01 - v1) / 2 = 0.5 + 4 = 4.5; phi_1 = 1 + 4.5 = 5.5
    np.testing.assert_allclose(v @ shapley_weights(masks), [[4.5, 5.5]])


def test_baselines_in_embedding_space(small_data):
    model = _ranking_model(small_data)
    background, examples = _take(small_data.train, 0, 30), _take(small_data.test, 0, 4)
    f_x = model(examples).numpy().ravel()
    for baseline in ("oov", "mean", "frequency"):
        a = Shapley(model, background, baseline=baseline).attribute(examples)
        rows = Shapley(model, background, baseline=baseline).baseline_rows()
        assert rows.shape[0] == 1, baseline
        np.testing.assert_allclose(a.values.sum(1), f_x - a.base_value, atol=1e-5, err_msg=baseline)
    oov_row = Shapley(model, background, baseline="oov").baseline_rows()[0]
    first = model.embedders["user_id"].layers[1].embeddings.numpy()[0]  # StringLookup OOV index 0
    np.testing.assert_allclose(oov_row[:4], first)
    freq = Shapley(model, background, baseline="frequency").baseline_rows()[0]
    np.testing.assert_allclose(freq, Shapley(model, background).baseline_rows().mean(0), atol=1e-6)
    # "oov" and "mean" need no background.
    Shapley(model, baseline="mean").attribute(examples)


def test_user_groups_merge_features(small_data):
    model = _ranking_model(small_data)
    background, examples = _take(small_data.train, 0, 20), _take(small_data.test, 0, 4)
    groups = {"user": ["user_id", "user_gender", "user_age_bucket"], "item": ["item_id", "item_category"]}
    a = Shapley(model, background, groups=groups).attribute(examples)
    assert a.group_names == ("user", "item")
    np.testing.assert_allclose(a.values.sum(1), a.outputs - a.base_value, atol=1e-5)
    # Features left out of every group keep the example's value: still efficient over the rest.
    b = Shapley(model, background, groups=["item_id"]).attribute(examples)
    assert b.values.shape == (4, 1)
    np.testing.assert_allclose(b.values[:, 0], b.outputs - b.base_value, atol=1e-5)


# ------------------------------------------------------------------ sampled Shapley


def test_sampled_shapley_close_to_exact_with_covering_stderr():
    adapter = ToyAdapter(7, _mlp_head([f"f{i}" for i in range(7)]))
    background, examples = _rows(adapter, 15, seed=5), _rows(adapter, 8, seed=6)
    exact = Shapley(adapter, background, mode="exact").attribute(examples)
    sampled = Shapley(adapter, background, mode="sampled", num_permutations=64, seed=1).attribute(examples)
    more = Shapley(adapter, background, mode="sampled", num_permutations=512, seed=1).attribute(examples)
    # Antithetic permutations keep efficiency exact.
    np.testing.assert_allclose(sampled.values.sum(1), exact.values.sum(1), atol=1e-5)
    z = np.abs(sampled.values - exact.values) / sampled.stderr
    assert np.all(sampled.stderr > 0)
    assert np.mean(z < 2.0) >= 0.85 and z.max() < 5.0
    assert np.abs(more.values - exact.values).mean() < np.abs(sampled.values - exact.values).mean()
    assert more.stderr.mean() < 0.5 * sampled.stderr.mean()


def test_auto_mode_switches_to_sampled_above_the_limit():
    adapter = ToyAdapter(13, lambda e: tf.add_n([tf.reduce_sum(v, 1) for v in e.values()]))
    background = _rows(adapter, 3, seed=0)
    with pytest.raises(ValueError, match="mode='sampled'"):
        Shapley(adapter, background, mode="exact")
    auto = Shapley(adapter, background)
    assert auto.mode == "sampled"
    a = auto.attribute(_rows(adapter, 2, seed=1))
    assert a.stderr is not None and a.values.shape == (2, 13)


# ------------------------------------------------------------------ integrated gradients


def test_ig_completeness_on_a_smooth_model():
    names = [f"f{i}" for i in range(5)]
    adapter = ToyAdapter(5, _mlp_head(names, activation=tf.tanh))
    background, examples = _rows(adapter, 10, seed=7), _rows(adapter, 6, seed=8)
    coarse = IntegratedGradients(adapter, background, steps=2, integration="riemann_middle").attribute(examples)
    fine = IntegratedGradients(adapter, background, steps=32).attribute(examples)
    exact = Shapley(adapter, background).attribute(examples)
    assert fine.delta.max() < 1e-3
    assert coarse.delta.max() > 10 * fine.delta.max()  # the delta measures the quadrature error
    np.testing.assert_allclose(fine.base_value, exact.base_value, atol=1e-5)
    trapezoid = IntegratedGradients(adapter, background, steps=128, integration="riemann_trapezoid")
    np.testing.assert_allclose(trapezoid.attribute(examples).values, fine.values, atol=2e-3)


def test_quadrature_rules_integrate_polynomials():
    for rule, steps, tol in (("gauss_legendre", 4, 1e-12), ("riemann_middle", 400, 1e-5),
                             ("riemann_trapezoid", 400, 1e-5)):
        a, w = quadrature(steps, rule)
        assert abs(w.sum() - 1) < 1e-12 and abs((w * a ** 3).sum() - 0.25) < tol, rule
    with pytest.raises(ValueError, match="integration"):
        quadrature(4, "simpson")


# ------------------------------------------------------------------ occlusion and LIME


def test_occlusion_sees_no_interaction_that_shapley_splits():
    # f = product of two scalars: each alone at the baseline gives 0, so occlusion gives each
    # the full f(x) while Shapley splits it in half.
    def head(e):
        return e["f0"][:, 0] * e["f1"][:, 0]

    adapter = ToyAdapter(2, head)
    adapter.tables = {n: tf.constant([[0.0], [2.0], [3.0]]) for n in adapter.feature_names}
    background = {"f0": np.array([0]), "f1": np.array([0])}
    examples = {"f0": np.array([1, 2]), "f1": np.array([2, 2])}
    occ = Occlusion(adapter, background).attribute(examples)
    shap_values = Shapley(adapter, background).attribute(examples)
    np.testing.assert_allclose(occ.values, [[6.0, 6.0], [9.0, 9.0]])
    np.testing.assert_allclose(shap_values.values, [[3.0, 3.0], [4.5, 4.5]])


def test_lime_fidelity_drops_with_interactions():
    names = [f"f{i}" for i in range(6)]
    additive = ToyAdapter(6, lambda e: tf.add_n([tf.reduce_sum(tf.tanh(e[n]), 1) for n in names]))
    interacting = ToyAdapter(6, lambda e: tf.reduce_sum(e["f0"] * e["f1"] * e["f2"], 1) + tf.reduce_sum(e["f3"], 1))
    background, examples = _rows(additive, 10, seed=9), _rows(additive, 5, seed=10)
    a = LimeSurrogate(additive, background).attribute(examples)
    b = LimeSurrogate(interacting, background).attribute(examples)
    assert a.fidelity.min() > 1 - 1e-6
    assert b.fidelity.mean() < 0.95
    np.testing.assert_allclose(a.values, Shapley(additive, background).attribute(examples).values, atol=1e-5)
    # More groups than num_samples: sampled coalitions, still an exact fit for the additive model.
    sampled = LimeSurrogate(additive, background, num_samples=40, seed=2)
    assert sampled.coalitions().shape == (40, 6)
    np.testing.assert_allclose(sampled.attribute(examples).values, a.values, atol=1e-4)


# ------------------------------------------------------------------ permutation importance


def _planted_ranking():
    # Rating depends strongly on f0, weakly on f1, not at all on f2.
    def head(e):
        return 3.0 * e["f0"][:, 0] + 0.5 * e["f1"][:, 0] + 0.0 * e["f2"][:, 0]

    adapter = ToyAdapter(3, head)
    rng = np.random.default_rng(11)
    data = _rows(adapter, 400, seed=12)
    scores = head(adapter.embed(data)).numpy()
    data["rating"] = scores + 0.1 * rng.normal(size=400)
    return adapter, data, scores


def test_permutation_importance_ranks_planted_feature_first():
    adapter, data, _ = _planted_ranking()
    a = PermutationImportance(adapter, metric="rmse", target="rating", repeats=4).attribute(data)
    assert a.values.shape == (1, 3)
    assert a.ranking()[0][0] == "f0" and a["f0"][0] > 5 * a["f1"][0] > 0
    assert a["f2"][0] == 0.0
    assert a.extras["metric_value"] < 0.2 and a.stderr.shape == (1, 3) and len(a.extras["std"]) == 3


def test_permutation_importance_auc():
    adapter, data, scores = _planted_ranking()
    data["rating"] = (scores > np.median(scores)).astype(np.float32)
    a = PermutationImportance(adapter, metric="auc", target="rating", repeats=3).attribute(data)
    assert a.extras["metric_value"] > 0.95 and a.ranking()[0][0] == "f0" and a["f2"][0] == 0.0


def test_auc_hand_computed():
    # positives score 0.9 and 0.4; negatives 0.5 and 0.1: 3 of 4 pairs ordered right.
    assert auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)
    assert auc(np.array([1.0, 1.0]), np.array([1, 0])) == pytest.approx(0.5)  # a tie counts half


def _identity_two_tower(n=20):
    model = models.TwoTowerModel(num_users=n, num_items=n, embedding_dim=n)
    model.user_model(tf.constant([0]))
    model.item_model(tf.constant([0]))
    model.user_model.layers[0].embeddings.assign(tf.eye(n))
    model.item_model.layers[0].embeddings.assign(2.0 * tf.eye(n))
    return model


def test_permutation_importance_recall_at_k_for_retrieval():
    model = _identity_two_tower()
    pairs = {"user_index": np.arange(20), "item_index": np.arange(20)}  # user u likes item u
    catalog = {"item_index": np.arange(20)}
    a = PermutationImportance(model, metric="recall@1", candidates=catalog, repeats=3).attribute(pairs)
    assert a.extras["metric_value"] == 1.0
    assert a["user_index"][0] > 0.7 and a["item_index"][0] > 0.7
    with pytest.raises(ValueError, match="candidates"):
        PermutationImportance(model, metric="recall@5")
    with pytest.raises(ValueError, match="retrieval"):
        PermutationImportance(ToyAdapter(2, lambda e: e["f0"][:, 0]), metric="recall@5", candidates=catalog)


# ------------------------------------------------------------------ retrieval pairs


def test_retrieval_pair_attributions_sum_to_score_minus_base(small_data):
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(small_data.users["user_id"], small_data.items["item_id"], embedding_dim=6,
                                 hidden=(8,))
    background, pairs = _take(small_data.train, 0, 25), _take(small_data.test, 0, 6)
    adapter = RetrievalAdapter.from_two_tower(model)
    assert adapter.query_features == ("user_id",) and adapter.candidate_features == ("item_id",)
    a = Shapley(model, background, label_key=("user_id", "item_id")).attribute(pairs)
    score = tf.reduce_sum(model.user_model(pairs["user_id"]) * model.item_model(pairs["item_id"]), 1).numpy()
    bg_score = tf.reduce_sum(model.user_model(background["user_id"]) * model.item_model(background["item_id"]),
                             1).numpy().mean()
    np.testing.assert_allclose(a.outputs, score, atol=1e-5)
    np.testing.assert_allclose(a.base_value, bg_score, atol=1e-5)
    np.testing.assert_allclose(a.values.sum(1), score - bg_score, atol=1e-5)
    assert a.examples[0] == f"{pairs['user_id'][0]} {pairs['item_id'][0]}"


# ------------------------------------------------------------------ bad input


def test_bad_input_names_the_feature(small_data):
    model = _ranking_model(small_data)
    background = _take(small_data.train, 0, 10)
    with pytest.raises(ValueError, match="'user_zip'.*does not take"):
        Shapley(model, background, groups={"user": ["user_id", "user_zip"]})
    no_gender = {k: v for k, v in background.items() if k != "user_gender"}
    with pytest.raises(ValueError, match="background has no feature 'user_gender'"):
        Shapley(model, no_gender)
    wrong = dict(background, user_age_bucket=background["user_age_bucket"].astype(str))
    with pytest.raises(ValueError, match=r"background\['user_age_bucket'\].*integer"):
        Shapley(model, wrong)
    explainer = Shapley(model, background)
    with pytest.raises(ValueError, match=r"examples\['user_id'\].*string"):
        explainer.attribute(dict(_take(small_data.test, 0, 2), user_id=np.array([1, 2])))
    with pytest.raises(ValueError, match="baseline"):
        Shapley(model, background, baseline="zeros")
    with pytest.raises(ValueError, match="background"):
        Shapley(model, baseline="background")
    with pytest.raises(TypeError, match="embed"):
        Shapley(tf.keras.Sequential([tf.keras.layers.Dense(1)]), background)
    with pytest.raises(ValueError, match="two groups"):
        Shapley(model, background, groups={"a": ["user_id"], "b": ["user_id"]})
    with pytest.raises(KeyError, match=r"label_key: \['movie_title'\] not among"):
        Shapley(model, background, label_key=("user_id", "movie_title")).attribute(_take(small_data.test, 0, 2))


def test_chunked_evaluation_matches_one_call(small_data):
    model = _ranking_model(small_data)
    background, examples = _take(small_data.train, 0, 30), _take(small_data.test, 0, 5)
    one = Shapley(model, background).attribute(examples)
    tiny = Shapley(model, background, max_batch_rows=100).attribute(examples)  # chunks coalitions and rows
    np.testing.assert_allclose(tiny.values, one.values, atol=1e-5)
    ig_one = IntegratedGradients(model, background, steps=8).attribute(examples)
    ig_tiny = IntegratedGradients(model, background, steps=8, max_batch_rows=50).attribute(examples)
    np.testing.assert_allclose(ig_tiny.values, ig_one.values, atol=1e-5)


# ------------------------------------------------------------------ Attribution


def test_attribution_round_trip_and_table():
    a = Attribution("shapley", [[0.5, -0.25], [0.0, 1.0]], 3.0, [3.25, 4.0], ("user_id", "item_id"),
                    examples=["u1 i1", "u2 i2"], stderr=[[0.1, 0.1], [0.2, 0.2]])
    b = Attribution.from_dict(a.to_dict())
    np.testing.assert_array_equal(b.values, a.values)
    assert b.examples == a.examples and b.group_names == a.group_names
    text = a.table()
    assert "user_id" in text and "u2 i2" in text and "+0.5000" in text
    assert a.ranking(0) == [("user_id", 0.5), ("item_id", -0.25)]
    with pytest.raises(ValueError, match="group_names"):
        Attribution("x", [[1.0, 2.0]], 0.0, [3.0], ("a",))
    with pytest.raises(KeyError, match="groups"):
        a["nope"]


def test_ig_equals_shapley_on_a_bilinear_two_tower(small_data):
    # score = q . c is bilinear in the two groups: along the straight path IG gives
    # (q - b_q) . (c + b_c) / 2, which is also the two-player Shapley value.
    tf.keras.utils.set_random_seed(1)
    model = models.TwoTowerModel(small_data.users["user_id"], small_data.items["item_id"], embedding_dim=5)
    background, pairs = _take(small_data.train, 0, 15), _take(small_data.test, 0, 5)
    ig = IntegratedGradients(model, background, steps=2).attribute(pairs)
    sv = Shapley(model, background).attribute(pairs)
    assert ig.delta.max() < 1e-5
    np.testing.assert_allclose(ig.values, sv.values, atol=1e-5)
    occ = Occlusion(model, background).attribute(pairs)
    assert np.all(np.isfinite(occ.values)) and occ.values.shape == (5, 2)

"""Re-ranking and exploration layers: NumPy references, exploration rates, SavedModel round trips."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import rerank_reference as ref
import tutorial_models as tm
from tfrs_diag.layers import DPP, MMR, Boltzmann, Calibrated, EpsilonGreedy, ReRankedTopK


def _pool(seed, b=6, n=30, d=6):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(b, n, d)).astype(np.float32)
    scores = rng.normal(size=(b, n)).astype(np.float32)
    groups = rng.integers(0, 3, size=(b, n)).astype(np.int32)
    return scores, emb, groups


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_mmr_cosine_matches_numpy(lam):
    scores, emb, _ = _pool(1)
    got = MMR(lambda_=lam, k=8)({"scores": scores, "embeddings": emb}).numpy()
    for b in range(len(scores)):
        assert got[b].tolist() == ref.mmr(scores[b], ref.cosine(emb[b].astype(float)), lam, 8)


def test_mmr_category_matches_numpy_and_spreads_groups():
    scores, _, groups = _pool(2)
    got = MMR(lambda_=0.2, k=6, similarity="category")({"scores": scores, "groups": groups}).numpy()
    for b in range(len(scores)):
        sim = (groups[b][:, None] == groups[b][None, :]).astype(float)
        assert got[b].tolist() == ref.mmr(scores[b], sim, 0.2, 6)
        # A low lambda cycles through the groups: the first three picks are three groups.
        assert len(set(groups[b][got[b][:3]])) == 3


@pytest.mark.parametrize("theta", [0.2, 0.6, 0.9])
def test_dpp_matches_chen_et_al_greedy(theta):
    # k = 9 > d = 6: the DPP stops at the embedding rank and the rest go by score.
    scores, emb, _ = _pool(3)
    got = DPP(theta=theta, k=9)({"scores": scores, "embeddings": emb}).numpy()
    for b in range(len(scores)):
        assert got[b].tolist() == ref.dpp(scores[b].astype(float), emb[b].astype(float), theta, 9)


def test_dpp_trades_relevance_for_volume_as_theta_falls():
    scores, emb, _ = _pool(4, b=40)
    unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    volumes, relevance = [], []
    for theta in (0.95, 0.5, 0.05):
        picks = DPP(theta=theta, k=5)({"scores": scores, "embeddings": emb}).numpy()
        chosen = np.take_along_axis(unit, picks[..., None], axis=1)
        volumes.append(np.linalg.slogdet(np.einsum("bkd,bjd->bkj", chosen, chosen))[1].mean())
        relevance.append(np.take_along_axis(scores, picks, axis=1).mean())
    # log det S_Y is the DPP's diversity: it grows as theta falls, the scores fall.
    assert volumes[0] < volumes[1] < volumes[2]
    assert relevance[0] > relevance[1] > relevance[2]


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95])
def test_calibrated_matches_steck_greedy(lam):
    scores, _, groups = _pool(5)
    target = [0.5, 0.3, 0.2]
    got = Calibrated(target, lambda_=lam, k=7)({"scores": scores, "groups": groups}).numpy()
    for b in range(len(scores)):
        assert got[b].tolist() == ref.calibrated(scores[b].astype(float), groups[b], target, lam, 7)


def _head_tail_pool(b=3000, n=50, tail=25, seed=0):
    """Tail items score lower on average, as popular items do under a trained model."""
    rng = np.random.default_rng(seed)
    is_tail = np.zeros((b, n), bool)
    is_tail[:, n - tail:] = True
    scores = rng.normal(size=(b, n)) + np.where(is_tail, 0.0, 1.5)
    return scores.astype(np.float32), is_tail


def test_epsilon_greedy_tail_share_is_epsilon_plus_the_rest():
    scores, is_tail = _head_tail_pool()
    k = 10
    top = np.argsort(-scores, axis=1)[:, :k]
    base = np.take_along_axis(is_tail, top, axis=1).mean()
    shares = []
    for eps in (0.0, 0.1, 0.3, 0.6, 1.0):
        picks = EpsilonGreedy(epsilon=eps, k=k, seed=7)({"scores": scores, "is_tail": is_tail}).numpy()
        assert all(len(set(row)) == k for row in picks)  # never a repeated item
        share = np.take_along_axis(is_tail, picks, axis=1).mean()
        # 30000 slots: the binomial standard error is below 0.003.
        assert share == pytest.approx(eps + (1 - eps) * base, abs=0.01)
        shares.append(share)
        if eps == 0.0:
            np.testing.assert_array_equal(picks, top)
    assert shares == sorted(shares)


def test_boltzmann_first_slot_is_softmax_distributed_and_tail_grows_with_temperature():
    scores, is_tail = _head_tail_pool(b=4000)
    shares = []
    for temperature in (0.1, 0.5, 1.0, 3.0):
        layer = Boltzmann(temperature=temperature, k=10, seed=3)
        picks = layer({"scores": scores}).numpy()
        assert all(len(set(row)) == 10 for row in picks)
        first = is_tail[np.arange(len(scores)), picks[:, 0]].mean()
        logits = scores.astype(float) / temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        assert first == pytest.approx((p * is_tail).sum(axis=1).mean(), abs=0.025)
        shares.append(np.take_along_axis(is_tail, picks, axis=1).mean())
    assert shares == sorted(shares) and shares[-1] > shares[0] + 0.2


def test_exploration_is_reproducible_from_the_seed():
    scores, is_tail = _head_tail_pool(b=50)
    inputs = {"scores": scores, "is_tail": is_tail}
    for make in (lambda s: EpsilonGreedy(0.5, k=5, seed=s), lambda s: Boltzmann(1.0, k=5, seed=s)):
        a, b, c = make(11), make(11), make(12)
        first = a(inputs).numpy()
        np.testing.assert_array_equal(first, b(inputs).numpy())
        assert not np.array_equal(first, c(inputs).numpy())
        assert not np.array_equal(first, a(inputs).numpy())  # each call draws afresh


def test_bad_knobs_and_missing_inputs_name_the_fix():
    with pytest.raises(ValueError, match="lambda_ must lie in"):
        MMR(lambda_=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Boltzmann(0.0)
    with pytest.raises(ValueError, match="target_shares"):
        Calibrated([-1.0, 2.0])
    with pytest.raises(ValueError, match=r"lack \['embeddings'\]"):
        DPP()({"scores": tf.zeros([1, 20])})
    with pytest.raises(ValueError, match="larger pool"):
        MMR(k=30)({"scores": tf.zeros([1, 20]), "embeddings": tf.zeros([1, 20, 2])})
    layer = ReRankedTopK(tfrs.layers.factorized_top_k.BruteForce(), EpsilonGreedy(), k=2, pool=4)
    layer.index(tf.random.normal([6, 3]))
    with pytest.raises(ValueError, match="item_is_tail= to index"):
        layer(tf.ones([1, 3]))


@pytest.fixture(scope="module")
def trained_quickstart():
    """The TFRS README quickstart model after one epoch, and its movie embeddings."""
    tf.keras.utils.set_random_seed(0)
    data = tm.movielens_like(num_users=40, num_movies=60, num_ratings=1500)
    model = tm.quickstart(data)
    ratings = tf.data.Dataset.from_tensor_slices({"user_id": data.ratings["user_id"],
                                                  "movie_title": data.ratings["movie_title"]})
    model.fit(ratings.batch(256), epochs=1, verbose=0)
    counts = {t: 0 for t in data.movies}
    for t in data.ratings["movie_title"]:
        counts[t] += 1
    popularity = np.array([counts[t] for t in data.movies])
    is_tail = popularity <= np.quantile(popularity, 0.6)
    return model, data, model.movie_model(tf.constant(data.movies)), is_tail, np.arange(len(data.movies)) % 4


@pytest.mark.slow  # trains the quickstart model once (about 4 s), then a SavedModel per layer
@pytest.mark.parametrize("name", ["mmr", "mmr_category", "dpp", "calibrated", "epsilon", "boltzmann", "streaming"])
def test_reranked_index_on_a_tutorial_model_saves_and_reloads(name, trained_quickstart, tmp_path):
    model, data, movie_embeddings, is_tail, groups = trained_quickstart
    rerankers = {"mmr": MMR(0.6), "mmr_category": MMR(0.3, similarity="category"), "dpp": DPP(0.6),
                 "calibrated": Calibrated([0.25] * 4, 0.8), "epsilon": EpsilonGreedy(0.5, seed=1),
                 "boltzmann": Boltzmann(0.5, seed=1), "streaming": MMR(0.6)}
    base = (tfrs.layers.factorized_top_k.Streaming(model.user_model) if name == "streaming"
            else tfrs.layers.factorized_top_k.BruteForce(model.user_model))
    layer = ReRankedTopK(base, rerankers[name], k=5, pool=30)
    layer.index(movie_embeddings, tf.constant(data.movies), item_groups=groups, item_is_tail=is_tail)
    users = tf.constant(np.unique(data.ratings["user_id"])[:8])
    scores, ids = layer(users)
    assert ids.shape == (8, 5) and all(len(set(row)) == 5 for row in ids.numpy().tolist())
    # The picks come from the plain top-30 of the same index.
    _, pool_ids = tfrs.layers.factorized_top_k.BruteForce(model.user_model).index(
        movie_embeddings, tf.constant(data.movies))(users, k=30)
    assert all(set(row) <= set(pool) for row, pool in zip(ids.numpy().tolist(), pool_ids.numpy().tolist()))
    tf.saved_model.save(layer, str(tmp_path / "index"))
    loaded = tf.saved_model.load(str(tmp_path / "index"))
    # Exploration: both continue from the saved call count, so they draw the same numbers.
    expected_scores, expected_ids = layer(users)
    got_scores, got_ids = loaded(users)
    np.testing.assert_array_equal(got_ids.numpy(), expected_ids.numpy())
    np.testing.assert_allclose(got_scores.numpy(), expected_scores.numpy(), rtol=1e-6)


def _xla_inputs():
    scores, emb, groups = _pool(6)
    return {"scores": tf.constant(scores), "embeddings": tf.constant(emb), "groups": tf.constant(groups),
            "is_tail": tf.constant(groups == 0)}


@pytest.mark.parametrize("make", [lambda: MMR(0.5, k=5), lambda: MMR(0.5, k=5, similarity="category"),
                                  lambda: DPP(0.5, k=5), lambda: Calibrated([0.4, 0.3, 0.3], 0.5, k=5)],
                         ids=["mmr", "mmr_category", "dpp", "calibrated"])
def test_greedy_layers_compile_under_xla_with_the_same_picks(make):
    inputs = _xla_inputs()
    eager, compiled = make(), make()
    np.testing.assert_array_equal(tf.function(compiled, jit_compile=True)(inputs).numpy(), eager(inputs).numpy())


@pytest.mark.parametrize("make", [lambda: Boltzmann(0.5, k=5, seed=4), lambda: EpsilonGreedy(1.0, k=5, seed=4)],
                         ids=["boltzmann", "epsilon"])
def test_exploration_compiles_under_xla_and_stays_seeded(make):
    # XLA's stateless random kernels draw other numbers than the CPU kernels: seeded, not equal to eager.
    inputs = _xla_inputs()
    first, second = (tf.function(make(), jit_compile=True)(inputs).numpy() for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert all(len(set(row)) == 5 for row in first.tolist())


@pytest.mark.parametrize("make", [lambda: MMR(0.5, k=6), lambda: MMR(0.5, k=6, similarity="category"),
                                  lambda: DPP(0.5, k=6), lambda: Calibrated([0.4, 0.3, 0.3], 0.5, k=6),
                                  lambda: Boltzmann(0.5, k=6), lambda: EpsilonGreedy(0.5, k=6)],
                         ids=["mmr", "mmr_category", "dpp", "calibrated", "boltzmann", "epsilon"])
def test_excluded_slots_come_last_and_never_twice(make):
    # Only 4 real candidates for 6 slots (the rest excluded: -inf), as when a user has seen most of the pool.
    scores, emb, groups = _pool(7, n=10)
    scores[:, 4:] = -np.inf
    inputs = {"scores": scores, "embeddings": emb, "groups": groups, "is_tail": groups == 0}
    picks = make()(inputs).numpy()
    assert all(len(set(row)) == 6 for row in picks.tolist())
    assert (np.sort(picks[:, :4], axis=1) == np.arange(4)).all()


def test_layers_rebuild_from_their_config():
    scores, emb, groups = _pool(8)
    inputs = {"scores": scores, "embeddings": emb, "groups": groups}
    for layer in (MMR(0.3, k=4, similarity="category"), DPP(0.7, k=4, epsilon=1e-5),
                  Calibrated([1.0, 2.0, 1.0], 0.4, k=4, smoothing=0.05)):
        clone = type(layer).from_config(layer.get_config())
        np.testing.assert_array_equal(clone(inputs).numpy(), layer(inputs).numpy())

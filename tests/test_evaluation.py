"""evaluate(), BeyondAccuracy and FactorizedTopKMetrics on planted effects and bad input."""


import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_diag
from tfrs_diag import datasets, models, summary
from tfrs_diag.metrics import CompositeScore, top_k
from tfrs_diag.metrics.factorized import FactorizedTopKMetrics


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(num_users=400, num_items=300, num_interactions=9000, seed=1)


def _constant_query_tower(ids):
    return tf.ones([tf.shape(ids)[0], 1])


def _popularity_embeddings(data):
    # One dimension: every query scores items by their training popularity.
    return data.item_popularity.astype(np.float32)[:, None]


def _random_recommender(data, seed=0, dim=16):
    rng = np.random.default_rng(seed)
    table = tf.constant(rng.normal(size=(len(data.users["user_id"]), dim)).astype(np.float32))
    lookup = {u: i for i, u in enumerate(data.users["user_id"].tolist())}

    def tower(ids):
        idx = tf.numpy_function(lambda a: np.array([lookup[x.decode()] for x in a], np.int32), [ids], tf.int32)
        idx.set_shape([None])
        return tf.gather(table, idx)

    return tower, rng.normal(size=(len(data.items["item_id"]), dim)).astype(np.float32)


def _eval(data, tower, cand, **kw):
    kw.setdefault("k", (10,))
    return tfrs_diag.evaluate(tower, data.items["item_id"], data.test, candidate_embeddings=cand,
                              query_key="user_id", item_key="item_id", item_popularity=data.item_popularity, **kw)


def test_popularity_recommender_is_less_diverse_than_random_in_every_metric(data):
    pop = _eval(data, _constant_query_tower, _popularity_embeddings(data))
    tower, cand = _random_recommender(data)
    rnd = _eval(data, tower, cand)
    assert pop["coverage_at_10"] == pytest.approx(10 / 300)  # the same 10 items for everyone
    assert pop["coverage_at_10"] < rnd["coverage_at_10"]
    assert pop["gini_at_10"] > rnd["gini_at_10"] + 0.5
    assert pop["aplt_at_10"] < rnd["aplt_at_10"]
    assert pop["arp_at_10"] > 3 * rnd["arp_at_10"]
    assert pop["novelty_at_10"] < rnd["novelty_at_10"]
    assert pop["pop_rsp_at_10"] > rnd["pop_rsp_at_10"]
    # ...and popularity is the better guess on skewed data.
    assert pop["hit_rate_at_10"] > rnd["hit_rate_at_10"]


def test_planted_minority_group_shows_the_accuracy_gap(data):
    result = _eval(data, _constant_query_tower, _popularity_embeddings(data), k=(20,),
                   user_group_keys=("user_group",), user_group_names={"user_group": data.user_group_names})
    rows = {r["group"]: r for r in result.tables["user_group"]}
    assert rows["majority"]["count"] + rows["minority"]["count"] == result.queries
    # Popularity follows the majority's taste: the minority gets far less of it.
    gap = rows["majority"]["ndcg_at_20"] - rows["minority"]["ndcg_at_20"]
    assert gap > 0.05
    assert result["user_group/ndcg_at_20_gap"] == pytest.approx(gap, abs=1e-6)
    assert result["user_group/ndcg_at_20_ratio"] == pytest.approx(
        rows["minority"]["ndcg_at_20"] / rows["majority"]["ndcg_at_20"], rel=1e-5)
    assert result["user_group/ndcg_at_20_ratio"] < 0.7


def test_streaming_batches_equal_one_pass_and_exclude_seen_removes_training_items(data):
    tower, cand = _random_recommender(data, seed=3)
    one = _eval(data, tower, cand, batch_size=10_000, user_group_keys=("user_gender",))
    many = _eval(data, tower, cand, batch_size=37, user_group_keys=("user_gender",))
    assert one.metrics.keys() == many.metrics.keys()
    for key in one:
        assert many[key] == pytest.approx(one[key], abs=1e-6), key
    # Evaluating on the training interactions with them excluded: nothing relevant is left.
    seen = tfrs_diag.evaluate(tower, data.items["item_id"], data.train, k=(10,), candidate_embeddings=cand,
                              query_key="user_id", item_key="item_id", exclude_seen=data.train)
    assert seen["recall_at_10"] == 0.0
    plain = tfrs_diag.evaluate(tower, data.items["item_id"], data.train, k=(10,), candidate_embeddings=cand,
                               query_key="user_id", item_key="item_id")
    assert plain["recall_at_10"] > 0.0


def test_top_k_never_returns_excluded_items():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    best = top_k(q, c, 5).indices.numpy()
    exclude = np.full((5, 3), -1, np.int32)
    exclude[:, :2] = best[:, :2]  # the two best of each query
    got = top_k(q, c, 5, exclude).indices.numpy()
    for row, ex in zip(got, exclude):
        assert not set(row) & set(ex[ex >= 0])
    np.testing.assert_array_equal(got[:, :3], best[:, 2:5])


def test_bad_input_is_reported_not_crashed(data):
    tower, cand = _random_recommender(data)
    # Positives whose item is not in the candidate set: counted and reported.
    keep = np.arange(250)
    dropped = set(data.items["item_id"][250:].tolist())
    expected_missing = sum(
        len({it for it, u in zip(data.test["item_id"], data.test["user_id"]) if u == user and it in dropped})
        for user in np.unique(data.test["user_id"]))
    r = tfrs_diag.evaluate(tower, data.items["item_id"][keep], data.test, k=(10,), candidate_embeddings=cand[keep],
                           query_key="user_id", item_key="item_id")
    assert r.missing_positives == expected_missing > 0
    assert "positives not in the candidate set" in str(r)
    # K larger than the catalog: clamped, with a warning.
    with pytest.warns(UserWarning, match="clamped to 300"):
        r = _eval(data, tower, cand, k=(10, 1000))
    assert r.ks == (10, 300) and r["coverage_at_300"] == 1.0
    # A group absent from this evaluation: count 0, never NaN.
    r = _eval(data, tower, cand, user_group_keys=("user_group",),
              user_group_names={"user_group": ("majority", "minority", "nobody")})
    nobody = [row for row in r.tables["user_group"] if row["group"] == "nobody"][0]
    assert nobody["count"] == 0 and nobody["ndcg_at_10"] == 0.0
    assert all(np.isfinite(v) for v in r.metrics.values())
    # Unknown group key: the error lists what is available.
    with pytest.raises(KeyError, match=r"user_group_keys: 'country'.*available keys: \[.*'user_gender'"):
        _eval(data, tower, cand, user_group_keys=("country",))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        _eval(data, tower, cand, k=(0,))


def test_evaluate_ranking_uses_the_model_order():
    # Two queries, lists of 4; relevance: ratings >= 4.
    candidates = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    ratings = np.array([[5, 1, 2, 4], [1, 1, 5, 1]])
    perfect = tfrs_diag.evaluation.evaluate_ranking(ratings.astype(float), candidates, ratings, k=(2,),
                                                    num_items=8, relevance_threshold=4)
    reverse = tfrs_diag.evaluation.evaluate_ranking(-ratings.astype(float), candidates, ratings, k=(2,),
                                                    num_items=8, relevance_threshold=4)
    assert perfect["ndcg_at_2"] == pytest.approx(1.0)
    assert reverse["ndcg_at_2"] == pytest.approx(0.0)
    # Exposure follows the order: the perfect ranking exposes items 0, 3, 6 and one of 4/5/7.
    assert perfect["coverage_at_2"] == pytest.approx(4 / 8)


def test_composite_score_needs_known_metrics():
    score = CompositeScore({"ndcg_at_10": 1.0, "1-gini_at_10": 0.5})
    assert score({"ndcg_at_10": 0.2, "gini_at_10": 0.4}) == pytest.approx(0.5)
    with pytest.raises(KeyError, match="no metric 'gini_at_10'"):
        score({"ndcg_at_10": 0.2})


def test_beyond_accuracy_streams_metrics_and_early_stopping_can_monitor_them(data, tmp_path):
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    cb = tfrs_diag.callbacks.BeyondAccuracy(
        str(tmp_path), data.test, data.items["item_id"], k=(5, 20), user_group_keys=("user_group",),
        user_group_names={"user_group": data.user_group_names}, item_groups=data.items["item_category"],
        item_group_names=data.item_group_names, item_popularity=data.item_popularity,
        composite={"ndcg_at_20": 0.8, "coverage_at_20": 0.2}, log_metrics=("ndcg_at_20", "coverage_at_20"),
        verbose=0)
    # patience=0 on a metric that cannot improve (the same every epoch): stops after 2 epochs.
    stop = tf.keras.callbacks.EarlyStopping("val_missing_or_constant", mode="max", patience=0)
    never = _ConstantMetric()
    history = model.fit(models.retrieval_dataset(data.train, 512), epochs=3, verbose=0,
                        callbacks=[cb, never, stop])
    assert len(history.history["val_ndcg_at_20"]) == 2
    assert all(0 <= v <= 1 for v in history.history["val_ndcg_at_20"])
    assert history.history["val_composite"][-1] == pytest.approx(
        0.8 * history.history["val_ndcg_at_20"][-1] + 0.2 * history.history["val_coverage_at_20"][-1])
    run = summary.read_run(str(tmp_path / "validation"))
    assert [s for s, _ in run.scalars["tfrs_diag/rank/ndcg_at_20"]] == [
        int(model.optimizer.iterations.numpy()) // 2, int(model.optimizer.iterations.numpy())]
    assert "tfrs_diag/fair/user_group/ndcg_at_20_gap" in run.scalars
    assert "tfrs_diag/div/gini_at_20" in run.scalars and "tfrs_diag/fair/exposure_gini_at_20" in run.scalars
    table = run.records["tfrs_diag/fair/groups"][-1][1]
    assert [r["group"] for r in table["user_groups"]["user_group"]] == ["majority", "minority"]
    assert len(table["item_groups"]) == len(data.item_group_names)



def test_beyond_accuracy_logs_a_headline_by_default_and_more_when_asked(data, tmp_path):
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    kw = dict(k=(5, 20), user_group_keys=("user_group",), item_popularity=data.item_popularity, verbose=0)
    headline = tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path / "a"), data.test, data.items["item_id"], **kw)
    extra = tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path / "b"), data.test, data.items["item_id"],
                                               log_metrics=("val_hit_rate_at_20", "gini_at_5"), **kw)
    every = tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path / "c"), data.test, data.items["item_id"],
                                               log_metrics="all", **kw)
    logs = {}
    for cb in (headline, extra, every):
        cb.set_model(model)
        logs[cb] = {}
        cb.on_epoch_end(0, logs[cb])
    # The first K's recall, NDCG and coverage, and the user-group gap of the alert metric.
    assert sorted(logs[headline]) == sorted(["val_recall_at_5", "val_ndcg_at_5", "val_coverage_at_5",
                                             "val_user_group/ndcg_at_5_gap"])
    assert sorted(logs[extra]) == sorted([*logs[headline], "val_hit_rate_at_20", "val_gini_at_5"])
    assert len(logs[every]) == len(headline.history[-1][1].metrics) > 40
    # TensorBoard gets every metric whatever the logs get.
    written = summary.read_run(str(tmp_path / "c" / "validation")).scalars
    assert set(summary.read_run(str(tmp_path / "a" / "validation")).scalars) == set(written)
    assert len(written) > len(logs[every])
    with pytest.warns(UserWarning, match=r"\['ndcg_at_7'\] are not computed.*ndcg_at_5"):
        bad = tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path / "d"), data.test, data.items["item_id"],
                                                 log_metrics=("ndcg_at_7",), **kw)
        bad.set_model(model)
        bad.on_epoch_end(0, {})
    with pytest.raises(ValueError, match="log_metrics must be 'headline', 'all'"):
        tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path / "e"), data.test, data.items["item_id"],
                                           log_metrics="everything", **kw)

class _ConstantMetric(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["val_missing_or_constant"] = 1.0


def test_beyond_accuracy_fires_fairness_gap_for_a_popularity_model(data, tmp_path):
    class Popularity(tf.keras.Model):
        user_key, item_key = "user_id", "item_id"

        def __init__(self):
            super().__init__()
            pop = tf.constant(data.item_popularity.astype(np.float32))
            ids = tf.constant(data.items["item_id"])
            self.item_model = lambda x: tf.gather(pop, tf.argmax(tf.cast(x[:, None] == ids[None, :], tf.int32),
                                                                 axis=1))[:, None]
            self.user_model = _constant_query_tower

    cb = tfrs_diag.callbacks.BeyondAccuracy(
        str(tmp_path), data.test, data.items["item_id"], k=(20,), user_group_keys=("user_group",),
        user_group_names={"user_group": data.user_group_names}, verbose=0)
    cb.set_model(Popularity())
    cb.on_epoch_end(0, {})
    kinds = {(a.kind, a.subject) for a in cb.alerts}
    assert ("fairness_gap", "user_group=minority") in kinds
    assert ("exposure_concentration", "exposure_gini_at_20") in kinds



def test_beyond_accuracy_pauses_its_detectors_on_a_diverged_model_and_resumes_when_finite(data, tmp_path):
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    # Thresholds that fire on any model: only the pause can keep them quiet.
    cb = tfrs_diag.callbacks.BeyondAccuracy(str(tmp_path), data.test, data.items["item_id"], k=(10,),
                                            user_group_keys=("user_group",), fairness_ratio=1.0, exposure_gini=0.01,
                                            verbose=0)
    cb.set_model(model)
    model.item_model(tf.constant(data.items["item_id"][:2]))  # builds the table
    table = model.item_model.layers[-1].embeddings
    healthy = table.numpy()
    table.assign(np.where(np.arange(healthy.shape[0])[:, None] % 3 == 0, np.nan, healthy))  # a diverged tower
    cb.on_epoch_end(0, {})
    cb.on_epoch_end(1, {})
    result = cb.history[-1][1]
    assert result.nonfinite_candidates == len(data.items["item_id"]) // 3 + (len(data.items["item_id"]) % 3 > 0)
    assert "these top-K lists are arbitrary" in str(result)
    assert cb.alerts == [] and len(cb.notes) == 1 and "pause" in cb.notes[0]
    table.assign(healthy)
    cb.on_epoch_end(2, {})
    assert "resume" in cb.notes[-1]
    assert {a.kind for a in cb.alerts} == {"fairness_gap", "exposure_concentration"}

def test_factorized_metrics_in_a_retrieval_task_agree_with_factorized_top_k(data):
    class Model(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.user_model = models._id_tower(data.users["user_id"], None, 8, "user_model")
            self.item_model = models._id_tower(data.items["item_id"], None, 8, "item_model")
            self.ours = FactorizedTopKMetrics(data.items["item_id"], self.item_model, ks=(10, 50),
                                              item_popularity=data.item_popularity)
            cands = tf.data.Dataset.from_tensor_slices(data.items["item_id"]).batch(64)
            stock = tfrs.metrics.FactorizedTopK(cands.map(lambda x: (x, self.item_model(x))), ks=(10, 50))
            self.task = tfrs.tasks.Retrieval(metrics=[self.ours, stock])

        def compute_loss(self, f, training=False):
            return self.task(self.user_model(f["user_id"]), self.item_model(f["item_id"]),
                             candidate_ids=f["item_id"], compute_metrics=not training)

    model = Model()
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(models.retrieval_dataset(data.train, 512), epochs=2, verbose=0)
    test = tf.data.Dataset.from_tensor_slices({k: data.test[k] for k in ("user_id", "item_id")}).batch(128)
    r = model.evaluate(test, return_dict=True, verbose=0)
    for k in (10, 50):
        assert r[f"hit_rate_at_{k}"] == pytest.approx(r[f"factorized_top_k/top_{k}_categorical_accuracy"], abs=1e-6)
    assert 0 < r["coverage_at_10"] <= 1 and "gini_at_50" in r and "aplt_at_10" in r
    # A second evaluation starts from zero (state reset between evaluations).
    assert model.evaluate(test, return_dict=True, verbose=0)["hit_rate_at_10"] == pytest.approx(r["hit_rate_at_10"])


def test_positives_in_search_order_give_the_same_hits_without_the_sort():
    from tfrs_diag.evaluation.queries import in_search_order, padded
    from tfrs_diag.metrics import TopKBatch

    rng = np.random.default_rng(3)
    rows = [np.append(rng.choice(50, size=n, replace=False), [-2] * (n % 2)).astype(np.int32)
            for n in rng.integers(1, 12, size=30)]
    top = tf.constant(np.stack([rng.choice(50, size=10, replace=False) for _ in rows]).astype(np.int32))
    unsorted = tf.constant(padded(rows))
    ordered = tf.constant(padded([in_search_order(r) for r in rows]))
    ordered_np = ordered.numpy()
    valid = np.where(ordered_np >= 0, ordered_np, np.iinfo(np.int32).max)
    assert (np.diff(valid, axis=1) >= 0).all()  # ascending, missing and pads last
    expected = np.array([[t in set(r[r >= 0]) for t in row] for row, r in zip(top.numpy(), rows)], np.float32)
    fast = tf.function(lambda t, p: TopKBatch(t, p, positives_in_search_order=True).hits)(top, ordered)
    slow = tf.function(lambda t, p: TopKBatch(t, p).hits)(top, unsorted)
    np.testing.assert_array_equal(fast.numpy(), expected)
    np.testing.assert_array_equal(slow.numpy(), expected)
    assert expected.sum() > 0


def test_two_evaluators_in_one_process_keep_their_own_state(data):
    tower, cand = _random_recommender(data, seed=7)
    users = np.unique(data.test["user_id"])
    halves = [{k: v[np.isin(data.test["user_id"], part)] for k, v in data.test.items()}
              for part in (users[::2], users[1::2])]
    kw = dict(query_key="user_id", item_key="item_id", k=(5, 20), user_group_keys=("user_group",),
              item_popularity=data.item_popularity)
    alone = [tfrs_diag.evaluate(tower, data.items["item_id"], half, candidate_embeddings=cand, **kw)
             for half in halves]
    evaluators = [tfrs_diag.TopKEvaluator(data.items["item_id"], half, **kw) for half in halves]
    # Interleaved runs of two compiled steps over same-shaped batches: each gives its own results.
    runs = [ev.run(tower, candidate_embeddings=cand) for ev in evaluators + evaluators[::-1]]
    for got, want in zip(runs, alone + alone[::-1]):
        assert got.queries == want.queries
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert alone[0]["ndcg_at_20"] != pytest.approx(alone[1]["ndcg_at_20"], abs=1e-6)


def test_query_features_without_query_key_make_every_row_a_query(data):
    tower, cand = _random_recommender(data, seed=5)
    users, first = np.unique(data.test["user_id"], return_index=True)
    one_row_each = {k: v[first] for k, v in data.test.items()}
    kw = dict(candidate_embeddings=cand, item_key="item_id", k=(10,), user_group_keys=("user_group",))
    grouped = tfrs_diag.evaluate(tower, data.items["item_id"], one_row_each, query_key="user_id", **kw)
    rows = tfrs_diag.evaluate(tower, data.items["item_id"], one_row_each, query_features="user_id", **kw)
    assert rows.queries == grouped.queries == len(users)
    for key in grouped:
        assert rows[key] == pytest.approx(grouped[key], abs=1e-6), key
    # On every row: one query per row even where users repeat, unlike grouping by user.
    many = tfrs_diag.evaluate(tower, data.items["item_id"], data.test, query_features="user_id", **kw)
    assert many.queries == len(data.test["user_id"]) > len(users)
    assert sum(r["count"] for r in many.tables["user_group"]) == many.queries

"""Trend/plateau/spectrum cores against hand-computed cases; OverfittingMonitor and EmbeddingProbe glue."""

import importlib
import doctest
import math

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag import datasets, models, summary
from tfrs_diag.callbacks import OverfittingMonitor
from tfrs_diag.layers import EmbeddingProbe
from tfrs_diag.stats import embeddings as E
from tfrs_diag.stats import trends as T

# ---------------------------------------------------------------- trends (pure)


def test_theil_sen_is_the_median_of_pairwise_slopes():
    # Pairs of (0, 1, 3, 2): slopes 1, 1.5, 2/3, 2, 0.5, -1 -> sorted -1, .5, 2/3, 1, 1.5, 2 -> median 5/6.
    assert T.theil_sen_slope([0.0, 1.0, 3.0, 2.0]) == pytest.approx(5 / 6)
    # Uneven x: points (0,0), (2,1), (3,4): slopes 0.5, 4/3, 3 -> 4/3.
    assert T.theil_sen_slope([0.0, 1.0, 4.0], x=[0.0, 2.0, 3.0]) == pytest.approx(4 / 3)
    assert math.isnan(T.theil_sen_slope([1.0]))
    with pytest.raises(ValueError, match="finite"):
        T.theil_sen_slope([1.0, float("nan")])


def test_mann_kendall_statistic_variance_with_ties_and_p_values():
    # y = 1, 3, 2, 2: pairs (1,3)+ (1,2)+ (1,2)+ (3,2)- (3,2)- (2,2)0 -> S = 1.
    # One tie group of 2: Var = [4*3*13 - 2*1*9] / 18 = (156 - 18) / 18.
    s, var, z = T.mann_kendall([1, 3, 2, 2])
    assert s == 1 and var == pytest.approx(138 / 18) and z == 0.0  # (S - 1) / sd
    t = T.trend([1.0, 2.0, 3.0, 4.0, 5.0])  # S = 10, Var = 5*4*15/18, Z = 9/sqrt(Var)
    z5 = 9 / math.sqrt(5 * 4 * 15 / 18)
    assert t.s == 10 and t.z == pytest.approx(z5)
    assert t.p_increasing == pytest.approx(0.5 * math.erfc(z5 / math.sqrt(2)))
    assert t.p_decreasing == pytest.approx(1 - t.p_increasing)
    assert t.p_two_sided == pytest.approx(2 * t.p_increasing)
    assert t.slope == 1.0


def test_trend_tells_a_planted_rise_from_noise():
    rng = np.random.default_rng(0)
    rises = [T.trend(np.arange(8) * 0.5 + rng.normal(size=8) * 0.3).p_increasing for _ in range(50)]
    noise = [T.trend(rng.normal(size=8)).p_increasing for _ in range(400)]
    assert np.mean(np.array(rises) < 0.05) > 0.9
    assert np.mean(np.array(noise) < 0.05) < 0.1  # about the nominal 5% false-alarm rate
    assert T.trend([1.0, 2.0]).p_increasing == 1.0  # too short to say anything


def test_plateau_and_relative_change():
    # Means of the windows: (10 + 9) / 2 = 9.5 -> (8 + 7) / 2 = 7.5: 2 / 9.5 lower.
    assert T.relative_improvement([10.0, 9.0, 8.0, 7.0], window=2) == pytest.approx(2 / 9.5)
    assert T.relative_improvement([99.0, 10.0, 11.0, 12.0], window=1) == pytest.approx(-1 / 11)
    assert math.isnan(T.relative_improvement([1.0, 2.0, 3.0], window=2))
    assert T.is_plateau([5.0, 4.99, 4.98, 4.985, 4.97, 4.98], window=3, tolerance=0.01)
    assert not T.is_plateau([5.0, 4.8, 4.6, 4.5, 4.4, 4.3], window=3, tolerance=0.01)
    # One noisy high reading before the window does not make the next readings look like progress.
    assert T.is_plateau([1.0, 1.06, 1.0, 1.02, 1.0, 1.01], window=3, tolerance=0.02)
    assert T.relative_improvement([1.0, 1.06, 1.0, 1.02, 1.0, 1.01], window=1) == pytest.approx(0.01 / 1.0 * -1)
    assert T.relative_change(-2.0, -1.0) == pytest.approx(0.5)


# ---------------------------------------------------------------- embeddings (pure)


def test_information_abundance_and_effective_rank_of_known_spectra():
    # diag(3, 2, 1) padded with zero rows: singular values 3, 2, 1 -> IA = 6 / 3 = 2.
    x = np.zeros((5, 3))
    x[0, 0], x[1, 1], x[2, 2] = 3.0, 2.0, 1.0
    sigma = E.singular_values(x)
    np.testing.assert_allclose(sigma, [3.0, 2.0, 1.0])
    assert E.information_abundance(sigma) == pytest.approx(2.0)
    p = np.array([3.0, 2.0, 1.0]) / 6.0
    assert E.effective_rank(sigma) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert E.information_abundance([0.0, 0.0]) == 0.0 and E.effective_rank([]) == 0.0


def test_row_sample_estimates_the_abundance_of_a_large_table():
    rng = np.random.default_rng(0)
    # 50,000 rows in 16 dims whose spectrum decays (scales 1, 1/2, ..., 1/16).
    table = rng.normal(size=(50_000, 16)) / np.arange(1, 17)
    full = E.information_abundance(E.singular_values(table))
    rows = E.sample_rows(len(table), 2000, seed=1)
    assert len(rows) == 2000 and np.all(np.diff(rows) > 0)
    assert E.information_abundance(E.singular_values(table[rows])) == pytest.approx(full, rel=0.03)
    collapsed = np.outer(rng.normal(size=50_000), rng.normal(size=16)) + 1e-3 * rng.normal(size=(50_000, 16))
    assert E.information_abundance(E.singular_values(collapsed[rows])) < 1.1


def test_in_graph_table_statistics_match_numpy():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(300, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    rows = np.array([3, 10, 50, 51, 52, 99, 120, 150, 200, 250, 299], np.int64)
    norms, sigma, finite = (x.numpy() for x in E.table_statistics(tf.constant(table), tf.constant(rows)))
    np.testing.assert_allclose(norms, np.linalg.norm(table, axis=1), rtol=1e-5)
    np.testing.assert_allclose(sigma, np.linalg.svd(table[rows].astype(np.float64), compute_uv=False), rtol=1e-6)
    np.testing.assert_allclose(E.singular_values(table[rows]), sigma, rtol=1e-6)
    assert finite
    table[10, 2] = np.nan
    assert not E.table_statistics(tf.constant(table), tf.constant(rows))[2].numpy()


def test_dead_rows_and_popularity_buckets():
    counts = np.array([0, 10, 1, 0, 5, 2, 7, 0])
    assert E.dead_row_fraction(counts) == pytest.approx(3 / 8)
    buckets = E.popularity_buckets(counts, 2)
    assert [b.tolist() for b in buckets] == [[2, 5, 4], [6, 1]]  # least used first
    norms = np.arange(8, dtype=float)
    np.testing.assert_allclose(E.bucket_mean_norms(norms, buckets), [11 / 3, 3.5])
    assert E.popularity_buckets(np.zeros(4), 3) == []


@pytest.mark.parametrize("module", ["tfrs_diag.stats.trends", "tfrs_diag.stats.embeddings",
                                    "tfrs_diag.layers.embedding_probe", "tfrs_diag.detectors.overfitting",
                                    "tfrs_diag.detectors.embeddings", "tfrs_diag.detectors.fairness",
                                    "tfrs_diag.callbacks._probes"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# ---------------------------------------------------------------- EmbeddingProbe


def test_embedding_probe_counts_lookups_under_jit_and_the_monitor_probes_do_not_count(tmp_path):
    data = datasets.synthetic(num_users=60, num_items=90, num_interactions=1500, seed=3)
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(num_users=data.num_users, num_items=data.num_items, embedding_dim=8,
                                 embedding_probe=True)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1), jit_compile=True)
    keys = ("user_index", "item_index")
    train = {k: data.train[k] for k in keys}
    monitor = OverfittingMonitor(str(tmp_path), probe_data={k: data.test[k] for k in keys},
                                 train_probe_data=train, probe_size=64, probe_every_n_steps=3, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices(train).batch(100)
    model.fit(ds, epochs=2, callbacks=[monitor], verbose=0)
    user_probe = model.user_model.layers[0]
    assert isinstance(user_probe, EmbeddingProbe)
    expected = 2 * np.bincount(data.train["user_index"], minlength=data.num_users)
    np.testing.assert_array_equal(user_probe.usage_counts.numpy(), expected)
    item_counts = model.item_model.layers[0].usage_counts.numpy()
    np.testing.assert_array_equal(item_counts, 2 * np.bincount(data.train["item_index"], minlength=data.num_items))
    assert len(monitor.readings) >= 6  # the probes ran, and counted nothing
    # Same output as the wrapped layer; only the counts are non-trainable.
    ids = tf.constant([0, 5, 5])
    np.testing.assert_array_equal(user_probe(ids, training=False), user_probe.embedding(ids))
    assert [v.name for v in user_probe.non_trainable_weights] == [user_probe.usage_counts.name]


def test_embedding_probe_counts_every_replica_under_mirrored_strategy(mirrored_strategy):
    data = datasets.synthetic(num_users=60, num_items=90, num_interactions=1500, seed=3)
    with mirrored_strategy.scope():
        model = models.TwoTowerModel(num_users=data.num_users, num_items=data.num_items, embedding_dim=8,
                                     embedding_probe=True)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    keys = ("user_index", "item_index")
    model.fit(tf.data.Dataset.from_tensor_slices({k: data.train[k] for k in keys}).batch(100), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.user_model.layers[0].usage_counts.numpy(),
                                  np.bincount(data.train["user_index"], minlength=data.num_users))


def test_embedding_probe_in_a_string_lookup_tower_and_its_config_round_trips():
    tower = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=["a", "b"], mask_token=None),
                                 EmbeddingProbe(tf.keras.layers.Embedding(3, 4))])
    tower(tf.constant(["a", "b", "b", "q"]))
    np.testing.assert_array_equal(tower.layers[1].usage_counts.numpy(), [1, 1, 2])
    clone = EmbeddingProbe.from_config(tower.layers[1].get_config())
    assert clone.input_dim == 3 and clone.output_dim == 4
    with pytest.raises(TypeError, match="Embedding"):
        EmbeddingProbe(tf.keras.layers.Dense(3))


def test_dead_rows_alert_when_most_of_a_vocabulary_is_never_looked_up(tmp_path):
    tf.keras.utils.set_random_seed(0)
    ids = np.arange(400) % 50  # a 1000-row table, 50 rows used
    item = tf.keras.Input((), dtype=tf.int32)
    model = tf.keras.Model(item, tf.keras.layers.Dense(1)(EmbeddingProbe(tf.keras.layers.Embedding(1000, 8))(item)))
    model.compile(optimizer="adam", loss="mse")
    monitor = OverfittingMonitor(str(tmp_path), verbose=0)
    model.fit(ids, np.ones(400, np.float32), batch_size=100, epochs=1, callbacks=[monitor], verbose=0)
    (alert,) = [a for a in monitor.alerts if a.kind == "dead_embedding_rows"]
    assert alert.evidence["dead_row_fraction"] == pytest.approx(0.95)


# ---------------------------------------------------------------- OverfittingMonitor


def _regression(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32))


def test_probe_readings_are_the_losses_of_the_probe_examples_and_leave_metrics_alone(tmp_path):
    x, y = _regression()
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    monitor = OverfittingMonitor(str(tmp_path), probe_data=(x[:64], y[:64]), train_probe_data=(x[64:], y[64:]),
                                 probe_size=32, probe_every_n_steps=4, verbose=0)
    history = model.fit(x[64:], y[64:], batch_size=32, epochs=1, shuffle=False, callbacks=[monitor], verbose=0)
    last = monitor.readings[-1]
    mse = lambda a, b: float(np.mean((model.predict(a, verbose=0) - b) ** 2))  # noqa: E731
    assert last["heldout"] == pytest.approx(mse(x[:32], y[:32]), rel=1e-5)
    assert last["seen"] == pytest.approx(mse(x[64:96], y[64:96]), rel=1e-5)
    assert [r["step"] for r in monitor.readings] == [0, 4, 8, 12, 14]
    # Keras' own epoch loss and mae are those of the training batches only.
    tf.keras.utils.set_random_seed(0)
    ref = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    ref.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    ref_history = ref.fit(x[64:], y[64:], batch_size=32, epochs=1, shuffle=False, verbose=0)
    for key in ("loss", "mae"):  # the probes' own loss computations did not leak into Keras' metrics
        assert history.history[key][0] == pytest.approx(ref_history.history[key][0], rel=1e-6)
    run = summary.read_run(str(tmp_path / "train"))
    assert dict(run.scalars["tfrs_diag/overfit/probe/gap"])[14] == pytest.approx(last["heldout"] - last["seen"],
                                                                                 rel=1e-5)


def test_without_validation_data_the_epoch_gap_is_off_with_one_note(tmp_path, caplog):
    x, y = _regression()
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = OverfittingMonitor(str(tmp_path), verbose=0)
    with caplog.at_level("WARNING", logger="tfrs_diag"):
        model.fit(x, y, epochs=4, callbacks=[monitor], verbose=0)
    notes = [r for r in caplog.records if "no validation data" in r.getMessage()]
    assert len(notes) == 1 and len(monitor.epoch_logs) == 4
    assert not [t for t in summary.read_run(str(tmp_path / "train")).scalars if "/overfit/epoch/" in t]


def test_validation_data_given_to_the_monitor_gives_the_epoch_gap(tmp_path):
    x, y = _regression()
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = OverfittingMonitor(str(tmp_path), validation_data=(x[:100], y[:100]), verbose=0)
    history = model.fit(x[100:], y[100:], epochs=2, callbacks=[monitor], verbose=0)
    assert "val_loss" in history.history and monitor.notes == []
    scalars = summary.read_run(str(tmp_path / "train")).scalars
    gap = dict(scalars["tfrs_diag/overfit/epoch/loss/gap"])
    assert gap[1] == pytest.approx(history.history["val_loss"][1] - history.history["loss"][1], rel=1e-5)
    # The held-out probe defaults to the validation data (100 examples, within one probe). Since the
    # default cadence follows the data (13 steps per epoch: a reading every step), the count is no
    # longer 3 (1 before training + 2 epoch ends) but 1 + 2 x 13.
    assert len(monitor.readings) == 27 and all(r["seen"] is None for r in monitor.readings)
    assert monitor.readings[-1]["heldout"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)



def test_a_tfrs_retrieval_models_epoch_loss_gap_is_not_written_and_the_probe_gap_is_per_example(tmp_path):
    # TFRS retrieval sums its loss over the batch and tfrs.Model reports the last batch's loss:
    # train batches of 256 against a validation set whose last batch holds 100 rows. The raw
    # epoch gap would mostly measure that difference in batch size.
    data = datasets.synthetic(num_users=60, num_items=80, num_interactions=1500, seed=3)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    keys = ("user_id", "item_id")
    val = {k: data.test[k][:100] for k in keys}
    monitor = OverfittingMonitor(str(tmp_path), validation_data=models.retrieval_dataset(val, 4096, shuffle_seed=None),
                                 probe_data={k: data.test[k] for k in keys}, train_probe_data={k: data.train[k] for k in keys},
                                 probe_size=64, probe_every_n_steps=2, verbose=0)
    history = model.fit(models.retrieval_dataset(data.train, 256), epochs=2, callbacks=[monitor], verbose=0)
    assert not monitor.epoch_losses_comparable and monitor.probe_scale == 64
    scalars = summary.read_run(str(tmp_path / "train")).scalars
    assert "tfrs_diag/overfit/epoch/loss/val" in scalars and "tfrs_diag/overfit/epoch/loss/train" in scalars
    assert not [t for t in scalars if t.startswith("tfrs_diag/overfit/epoch/") and t.endswith(("/gap", "_gap"))]
    assert sum("loss gap is not written" in n for n in monitor.notes) == 1
    last = monitor.readings[-1]  # the model's own (summed) losses on the probes
    probe_gap = dict(scalars["tfrs_diag/overfit/probe/gap"])[last["step"]]
    assert probe_gap == pytest.approx((last["heldout"] - last["seen"]) / 64, rel=1e-5)
    assert history.history["probe_heldout_loss"][-1] == pytest.approx(last["heldout"] / 64, rel=1e-6)
    # Per example, an untrained in-batch softmax over 64 candidates is log(64).
    assert dict(scalars["tfrs_diag/overfit/probe/seen_loss"])[0] == pytest.approx(math.log(64), rel=0.05)


def test_a_keras_loss_summed_over_the_batch_gets_no_epoch_gap(tmp_path):
    x, y = _regression()
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=tf.keras.losses.MeanSquaredError(reduction="sum"))
    monitor = OverfittingMonitor(str(tmp_path), validation_data=(x[:100], y[:100]), verbose=0)
    model.fit(x[100:], y[100:], batch_size=64, epochs=2, callbacks=[monitor], verbose=0)
    scalars = summary.read_run(str(tmp_path / "train")).scalars
    assert "tfrs_diag/overfit/epoch/loss/val" in scalars and "tfrs_diag/overfit/epoch/loss/gap" not in scalars
    assert any("summed over the batch" in n for n in monitor.notes)

def test_empty_probes_and_bad_arguments_get_clear_errors(tmp_path):
    empty = np.zeros((0, 4), np.float32)
    with pytest.raises(ValueError, match="probe_data holds no examples"):
        OverfittingMonitor(str(tmp_path), probe_data=(empty, empty))
    with pytest.raises(ValueError, match="train_probe_data holds no examples"):
        OverfittingMonitor(str(tmp_path), train_probe_data=tf.data.Dataset.from_tensor_slices({"a": [1]}).take(0))
    with pytest.raises(ValueError, match="on_overfit"):
        OverfittingMonitor(str(tmp_path), on_overfit="restore")
    with pytest.raises(ValueError, match="probe_every_n_steps"):
        OverfittingMonitor(str(tmp_path), probe_every_n_steps=0)


def test_underfitting_compares_with_a_mean_predictor_not_only_the_untrained_model(tmp_path):
    # Ratings around 3.5 that no feature explains: the best a model can do is the mean.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 4)).astype(np.float32)
    y = (3.5 + rng.normal(size=(2048, 1))).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    monitor = OverfittingMonitor(str(tmp_path), probe_data=(x[:256], y[:256]), train_probe_data=(x[256:], y[256:]),
                                 probe_every_n_steps=4, verbose=0)
    model.fit(x[256:], y[256:], batch_size=64, epochs=4, callbacks=[monitor], verbose=0)
    base = monitor.baselines
    # The untrained model predicts ~0 (loss ~ 3.5^2 + 1); the mean predictor has loss ~ var(y) = 1.
    assert base["untrained"] > 8 and base["mean_predictor"] == pytest.approx(np.var(y[256:512]), rel=0.02)
    (alert,) = [a for a in monitor.alerts if a.kind == "underfitting"]  # once: it does not flap
    assert alert.evidence["baseline"] == base["mean_predictor"] and alert.evidence["loss"] < 0.2 * base["untrained"]


def test_probe_data_may_be_arrays_or_a_batched_or_unbatched_dataset():
    from tfrs_diag.callbacks._data import take_examples

    features = {"user_id": np.array([f"u{i}" for i in range(50)]), "item_index": np.arange(50)}
    want = take_examples(features, 16, "probe_data")
    ds = tf.data.Dataset.from_tensor_slices(features)
    for data in (ds, ds.batch(7)):
        got = take_examples(data, 16, "probe_data")
        for k in features:
            np.testing.assert_array_equal(got[k].numpy(), want[k].numpy())
    assert want["item_index"].shape == (16,)
    with pytest.raises(ValueError, match="same number of rows"):
        take_examples({"a": np.arange(3), "b": np.arange(4)}, 16, "probe_data")


def _feed(monitor, epochs):
    for epoch, logs in enumerate(epochs):
        monitor.on_epoch_begin(epoch)
        monitor.on_epoch_end(epoch, dict(logs))


def test_overfitting_trend_test_fires_on_a_steady_rise_and_names_metrics_that_still_improve(tmp_path):
    # Hand-made epoch logs: val_loss bottoms out at epoch 2 and rises; top-K accuracy keeps rising.
    val = [5.0, 4.0, 3.5, 3.6, 3.7, 3.9, 4.0, 4.2]
    epochs = [{"loss": 5.0 - 0.3 * e, "val_loss": v, "val_top_100_accuracy": 0.1 + 0.02 * e,
               "top_100_accuracy": 0.1 + 0.05 * e} for e, v in enumerate(val)]
    monitor = OverfittingMonitor(str(tmp_path), verbose=0)
    monitor.set_model(tf.keras.Sequential([tf.keras.layers.Dense(1)]))
    _feed(monitor, epochs)
    (alert,) = monitor.alerts
    # Epochs 2..6 are the first window of 5 rising values (S = 10, p = 0.014).
    assert alert.kind == "overfitting" and alert.epoch == 6
    assert alert.evidence["p_worse"] == pytest.approx(T.trend(val[2:7]).p_increasing)
    assert alert.evidence["still_improving"] == ["val_top_100_accuracy"]
    assert "val_top_100_accuracy still improves" in alert.message
    run = summary.read_run(str(tmp_path / "train"))
    gaps = dict(run.scalars["tfrs_diag/overfit/epoch/top_100_accuracy/gap"])
    assert gaps[7] == pytest.approx(epochs[7]["val_top_100_accuracy"] - epochs[7]["top_100_accuracy"])


def test_overfitting_trend_test_stays_quiet_on_noise(tmp_path):
    rng = np.random.default_rng(3)
    fired = 0
    for run in range(20):
        monitor = OverfittingMonitor(str(tmp_path / str(run)), verbose=0)
        monitor.set_model(tf.keras.Sequential([tf.keras.layers.Dense(1)]))
        _feed(monitor, [{"loss": 3.0, "val_loss": 3.0 + 0.1 * rng.normal()} for _ in range(10)])
        fired += any(a.kind == "overfitting" for a in monitor.alerts)
    # 6 overlapping windows per run, each at most ~4% false alarms: about 15% of runs; 3 of 20 seen.
    assert fired <= 5


# ---------------------------------------------------------------- reset, cadence, detectors


def test_one_instance_serves_two_fits_like_early_stopping(tmp_path):
    tf.keras.utils.set_random_seed(0)
    ids = np.arange(400) % 50  # a 1000-row table, 50 rows used: dead rows fire in every fit
    item = tf.keras.Input((), dtype=tf.int32)
    model = tf.keras.Model(item, tf.keras.layers.Dense(1)(EmbeddingProbe(tf.keras.layers.Embedding(1000, 8))(item)))
    model.compile(optimizer="adam", loss="mse")
    x, y = ids[:300], np.ones(300, np.float32)
    monitor = OverfittingMonitor(str(tmp_path), probe_data=(ids[300:], np.ones(100, np.float32)),
                                 train_probe_data=(x, y), probe_every_n_steps=2, verbose=0)
    for _ in range(2):
        model.fit(x, y, batch_size=50, epochs=2, callbacks=[monitor], verbose=0)
        assert [r["step"] for r in monitor.readings] == [0, 2, 4, 6, 8, 10, 12]  # not appended to the last fit's
        assert [a.kind for a in monitor.alerts if a.status == "firing"] == ["dead_embedding_rows"]
        assert len(monitor.epoch_logs) == 2 and monitor.best_epoch in (0, 1)
    assert monitor.baselines["untrained"] < 1.0  # measured again: the second fit starts from trained weights


def test_default_probe_cadence_follows_the_steps_per_epoch_and_an_explicit_one_is_kept(tmp_path):
    from tfrs_diag.callbacks.cadence import default_probe_every

    assert default_probe_every(78) == 9 and default_probe_every(3) == 1 and default_probe_every(None) == 100
    x, y = _regression(n=1280)
    for every, want in ((None, 5), (7, 7)):
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        monitor = OverfittingMonitor(str(tmp_path / str(every)), probe_data=(x[:64], y[:64]),
                                     train_probe_data=(x[64:], y[64:]), probe_every_n_steps=every, verbose=0)
        model.fit(x, y, batch_size=32, epochs=1, callbacks=[monitor], verbose=0)  # 40 steps per epoch
        steps = [r["step"] for r in monitor.readings]
        assert steps[1] == want and steps[-1] == 40
        if every is None:
            assert len(steps) - 1 >= 8  # at least 8 readings in the epoch
    assert monitor.probe_every_n_steps == 7


def test_detectors_replace_the_defaults_by_kind_and_unknown_kinds_are_refused(tmp_path):
    from tfrs_diag import detectors as D

    under = D.Underfitting(margin=0.05)
    monitor = OverfittingMonitor(str(tmp_path), detectors=[under, D.Overfitting("val_recall", window=4)], verbose=0)
    assert monitor.detectors["underfitting"] is under
    assert monitor.monitor == "val_recall" and monitor.mode == "max"
    with pytest.raises(ValueError, match="not a detector of this monitor"):
        OverfittingMonitor(str(tmp_path), detectors=[D.FairnessGap("ndcg_at_10")])


def test_nonfinite_probe_losses_pause_the_detectors_with_one_note(tmp_path):
    x, y = _regression()
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(5.0), loss="mse")  # diverges within a few steps
    monitor = OverfittingMonitor(str(tmp_path), probe_data=(x[:64], y[:64]), train_probe_data=(x[64:], y[64:]),
                                 validation_data=(x[:64], y[:64]), probe_every_n_steps=2, verbose=0)
    model.fit(x[64:], y[64:], batch_size=32, epochs=3, callbacks=[monitor], verbose=0)
    assert not math.isfinite(monitor.readings[-1]["heldout"])
    pauses = [n for n in monitor.notes if "NaN/Inf since step" in n]
    assert len(pauses) == 1 and monitor.pause.paused
    assert monitor.alerts == []  # no underfitting, one-epoch overfitting or trend alert from garbage values

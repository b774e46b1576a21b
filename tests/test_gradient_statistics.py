"""GradientStatistics on real `fit` runs: the numbers written are the real gradients."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from overfitting_scenarios import exploding_regression
from tfrs_diag import datasets, models, summary
from tfrs_diag.callbacks import GradientStatistics, NonFiniteGradientError
from tfrs_diag.capture import EMBEDDING_COLUMNS, SNAPSHOT_COLUMNS

SNAP = {c: j for j, c in enumerate(SNAPSHOT_COLUMNS)}
EMB = {c: j for j, c in enumerate(EMBEDDING_COLUMNS)}


@pytest.fixture(scope="module")
def small_data():
    return datasets.synthetic(num_users=60, num_items=90, num_interactions=1500, seed=3)


def _first_batch(data, batch_size=64, keys=("user_id", "item_id")):
    ds = tf.data.Dataset.from_tensor_slices({k: data.train[k] for k in keys}).batch(batch_size)
    return next(iter(ds))


def _dense(g):
    return tf.convert_to_tensor(g).numpy() if isinstance(g, tf.IndexedSlices) else g.numpy()


# ---------------------------------------------------------------- correctness


def test_norms_written_for_tfrs_model_equal_an_independent_gradient_tape(small_data, tmp_path):
    model = models.TwoTowerModel(small_data.users["user_id"], small_data.items["item_id"],
                                 embedding_dim=6, hidden=(5,))
    batch = _first_batch(small_data)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    ref = tape.gradient(loss, model.trainable_variables)
    w0 = [v.numpy().copy() for v in model.trainable_variables]
    lr = 0.1
    model.compile(optimizer=tf.keras.optimizers.SGD(lr))
    cb = GradientStatistics(str(tmp_path), every_n_steps=1, histogram_every_n_steps=1, verbose=0)
    hist = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, callbacks=[cb], verbose=0)

    w1 = [v.numpy() for v in model.trainable_variables]  # weight norms are of the updated weights
    tracked = cb.capture.tracked
    assert [t.name for t in tracked] == [
        "user_model/user_model_embedding/embeddings", "user_model/user_model_dense_0/kernel",
        "user_model/user_model_dense_0/bias", "item_model/item_model_embedding/embeddings",
        "item_model/item_model_dense_0/kernel", "item_model/item_model_dense_0/bias"]
    assert [t.sparse for t in tracked] == [True, False, False, True, False, False]
    run = summary.read_run(str(tmp_path / "train"))
    stats = cb.last_stats
    for t, g, w, w_after in zip(tracked, ref, w0, w1):
        dense = _dense(g)
        norm = np.linalg.norm(dense)
        written = dict(run.scalars[f"tfrs_diag/grad/norm/{t.name}"])
        assert written[1] == pytest.approx(norm, rel=1e-5)
        assert stats["snapshot"][t.index, SNAP["max_abs"]] == pytest.approx(np.abs(dense).max(), rel=1e-5)
        assert stats["snapshot"][t.index, SNAP["zero_fraction"]] == pytest.approx(np.mean(dense == 0), abs=1e-6)
        touched = np.unique(g.indices.numpy()) if t.sparse else slice(None)
        # Embedding tables: the norm of the rows the step touched (a full read would copy the table).
        assert stats["snapshot"][t.index, SNAP["weight_norm"]] == pytest.approx(
            np.linalg.norm(w_after[touched]), rel=1e-5)
        if t.sparse:
            rows = np.unique(g.indices.numpy())
            # SGD: dw = -lr * g, so ||dw|| / ||w|| over the touched rows is known exactly.
            expected_ratio = lr * np.linalg.norm(dense[rows]) / np.linalg.norm(w[rows])
            row_norms = np.linalg.norm(dense[rows], axis=1)
            emb = stats["embedding"][t.sparse_index]
            assert emb[EMB["unique_rows"]] == len(rows)
            assert emb[EMB["batch_rows"]] == 64
            assert emb[EMB["row_grad_norm_mean"]] == pytest.approx(row_norms.mean(), rel=1e-5)
            assert emb[EMB["row_grad_norm_max"]] == pytest.approx(row_norms.max(), rel=1e-5)
            hist_counts = run.histograms[f"tfrs_diag/embed/row_grad_norm_log10/{t.name}"][0][1][:, 2]
            assert hist_counts.sum() == len(rows)
            values_hist = run.histograms[f"tfrs_diag/grad/values/{t.name}"][0][1]
            assert values_hist[:, 2].sum() == dense[rows].size
        else:
            expected_ratio = lr * norm / max(np.linalg.norm(w), 1e-30)
            values_hist = run.histograms[f"tfrs_diag/grad/values/{t.name}"][0][1]
            assert values_hist[:, 2].sum() == dense.size
            assert values_hist[0, 0] == pytest.approx(dense.min(), rel=1e-5)
            assert values_hist[-1, 1] == pytest.approx(dense.max(), rel=1e-5)
        if np.linalg.norm(w) == 0:  # zero-initialised bias: the ratio is undefined
            assert np.isnan(stats["snapshot"][t.index, SNAP["update_ratio"]])
            assert f"tfrs_diag/grad/update_ratio/{t.name}" not in run.scalars
        else:
            assert stats["snapshot"][t.index, SNAP["update_ratio"]] == pytest.approx(expected_ratio, rel=1e-4)
    global_norm = np.sqrt(sum(np.sum(_dense(g) ** 2) for g in ref))
    assert dict(run.scalars["tfrs_diag/grad/global_norm"])[1] == pytest.approx(global_norm, rel=1e-5)
    # The norm also reaches Keras logs, where the progress bar and other callbacks see it.
    assert hist.history["grad_norm"][0] == pytest.approx(global_norm, rel=1e-5)
    layer = dict(run.scalars["tfrs_diag/grad/layer_norm/user_model/user_model_dense_0"])[1]
    assert layer == pytest.approx(np.sqrt(np.sum(_dense(ref[1]) ** 2) + np.sum(_dense(ref[2]) ** 2)), rel=1e-5)


def test_scalars_are_written_at_the_cadence_and_the_train_function_is_restored(small_data, tmp_path):
    model = models.TwoTowerModel(small_data.users["user_id"], small_data.items["item_id"], embedding_dim=4)
    model.compile(optimizer="adam")
    ds = models.retrieval_dataset(small_data.train, 100)  # 12 steps per epoch
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, histogram_every_n_steps=10, verbose=0)
    model.fit(ds, epochs=2, callbacks=[cb], verbose=0)
    run = summary.read_run(str(tmp_path / "train"))
    steps = [s for s, _ in run.scalars["tfrs_diag/grad/global_norm"]]
    assert steps == [5, 10, 15, 20]
    assert [s for s, _ in run.histograms["tfrs_diag/grad/values/user_model/user_model_embedding/embeddings"]] == [10, 20]
    # After fit the model trains exactly as before: no capture left in its step.
    assert "train_step" not in model.__dict__ and "apply_gradients" not in model.optimizer.__dict__
    assert model.train_function is None
    # A second fit continues the step count, reusing the instrumented train function.
    traced = cb._traced[1]
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    assert cb._traced[1] is traced
    steps = [s for s, _ in summary.read_run(str(tmp_path / "train")).scalars["tfrs_diag/grad/global_norm"]]
    assert steps == [5, 10, 15, 20, 25, 30, 35]


def _int_two_tower(data, seed=0, dim=6):
    tf.keras.utils.set_random_seed(seed)
    model = models.TwoTowerModel(num_users=len(data.users["user_id"]), num_items=len(data.items["item_id"]),
                                 embedding_dim=dim, hidden=(5,))
    return model


def test_jit_compile_gives_the_same_statistics_as_graph_mode(small_data, tmp_path):
    ds = models.retrieval_dataset(small_data.train, 128, keys=("user_index", "item_index"), shuffle_seed=None)
    ds = ds.unbatch().batch(128, drop_remainder=True).take(6)  # one shape: one XLA compilation
    results = {}
    for jit in (False, True):
        model = _int_two_tower(small_data)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1), jit_compile=jit)
        cb = GradientStatistics(str(tmp_path / f"jit{jit}"), every_n_steps=3, histogram_every_n_steps=3, verbose=0)
        model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
        results[jit] = cb.last_stats
    a, b = results[False], results[True]
    assert a["snapshot_step"] == b["snapshot_step"] == 6
    # The item tower's output bias gets a gradient of ~1e-7 (the in-batch softmax is
    # invariant to it): pure float noise, which XLA's fusions order differently.
    meaningful = a["snapshot"][:, SNAP["norm"]] > 1e-5
    assert meaningful.sum() == 5
    np.testing.assert_allclose(a["snapshot"][meaningful], b["snapshot"][meaningful], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(a["row_norm_hist"], b["row_norm_hist"])
    np.testing.assert_allclose(a["histogram"].sum(1), b["histogram"].sum(1))


def _regression_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((8,))
    x = tf.keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    out = tf.keras.layers.Dense(1, name="out")(x)
    return tf.keras.Model(inputs, out)


def _noisy_regression(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1)) + 2.0 * rng.normal(size=(n, 1))).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


def test_mirrored_strategy_matches_one_device_and_reports_a_noise_scale(tmp_path, mirrored_strategy):
    ds = _noisy_regression()
    single = _regression_model()
    single.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    cb1 = GradientStatistics(str(tmp_path / "one"), every_n_steps=4, verbose=0)
    single.fit(ds, epochs=1, callbacks=[cb1], verbose=0)

    strategy = mirrored_strategy
    with strategy.scope():
        mirrored = _regression_model()
        mirrored.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    cb2 = GradientStatistics(str(tmp_path / "two"), every_n_steps=4, verbose=0)
    mirrored.fit(ds, epochs=1, callbacks=[cb2], verbose=0)

    one = summary.read_run(str(tmp_path / "one" / "train")).scalars["tfrs_diag/grad/global_norm"]
    two = summary.read_run(str(tmp_path / "two" / "train")).scalars["tfrs_diag/grad/global_norm"]
    assert [s for s, _ in one] == [s for s, _ in two] == [4, 8]
    np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=1e-5)
    np.testing.assert_allclose(cb2.last_stats["snapshot"], cb1.last_stats["snapshot"], rtol=1e-4, atol=1e-7)
    assert "noise" not in cb1.last_stats  # one replica: no noise scale
    noise = cb2.last_stats["noise"]
    assert noise["replica_batch"] == 32
    assert np.isfinite(noise["b_simple"]) and noise["b_simple"] > 0
    written = summary.read_run(str(tmp_path / "two" / "train")).scalars["tfrs_diag/grad/noise_scale"]
    assert all(np.isfinite(v) and v > 0 for _, v in written)


def test_tfrs_retrieval_trains_under_mirrored_strategy(small_data, tmp_path, mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        model = models.TwoTowerModel(small_data.users["user_id"], small_data.items["item_id"], embedding_dim=4)
        model.compile(optimizer="adagrad")
    cb = GradientStatistics(str(tmp_path), every_n_steps=3, verbose=0)
    model.fit(models.retrieval_dataset(small_data.train, 128), epochs=1, callbacks=[cb], verbose=0)
    emb = cb.last_stats["embedding"]
    assert (emb[:, EMB["unique_rows"]] > 0).all() and (emb[:, EMB["unique_rows"]] <= 128).all()


def test_loss_scale_optimizer_statistics_are_of_unscaled_gradients(tmp_path):
    ds = _noisy_regression()
    runs = {}
    for scaled in (False, True):
        model = _regression_model()
        opt = tf.keras.optimizers.SGD(0.01)
        if scaled:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(opt, dynamic=False, initial_scale=1024.0)
        model.compile(optimizer=opt, loss="mse")
        cb = GradientStatistics(str(tmp_path / str(scaled)), every_n_steps=2, verbose=0)
        model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
        runs[scaled] = cb.last_stats["snapshot"]
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)


def test_mixed_float16_policy_trains_and_reports_finite_norms(tmp_path):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _regression_model()
        model.compile(optimizer=tf.keras.mixed_precision.LossScaleOptimizer(tf.keras.optimizers.SGD(0.01)),
                      loss="mse")
        cb = GradientStatistics(str(tmp_path), every_n_steps=2, verbose=0)
        model.fit(_noisy_regression(), epochs=1, callbacks=[cb], verbose=0)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    norms = cb.last_stats["snapshot"][:, SNAP["norm"]]
    # Unscaled: the same order of magnitude as a float32 run, not 2**15 times larger.
    assert np.isfinite(norms).all() and norms.max() < 1e3
    # float16 overflows at the initial scale of 2**15 are the optimizer's business: the
    # steps are skipped and counted, not reported as non-finite gradients.
    assert cb.last_stats["loss_scale_overflow_steps"] >= 1
    assert not cb.alerts


# ---------------------------------------------------------------- non-finite gradients


class _PoisonScale(tf.keras.layers.Layer):
    """y = x * w; the gradient of w alone is NaN on batches whose ``poison`` is set."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(), initializer="ones")

    def call(self, x, poison):
        @tf.custom_gradient
        def scale(x, w):
            def grad(dy):
                gw = tf.reduce_sum(dy * x)
                return dy * w, tf.where(tf.reduce_max(poison) > 0, tf.constant(np.nan, gw.dtype), gw)
            return x * w, grad
        return scale(x, self.w)


def _poisoned_model_and_data(poison_step, n_batches=10, batch=16):
    tf.keras.utils.set_random_seed(0)
    x_in = tf.keras.Input((4,), name="x")
    p_in = tf.keras.Input((1,), name="poison")
    h = tf.keras.layers.Dense(3, name="first")(x_in)
    h = _PoisonScale(name="poison_scale")(h, p_in)
    out = tf.keras.layers.Dense(1, name="last")(h)
    model = tf.keras.Model({"x": x_in, "poison": p_in}, out)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_batches * batch, 4)).astype(np.float32)
    y = rng.normal(size=(n_batches * batch, 1)).astype(np.float32)
    poison = np.zeros((n_batches * batch, 1), np.float32)
    poison[(poison_step - 1) * batch: poison_step * batch] = 1.0
    ds = tf.data.Dataset.from_tensor_slices(({"x": x, "poison": poison}, y)).batch(batch)
    return model, ds


@pytest.mark.parametrize("jit", [False, True])
def test_nan_planted_at_step_k_is_attributed_to_its_variable_and_step(tmp_path, jit):
    model, ds = _poisoned_model_and_data(poison_step=4)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit)
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    alerts = [a for a in cb.alerts if a.kind == "nonfinite_gradients"]
    assert len(alerts) == 1
    assert alerts[0].step == 4 and alerts[0].subject == "poison_scale/w"
    first = cb.last_stats["nonfinite_first_step"]
    names = [t.name for t in cb.capture.tracked]
    first_by_name = {names[i]: int(first[i]) for i in range(len(names))}
    # The NaN update of w at step 4 poisons every forward pass after it: the other
    # variables follow from step 5, and the alert names the origin.
    assert first_by_name.pop("poison_scale/w") == 4
    assert set(first_by_name.values()) == {5}
    # "alert" records and goes on: all 10 steps ran.
    assert int(model.optimizer.iterations.numpy()) == 10
    written = summary.read_run(str(tmp_path / "train")).alerts()
    assert [(a["kind"], a["step"], a["subject"]) for a in written] == [("nonfinite_gradients", 4, "poison_scale/w")]


def test_on_nonfinite_stop_stops_at_that_step_with_finite_weights_and_complete_logs(tmp_path):
    model, ds = _poisoned_model_and_data(poison_step=3)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    cb = GradientStatistics(str(tmp_path), every_n_steps=100, on_nonfinite="stop", verbose=0)
    model.fit(ds, epochs=3, callbacks=[cb], verbose=0)
    assert cb.stopped_at_step == 3
    assert int(model.optimizer.iterations.numpy()) == 3  # no step after the NaN one
    assert all(np.isfinite(w).all() for w in model.get_weights())
    run = summary.read_run(str(tmp_path / "train"))  # readable after the stop
    assert [(a["kind"], a["step"]) for a in run.alerts()] == [("nonfinite_gradients", 3)]
    # The stopping step's norms are on record: NaN for the variable that broke.
    assert np.isnan(dict(run.scalars["tfrs_diag/grad/norm/poison_scale/w"])[3])
    assert np.isfinite(dict(run.scalars["tfrs_diag/grad/norm/first/kernel"])[3])


def test_a_new_fit_starts_with_fresh_detector_state(tmp_path):
    # Stopped at the NaN step 3; the next fit (clean data, same callback) must not stop at
    # once on the old NaN, and a NaN in it is reported again at its own step.
    model, ds = _poisoned_model_and_data(poison_step=3)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, on_nonfinite="stop", verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    assert cb.stopped_at_step == 3
    _, ds2 = _poisoned_model_and_data(poison_step=6)
    model.fit(ds2, epochs=1, callbacks=[cb], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 3 + 6
    assert cb.stopped_at_step == 9
    assert [(a.kind, a.step) for a in cb.alerts if a.status != "cleared"] == [("nonfinite_gradients", 3),
                                                                               ("nonfinite_gradients", 9)]


def test_on_nonfinite_raise_names_the_variable_and_flushes_logs(tmp_path):
    model, ds = _poisoned_model_and_data(poison_step=2)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    cb = GradientStatistics(str(tmp_path), on_nonfinite="raise", verbose=0)
    with pytest.raises(NonFiniteGradientError, match=r"step 2 in poison_scale/w"):
        model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    assert summary.read_run(str(tmp_path / "train")).alerts()[0]["step"] == 2
    assert "train_step" not in model.__dict__  # cleaned up although fit was aborted


def test_exploding_gradients_alert_before_the_first_nan(tmp_path):
    # Linear regression with a learning rate past the stability limit from step 31: the
    # gradient norm grows geometrically until it overflows.
    x, y, model = exploding_regression()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    cb = GradientStatistics(str(tmp_path), every_n_steps=10, exploding_window=10, verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    alerts = {a.kind: a for a in cb.alerts}
    assert "exploding_gradients" in alerts and "nonfinite_gradients" in alerts
    assert 31 < alerts["exploding_gradients"].step <= 36
    assert alerts["nonfinite_gradients"].step > alerts["exploding_gradients"].step + 20
    assert alerts["exploding_gradients"].subject.startswith("linear/")
    # After the NaN, nothing else fires, and the pause is said once.
    nan_step = alerts["nonfinite_gradients"].step
    assert [a.kind for a in cb.alerts if a.step >= nan_step] == ["nonfinite_gradients"]
    assert len([n for n in cb.notes if "pause" in n]) == 1



def test_an_exploding_alert_clears_when_the_run_recovers_and_fires_again_on_the_next_spike(tmp_path):
    # Labels x1000 in two pairs of batches; clipnorm keeps the weights sane, so after each
    # spike the gradients (seen before clipping) return to their level.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3200, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1))).astype(np.float32)
    for lo in (39 * 32, 79 * 32):  # steps 40-41 and 80-81
        y[lo:lo + 64] *= 1000.0
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(1, name="linear")])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05, clipnorm=1.0), loss="mse")
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, exploding_window=10, verbose=0)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, callbacks=[cb], verbose=0)
    events = [(a.status, a.step) for a in cb.alerts if a.kind == "exploding_gradients" and a.subject == "linear/kernel"]
    # Fired at each spike's first step; cleared after 10 calm steps in a row (42-51, 82-91).
    assert events == [("firing", 40), ("cleared", 51), ("firing", 80), ("cleared", 91)], events
    run = summary.read_run(str(tmp_path / "train"))
    assert [(a["status"], a["step"]) for a in run.alerts() if a["subject"] == "linear/kernel"] == events

def test_in_graph_exploding_rule_is_the_pure_detectors(tmp_path):
    from tfrs_diag.detectors import ExplodingGradients

    x, y, model = exploding_regression()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    cb = GradientStatistics(str(tmp_path), every_n_steps=1, histograms=False, exploding_window=10, verbose=0)
    model.fit(ds.take(60), epochs=1, callbacks=[cb], verbose=0)
    run = summary.read_run(str(tmp_path / "train"))
    names = [t.name for t in cb.capture.tracked]
    series = {n: dict(run.scalars[f"tfrs_diag/grad/norm/{n}"]) for n in names}
    det = ExplodingGradients(window=10)
    pure = {}
    for step in range(1, 61):
        for f in det.observe(step, {n: series[n][step] for n in names}):
            pure[f.subject] = step
    in_graph = {a.subject: a.step for a in cb.alerts if a.kind == "exploding_gradients"}
    assert in_graph and in_graph == pure


def _mlp(activation, depth, init_std, seed=0):
    tf.keras.utils.set_random_seed(seed)
    init = tf.keras.initializers.RandomNormal(stddev=init_std, seed=seed)
    layers = [tf.keras.Input((16,))]
    layers += [tf.keras.layers.Dense(16, activation=activation, kernel_initializer=init, name=f"d{i}")
               for i in range(depth)]
    layers += [tf.keras.layers.Dense(1, name="out")]
    return tf.keras.Sequential(layers)


def _classification_data(n=2048, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


def test_vanishing_gradients_alert_names_the_early_layers_and_healthy_mlp_has_none(tmp_path):
    deep = _mlp("sigmoid", depth=8, init_std=0.05)
    deep.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    cb = GradientStatistics(str(tmp_path / "deep"), verbose=0)  # default cadence: 32 steps per epoch -> every 4
    deep.fit(_classification_data(), epochs=1, callbacks=[cb], verbose=0)
    assert cb.every_n_steps == 4
    vanishing = {a.subject for a in cb.alerts if a.kind == "vanishing_gradients"}
    assert "d0" in vanishing and "out" not in vanishing
    assert not [a for a in cb.alerts if a.kind == "exploding_gradients"]

    healthy = _mlp("relu", depth=2, init_std=0.3)
    healthy.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    cb = GradientStatistics(str(tmp_path / "healthy"), verbose=0)
    healthy.fit(_classification_data(), epochs=2, callbacks=[cb], verbose=0)
    assert cb.alerts == []


def _ranking_like(n, batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1))).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.parametrize("steps_per_epoch, expected_every", [(78, 9), (12, 4)])
def test_default_cadence_gives_at_least_8_readings_per_epoch_within_the_budget(tmp_path, steps_per_epoch,
                                                                               expected_every):
    # 78 steps per epoch is MovieLens-100k at batch 1024: the old default (100) gave no
    # reading in the first epoch, the vanishing test needs a streak of 3.
    model = _regression_model()
    model.compile(optimizer="sgd", loss="mse")
    cb = GradientStatistics(str(tmp_path), verbose=0, histograms=False)
    model.fit(_ranking_like(steps_per_epoch * 32, 32), epochs=2, callbacks=[cb], verbose=0)
    assert cb.every_n_steps == expected_every
    steps = [s for s, _ in summary.read_run(str(tmp_path / "train")).scalars["tfrs_diag/grad/global_norm"]]
    assert steps == list(range(expected_every, 2 * steps_per_epoch + 1, expected_every))
    first_epoch = [s for s in steps if s <= steps_per_epoch]
    # At least 8 readings per epoch, except that a reading is never more often than every
    # 4 steps (the host-side cost budget): a 12-step epoch gets 3.
    assert len(first_epoch) == (8 if steps_per_epoch == 78 else 3)
    from tfrs_diag.callbacks.cadence import default_every_n_steps
    assert default_every_n_steps(5000) == 100 and default_every_n_steps(78, steps_per_execution=4) == 12


def test_explicit_cadence_is_kept_and_unknown_epoch_length_reads_every_100(tmp_path):
    model = _regression_model()
    model.compile(optimizer="sgd", loss="mse")
    cb = GradientStatistics(str(tmp_path / "explicit"), every_n_steps=7, verbose=0)
    model.fit(_ranking_like(78 * 32, 32), epochs=1, callbacks=[cb], verbose=0)
    assert cb.every_n_steps == 7
    # A generator has no known length: the old cadence, 100.
    def gen():
        yield from _ranking_like(40 * 32, 32)
    ds = tf.data.Dataset.from_generator(gen, output_signature=(tf.TensorSpec((None, 8)), tf.TensorSpec((None, 1))))
    cb = GradientStatistics(str(tmp_path / "unknown"), verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    assert cb.every_n_steps == 100


# ---------------------------------------------------------------- bad input


def test_bad_arguments_get_clear_errors(tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    with pytest.raises(ValueError, match="log_dir=.*file.txt"):
        GradientStatistics(str(not_a_dir / "logs"))
    for bad in (0, -5):
        with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
            GradientStatistics(str(tmp_path), every_n_steps=bad)
        with pytest.raises(ValueError, match="histogram_every_n_steps must be a positive integer"):
            GradientStatistics(str(tmp_path), histogram_every_n_steps=bad)
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        GradientStatistics(str(tmp_path), on_nonfinite="ignore")


def test_model_without_optimizer_fails_at_train_begin(tmp_path):
    model = _regression_model()
    cb = GradientStatistics(str(tmp_path))
    cb.set_model(model)
    with pytest.raises(RuntimeError, match=r"model.compile\(optimizer="):
        cb.on_train_begin()


def test_steps_per_execution_keeps_the_cadence_or_is_rejected(tmp_path):
    model = _regression_model()
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=4)
    cb = GradientStatistics(str(tmp_path / "ok"), every_n_steps=4, verbose=0)
    model.fit(_noisy_regression(), epochs=2, callbacks=[cb], verbose=0)  # 8 steps per epoch
    steps = [s for s, _ in summary.read_run(str(tmp_path / "ok" / "train")).scalars["tfrs_diag/grad/global_norm"]]
    assert steps == [4, 8, 12, 16]
    with pytest.raises(ValueError, match="steps_per_execution=4 is larger than every_n_steps=2"):
        model.fit(_noisy_regression(), epochs=1, verbose=0,
                  callbacks=[GradientStatistics(str(tmp_path / "bad"), every_n_steps=2, verbose=0)])


# ---------------------------------------------------------------- memory


_MEMORY_CHILD = textwrap.dedent("""
    import os, resource, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    import tfrs_diag
    from tfrs_diag import models
    rows = 1_000_000
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(num_users=1000, num_items=rows, embedding_dim=64)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    data = {"user_index": rng.integers(0, 1000, 4096 * 4).astype(np.int32),
            "item_index": rng.integers(0, rows, 4096 * 4).astype(np.int32)}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(4096)
    callbacks = []
    if sys.argv[1] == "diag":
        callbacks = [tfrs_diag.callbacks.GradientStatistics(sys.argv[2], every_n_steps=1,
                                                            histogram_every_n_steps=1, verbose=0)]
    model.fit(ds.take(1), epochs=1, verbose=0, callbacks=callbacks)  # build + trace
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.fit(ds, epochs=2, verbose=0, callbacks=callbacks)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


@pytest.mark.slow
def test_million_row_table_statistics_allocate_no_dense_gradient(tmp_path):
    """A densified 1M x 64 float32 gradient is 256 MB; statistics must not come near it.

    Peak RSS of the steps (after tracing) is compared between plain fit and fit with
    every statistic computed at every step; each runs in its own process.
    """
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    peaks = {}
    for variant in ("plain", "diag"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, variant, str(tmp_path)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[variant] = [int(x) for x in out.stdout.split()[-2:]]
    table = 1_000_000 * 64 * 4
    assert peaks["diag"][1] - peaks["plain"][1] < table / 4, peaks

"""GradientStatistics, OverfittingMonitor and EmbeddingProbe on tutorial models under MirroredStrategy.

The model is built and compiled inside ``strategy.scope()`` (two logical CPUs, the
session's one strategy); every value must equal the one-device computation on the same
global batch, from the same weights:

- gradient norms: TFRS' ``train_step`` does not scale the loss by the number of replicas
  and the optimizer sums the replicas' gradients, so the applied gradient is
  ``sum_r grad L(batch_r)`` over the replicas' halves of the global batch (neither
  tutorial loss is additive over examples: in-batch negatives for retrieval, a mean for
  ranking). The written norms are checked against a one-device tape over the two halves.
- the monitor's probe losses: every replica evaluates the whole probe, so a reading is
  the one-device loss of the probe examples at the same weights.
- EmbeddingProbe usage counts: each replica counts its own lookups, reads sum them (the
  quickstart's movie tower is left out: each replica scores the whole catalog for
  FactorizedTopK, so it really is looked up more often).

The tutorial's own ranking model (MeanSquaredError with the default reduction) cannot
train under a strategy at all, with or without diagnostics: Keras refuses the loss
reduction. The ranking model here is the tutorial's with ``reduction=SUM``, as the
tf.distribute guide prescribes (with the tutorial's ``[B]`` labels against ``[B, 1]``
predictions the value still behaves like a mean: the labels broadcast).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tutorial_models as T
from tfrs_diag import summary
from tfrs_diag.callbacks import GradientStatistics, OverfittingMonitor
from tfrs_diag.layers.embedding_probe import counting_paused

BATCH = 64  # global: 32 per replica
PROBE = 48


@pytest.fixture(scope="module")
def data():
    return T.movielens_like(num_ratings=600)


@pytest.fixture(scope="module")
def zoo(data):
    return T.cases(data)


def _ranking_sum(data):
    """The basic ranking tutorial's model with the sum-reduced MSE that tf.distribute needs."""
    model = T._RankingTask(T._RankingModel(np.unique(data.ratings["user_id"]), np.unique(data.movies)))
    model.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.SUM),
                                    metrics=[tf.keras.metrics.RootMeanSquaredError()])
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    return model


def _build(name, data, zoo, strategy=None, probed=False, weights=None):
    """A compiled model (inside ``strategy.scope()`` if given), its weights created, optionally set."""
    tf.keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    first = next(iter(zoo[name].train.batch(8)))
    with scope, counting_paused():
        if probed:
            with T.probed():
                model = _ranking_sum(data) if name == "basic_ranking" else zoo[name].build()
        else:
            model = _ranking_sum(data) if name == "basic_ranking" else zoo[name].build()
        if name == "quickstart":  # create the towers' weights (no lookups counted)
            model.user_model(first["user_id"])
            model.movie_model(first["movie_title"])
        else:
            model({k: first[k] for k in ("user_id", "movie_title")})
    if weights is not None:
        for v, w in zip(model.trainable_variables, weights):
            v.assign(w)
    return model


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _scalars(log_dir):
    return summary.read_run(os.path.join(log_dir, "train")).scalars


def _norms(log_dir):
    """{tag: [(step, value)]} of every gradient norm GradientStatistics wrote."""
    return {t: v for t, v in _scalars(log_dir).items() if t.startswith("tfrs_diag/grad/norm/")
            or t == "tfrs_diag/grad/global_norm"}


def _own_loss(model, examples) -> float:
    with counting_paused():
        return float(model.compute_loss({k: tf.constant(v) for k, v in examples.items()}, training=False))


def _arrays(ds, n):
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(ds.batch(n))))


# ---------------------------------------------------------------- gradient norms


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "basic_ranking"])
def test_gradient_norms_under_mirrored_strategy_are_the_summed_replica_gradients(data, zoo, name, tmp_path,
                                                                                 mirrored_strategy):
    case = zoo[name]
    one = _build(name, data, zoo)
    two = _build(name, data, zoo, mirrored_strategy, weights=_weights(one))
    cb = GradientStatistics(str(tmp_path), every_n_steps=1, verbose=0)
    two.fit(case.train.batch(BATCH), epochs=1, steps_per_epoch=1, verbose=0, callbacks=[cb])
    norms = _norms(str(tmp_path))
    assert all([s for s, _ in v] == [1] for v in norms.values())
    assert cb.last_stats["noise"]["replica_batch"] == BATCH // 2  # two replicas, half the batch each

    # One device, same weights: each replica's half of the global batch, the losses summed.
    batch = next(iter(case.train.batch(BATCH)))
    half = BATCH // 2
    with tf.GradientTape() as tape:
        loss = tf.add_n([one.compute_loss({k: v[i:i + half] for k, v in batch.items()}, training=True)
                         for i in (0, half)])
    expected = [float(tf.norm(tf.convert_to_tensor(g))) for g in tape.gradient(loss, one.trainable_variables)]
    # Layer names differ between the two builds: variables are matched by their position.
    written = [norms[summary.tag("grad", "norm", t.name)][0][1] for t in cb.capture.tracked]
    np.testing.assert_allclose(written, expected, rtol=1e-4)
    assert norms["tfrs_diag/grad/global_norm"][0][1] == pytest.approx(float(np.linalg.norm(expected)), rel=1e-4)
    # Not the gradient of the whole batch on one device: the check would tell the two apart.
    with tf.GradientTape() as tape:
        whole = one.compute_loss(dict(batch), training=True)
    whole_norms = [float(tf.norm(tf.convert_to_tensor(g))) for g in tape.gradient(whole, one.trainable_variables)]
    assert not np.allclose(written, whole_norms, rtol=1e-2)


# ---------------------------------------------------------------- monitor probes and usage counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "basic_ranking"])
def test_monitor_probe_losses_and_usage_counts_under_mirrored_strategy_equal_one_device(data, zoo, name, tmp_path,
                                                                                        mirrored_strategy):
    case = zoo[name]
    heldout, seen = _arrays(case.validation, PROBE), _arrays(case.train, PROBE)
    one = _build(name, data, zoo, probed=True)
    two = _build(name, data, zoo, mirrored_strategy, probed=True, weights=_weights(one))
    monitors = {}
    for where, model in (("one", one), ("two", two)):
        monitors[where] = OverfittingMonitor(
            str(tmp_path / where), validation_data=case.validation.batch(32), probe_data=heldout,
            train_probe_data=seen, probe_size=PROBE, probe_every_n_steps=2, verbose=0)
        model.fit(case.train.batch(BATCH), epochs=1, verbose=0, callbacks=[monitors[where]])
    m_one, m_two = monitors["one"], monitors["two"]
    assert [r["step"] for r in m_two.readings] == [r["step"] for r in m_one.readings] == [0, 2, 4, 6, 8]
    assert _scalars(str(tmp_path / "two"))["tfrs_diag/overfit/probe/heldout_loss"][-1][0] == 8

    # The untrained readings are the one-device losses (same weights).
    assert m_two.readings[0]["heldout"] == pytest.approx(m_one.readings[0]["heldout"], rel=1e-5)
    assert m_two.readings[0]["seen"] == pytest.approx(m_one.readings[0]["seen"], rel=1e-5)

    # Usage counts: every replica's lookups, summed; the probes counted none.
    towers = ["user_model.layers[1]"] if name == "quickstart" else \
        ["ranking_model.user_embeddings.layers[1]", "ranking_model.movie_embeddings.layers[1]"]
    n_train = len(_arrays(case.train, 1 << 20)["user_id"])
    n_val = len(_arrays(case.validation, 1 << 20)["user_id"])
    for path in towers:
        counts_two = T.resolve(two, path).usage_counts.numpy()
        np.testing.assert_array_equal(counts_two, T.resolve(one, path).usage_counts.numpy(), err_msg=path)
        assert counts_two.sum() == n_train + n_val  # one epoch, one evaluation, no probe lookups

    # The last reading is the one-device loss at the mirrored model's final weights.
    for v, w in zip(one.trainable_variables, _weights(two)):
        v.assign(w)
    assert m_two.readings[-1]["heldout"] == pytest.approx(_own_loss(one, heldout), rel=1e-5)
    assert m_two.readings[-1]["seen"] == pytest.approx(_own_loss(one, seen), rel=1e-5)

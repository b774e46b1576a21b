"""GradientStatistics, OverfittingMonitor and EmbeddingProbe on data in every form users pass.

Three tutorial models of `tutorial_models` (the quickstart retrieval model, basic
ranking, which pops its label in ``compute_loss``, and a functional Keras CTR model fed
``(x, y)`` tuples) are trained on training data as a batched dataset (with and without
``drop_remainder``), a repeated dataset with ``steps_per_epoch``, a generator (through
``tf.data.Dataset.from_generator`` and passed to ``fit`` as is) and numpy arrays with
``batch_size``; and with validation data as a batched or an unbatched dataset, numpy
arrays, ``validation_split`` or none. Each run must train to the same loss as the same
``fit`` without the diagnostics, write the diagnostics' tags at the steps they are due,
and where a diagnostic computes a loss, it is the model's own loss on those examples.

The last part: a `fit` with GradientStatistics that raises leaves a model that trains
without it, and a dataset of unknown cardinality keeps the capture for every epoch.
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

import tutorial_models as T
from tfrs_diag import summary
from tfrs_diag.callbacks import GradientStatistics, OverfittingMonitor
from tfrs_diag.layers import EmbeddingProbe
from tfrs_diag.layers.embedding_probe import counting_paused

MODELS = ("quickstart", "basic_ranking", "functional_ctr")
TRAIN_FORMS = ("batched", "drop_remainder", "repeat", "from_generator", "generator", "numpy")
VALIDATION_FORMS = ("monitor_batched", "monitor_unbatched", "monitor_numpy", "fit_batched", "fit_numpy",
                    "validation_split", "none")
BATCH = 64
EVERY = 2  # GradientStatistics' and the monitor's cadence
PROBE = 48
REPEAT_STEPS = 3


@pytest.fixture(scope="module")
def zoo():
    return T.cases(T.movielens_like(num_ratings=600))


def _arrays(ds, n=None):
    """The first ``n`` (default all) examples of an unbatched dataset as numpy."""
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(ds.batch(n or 1 << 20))))


def _rows(arrays) -> int:
    return len(tf.nest.flatten(arrays)[0])


def _fit_arrays(arrays) -> dict:
    """``fit``/``evaluate`` keyword arguments for arrays: ``x`` (and ``y`` for (x, y) tuples)."""
    return dict(x=arrays[0], y=arrays[1]) if isinstance(arrays, tuple) else dict(x=arrays)


def _train_form(case, form):
    """(fit keyword arguments, epochs, examples trained on per epoch, steps per epoch)."""
    ds = case.train
    n = _rows(_arrays(ds))
    spec = ds.batch(BATCH).element_spec

    def batches():
        yield from ds.batch(BATCH).as_numpy_iterator()

    full = math.ceil(n / BATCH)
    if form == "batched":
        return dict(x=ds.batch(BATCH)), 2, n, full
    if form == "drop_remainder":
        return dict(x=ds.batch(BATCH, drop_remainder=True)), 2, n // BATCH * BATCH, n // BATCH
    if form == "repeat":
        return dict(x=ds.batch(BATCH).repeat(), steps_per_epoch=REPEAT_STEPS), 2, REPEAT_STEPS * BATCH, REPEAT_STEPS
    if form == "from_generator":  # unknown cardinality: Keras ends each epoch on OutOfRangeError
        return dict(x=tf.data.Dataset.from_generator(batches, output_signature=spec)), 2, n, full
    if form == "generator":  # read once: one epoch
        return dict(x=batches()), 1, n, full
    if form == "numpy":
        return dict(**_fit_arrays(_arrays(ds)), batch_size=BATCH), 2, n, full
    raise AssertionError(form)


_baselines: dict = {}


def _baseline_loss(case, form, **kwargs) -> float:
    """The final training loss of the same fit without any diagnostic."""
    key = (case.name, form, tuple(sorted(kwargs)))
    if key not in _baselines:
        fit_kwargs, epochs, _, _ = _train_form(case, form)
        model = T.seeded_build(case)
        _baselines[key] = model.fit(**fit_kwargs, **kwargs, epochs=epochs, verbose=0).history["loss"][-1]
    return _baselines[key]


def _own_loss(model, examples) -> float:
    """The model's own loss on a probe's examples (a feature dict or an (x, y) tuple); counts no lookups."""
    with counting_paused():
        if isinstance(examples, tuple):
            x, y = examples
            return float(model.compiled_loss(tf.constant(y), model(x, training=False)))
        return float(model.compute_loss({k: tf.constant(v) for k, v in examples.items()}, training=False))


def _numpy(structure):
    return tf.nest.map_structure(lambda t: t.numpy(), structure)


def _scalars(log_dir):
    return summary.read_run(os.path.join(log_dir, "train")).scalars


def _steps(scalars, tag):
    return [s for s, _ in scalars.get(tag, [])]


def _expected_readings(epochs, steps_per_epoch):
    """Steps of the monitor's probe readings: before training, every EVERY steps, each epoch end."""
    ends = {steps_per_epoch * (e + 1) for e in range(epochs)}
    return sorted({0} | set(range(EVERY, epochs * steps_per_epoch + 1, EVERY)) | ends)


def _check_gradient_tags(model, log_dir, total_steps):
    scalars = _scalars(log_dir)
    norms = [t for t in scalars if t.startswith("tfrs_diag/grad/norm/")]
    assert len(norms) == len(model.trainable_variables)
    # Every epoch gets its readings (an epoch that ended on OutOfRangeError did not detach the capture).
    assert _steps(scalars, "tfrs_diag/grad/global_norm") == list(range(EVERY, total_steps + 1, EVERY))
    values = [v for _, v in scalars["tfrs_diag/grad/global_norm"]]
    assert all(np.isfinite(values)) and min(values) > 0


# ---------------------------------------------------------------- training data


@pytest.mark.parametrize("form", TRAIN_FORMS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow  # a fit per cell, plus the same fit without the diagnostics
def test_gradient_statistics_on_every_form_of_training_data(zoo, name, form, tmp_path):
    case = zoo[name]
    fit_kwargs, epochs, _, steps = _train_form(case, form)
    model = T.seeded_build(case)
    cb = GradientStatistics(str(tmp_path), every_n_steps=EVERY, verbose=0)
    history = model.fit(**fit_kwargs, epochs=epochs, verbose=0, callbacks=[cb])
    assert history.history["loss"][-1] == pytest.approx(_baseline_loss(case, form), rel=1e-5, abs=1e-6)
    _check_gradient_tags(model, str(tmp_path), epochs * steps)
    # The optimizer's count: on data of unknown length tf-keras also counts the step
    # whose input ran out (its optimizer increments `iterations` there), and so do we.
    assert cb.last_stats["step"] == int(model.optimizer.iterations) >= epochs * steps
    assert "grad_norm" in history.history  # the capture's norm reached the Keras logs every epoch
    assert not cb.capture.attached and "train_step" not in vars(model)


@pytest.mark.parametrize("form", TRAIN_FORMS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow  # a fit per cell, plus the same fit without the diagnostics
def test_monitor_and_embedding_probe_on_every_form_of_training_data(zoo, name, form, tmp_path):
    case = zoo[name]
    fit_kwargs, epochs, examples, steps = _train_form(case, form)
    heldout, seen = _arrays(case.validation, PROBE), _arrays(case.train, PROBE)
    model = T.seeded_build(case, probe_embeddings=True)
    cb = OverfittingMonitor(str(tmp_path), probe_data=heldout, train_probe_data=seen, probe_size=PROBE,
                            probe_every_n_steps=EVERY, verbose=0)
    history = model.fit(**fit_kwargs, epochs=epochs, verbose=0, callbacks=[cb])
    assert history.history["loss"][-1] == pytest.approx(_baseline_loss(case, form), rel=1e-5, abs=1e-6)

    expected = _expected_readings(epochs, steps)
    assert [r["step"] for r in cb.readings] == expected
    scalars = _scalars(str(tmp_path))
    assert _steps(scalars, "tfrs_diag/overfit/probe/heldout_loss") == expected
    assert _steps(scalars, "tfrs_diag/overfit/probe/gap") == expected
    # The last readings (at the last epoch end) are the model's own losses on those examples.
    assert cb.readings[-1]["heldout"] == pytest.approx(_own_loss(model, heldout), rel=case.rtol)
    assert cb.readings[-1]["seen"] == pytest.approx(_own_loss(model, seen), rel=case.rtol)
    assert history.history["probe_heldout_loss"][-1] == pytest.approx(cb.readings[-1]["heldout"] / cb.probe_scale)

    # Every training lookup counted once, the probes' none.
    probe = T.resolve(model, case.embedding_attr)
    assert isinstance(probe, EmbeddingProbe)
    assert float(tf.reduce_sum(probe.usage_counts)) == epochs * examples
    tables = [t for t in scalars if t.startswith("tfrs_diag/embed/dead_row_fraction/")]
    epoch_ends = [steps * (e + 1) for e in range(epochs)]
    assert tables and all(_steps(scalars, t) == epoch_ends for t in tables)


# ---------------------------------------------------------------- validation data


def _validation_form(case, form):
    """(monitor keyword arguments, extra fit keyword arguments, held-out probe examples as numpy or None)."""
    val = case.validation
    first = _arrays(val, PROBE)
    if form == "monitor_batched":
        return dict(validation_data=val.batch(32)), {}, first
    if form == "monitor_unbatched":
        return dict(validation_data=val), {}, first
    if form == "monitor_numpy":
        return dict(validation_data=_arrays(val)), {}, first
    if form == "fit_batched":
        return dict(probe_data=val.batch(32, drop_remainder=True)), dict(validation_data=val.batch(32)), first
    if form == "fit_numpy":
        arrays = _arrays(val)
        return dict(probe_data=arrays), dict(validation_data=arrays), first
    if form == "validation_split":
        # Keras validates on the last 20% of the arrays; the probe takes the first of those.
        train = _arrays(case.train)
        tail = tf.nest.map_structure(lambda a: a[int(0.8 * len(a)):], train)
        return dict(probe_data=tail), dict(validation_split=0.2), tf.nest.map_structure(lambda a: a[:PROBE], tail)
    if form == "none":
        return {}, {}, None
    raise AssertionError(form)


@pytest.mark.parametrize("form", VALIDATION_FORMS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow  # a fit per cell, plus the same fit without the diagnostics
def test_every_form_of_validation_data(zoo, name, form, tmp_path):
    case = zoo[name]
    monitor_kwargs, fit_extra, heldout = _validation_form(case, form)
    train_form = "numpy" if form == "validation_split" else "batched"
    fit_kwargs, epochs, _, steps = _train_form(case, train_form)
    if form == "validation_split":
        steps = math.ceil(int(0.8 * _rows(_arrays(case.train))) / BATCH)
    seen = _arrays(case.train, PROBE)
    model = T.seeded_build(case, probe_embeddings=True)
    grads = GradientStatistics(str(tmp_path), every_n_steps=EVERY, verbose=0)
    monitor = OverfittingMonitor(str(tmp_path), **monitor_kwargs, train_probe_data=seen, probe_size=PROBE,
                                 probe_every_n_steps=EVERY, verbose=0)
    history = model.fit(**fit_kwargs, **fit_extra, epochs=epochs, verbose=0, callbacks=[grads, monitor])
    base = _baseline_loss(case, train_form, **fit_extra) if form in ("validation_split",) else \
        _baseline_loss(case, train_form)
    assert history.history["loss"][-1] == pytest.approx(base, rel=1e-5, abs=1e-6)
    _check_gradient_tags(model, str(tmp_path), epochs * steps)

    scalars = _scalars(str(tmp_path))
    assert [r["step"] for r in monitor.readings] == _expected_readings(epochs, steps)
    assert monitor.readings[-1]["seen"] == pytest.approx(_own_loss(model, seen), rel=case.rtol)
    if heldout is None:
        assert monitor.readings[-1]["heldout"] is None
        assert not [t for t in scalars if t.startswith("tfrs_diag/overfit/epoch/")]
        assert any("no validation data" in n for n in monitor.notes)
        return
    assert monitor.readings[-1]["heldout"] == pytest.approx(_own_loss(model, heldout), rel=case.rtol)
    # The epoch-level gap, at each epoch, from the validation loss of that epoch.
    val = scalars["tfrs_diag/overfit/epoch/loss/val"]
    assert [s for s, _ in val] == list(range(epochs))
    np.testing.assert_allclose([v for _, v in val], [e["val_loss"] for e in monitor.epoch_logs], rtol=1e-6)
    if form.startswith("monitor_"):
        # The monitor's own evaluation: the model's loss on all validation examples in batches of 32.
        want = model.evaluate(**_fit_arrays(_arrays(case.validation)), batch_size=32, verbose=0, return_dict=True)
        assert monitor.epoch_logs[-1]["val_loss"] == pytest.approx(want["loss"], rel=case.rtol)
        # Keras had no validation data: the val_* values in its logs are the monitor's.
        assert history.history["val_loss"] == [e["val_loss"] for e in monitor.epoch_logs]
    else:
        assert monitor.epoch_logs[-1]["val_loss"] == history.history["val_loss"][-1]


def test_monitor_data_that_can_be_read_only_once_or_never_ends_gets_a_clear_error(zoo, tmp_path):
    val = zoo["basic_ranking"].validation

    def generator():
        yield from val.batch(32).as_numpy_iterator()

    with pytest.raises(ValueError, match=r"validation_data is a generator, which can be read only once.*"
                                         r"from_generator"):
        OverfittingMonitor(str(tmp_path), validation_data=generator(), verbose=0)
    with pytest.raises(ValueError, match=r"probe_data is a \w*Iterator\w*, which can be read only once"):
        OverfittingMonitor(str(tmp_path), probe_data=iter(val.batch(32)), verbose=0)
    with pytest.raises(ValueError, match=r"train_probe_data is a generator"):
        OverfittingMonitor(str(tmp_path), train_probe_data=generator(), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data is an infinite dataset"):
        OverfittingMonitor(str(tmp_path), validation_data=val.batch(32).repeat(), verbose=0)
    # Re-readable forms of the same data are accepted: a from_generator dataset, a repeated probe.
    spec = val.batch(32).element_spec
    OverfittingMonitor(str(tmp_path), validation_data=tf.data.Dataset.from_generator(generator, output_signature=spec),
                       probe_data=val.repeat(), verbose=0)


# ---------------------------------------------------------------- a fit that raises


class _RaiseAtBatch(tf.keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("another callback failed")


def _event_files(log_dir):
    out = {}
    for root, _, files in os.walk(log_dir):
        for f in files:
            path = os.path.join(root, f)
            out[path] = os.path.getsize(path)
    return out


def _assert_unpatched(model):
    assert "train_step" not in vars(model) and "make_train_function" not in vars(model)
    assert "apply_gradients" not in vars(model.optimizer) and "_tfrs_diag_capture" not in vars(model.optimizer)


def _later_fit_is_clean(case, model, log_dir, reference_loss):
    """A later fit without the callback: trains like the reference, unpatches, writes nothing."""
    before = _event_files(log_dir)
    history = model.fit(case.train.batch(BATCH), epochs=1, verbose=0)
    _assert_unpatched(model)
    assert "grad_norm" not in history.history
    assert _event_files(log_dir) == before  # no new tfrs_diag events
    assert history.history["loss"][-1] == pytest.approx(reference_loss, rel=1e-5, abs=1e-6)


def test_an_exception_from_another_callback_leaves_a_model_that_trains_without_the_capture(zoo, tmp_path):
    case = zoo["basic_ranking"]

    def run(with_statistics):
        model = T.seeded_build(case)
        callbacks = [_RaiseAtBatch(4)]
        cb = GradientStatistics(str(tmp_path), every_n_steps=EVERY, verbose=0) if with_statistics else None
        with pytest.raises(RuntimeError, match="another callback failed"):
            model.fit(case.train.batch(BATCH), epochs=1, verbose=0, callbacks=[cb, *callbacks] if cb else callbacks)
        return model

    reference = run(False)
    reference_loss = reference.fit(case.train.batch(BATCH), epochs=1, verbose=0).history["loss"][-1]
    model = run(True)
    # What was written before the error is on disk: the readings of steps 2 and 4.
    assert _steps(_scalars(str(tmp_path)), "tfrs_diag/grad/global_norm") == [2, 4]
    _later_fit_is_clean(case, model, str(tmp_path), reference_loss)


def test_an_error_inside_a_step_unpatches_the_model_at_once_and_keeps_the_logs(zoo, tmp_path):
    case = zoo["basic_ranking"]

    def broken():  # the third batch lacks a feature
        for i, batch in enumerate(case.train.batch(BATCH).as_numpy_iterator()):
            if i == 2:
                batch = {k: v for k, v in batch.items() if k != "movie_title"}
            yield batch

    def run(with_statistics):
        model = T.seeded_build(case)
        cb = [GradientStatistics(str(tmp_path), every_n_steps=1, verbose=0)] if with_statistics else []
        with pytest.raises(tf.errors.InvalidArgumentError, match="did not match the expected structure"):
            model.fit(broken(), epochs=1, verbose=0, callbacks=cb)
        return model

    reference = run(False)
    reference_loss = reference.fit(case.train.batch(BATCH), epochs=1, verbose=0).history["loss"][-1]
    model = run(True)
    _assert_unpatched(model)  # the failing step's guard detached before the error left fit
    assert model.train_function is None
    assert _steps(_scalars(str(tmp_path)), "tfrs_diag/grad/global_norm") == [1, 2]
    _later_fit_is_clean(case, model, str(tmp_path), reference_loss)


def test_unknown_cardinality_keeps_the_capture_across_epochs(zoo, tmp_path):
    case = zoo["quickstart"]
    spec = case.train.batch(BATCH).element_spec

    def batches():
        yield from case.train.batch(BATCH).as_numpy_iterator()

    ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
    assert ds.cardinality() == tf.data.UNKNOWN_CARDINALITY
    steps = math.ceil(_rows(_arrays(case.train)) / BATCH)
    model = T.seeded_build(case)
    cb = GradientStatistics(str(tmp_path), every_n_steps=EVERY, verbose=0)
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[cb])
    norms = _steps(_scalars(str(tmp_path)), "tfrs_diag/grad/global_norm")
    assert norms == list(range(EVERY, 2 * steps + 1, EVERY))
    assert [s for s in norms if s > steps]  # the second epoch has readings
    assert len(history.history["grad_norm"]) == 2
    assert cb.capture.read()["step"] == int(model.optimizer.iterations)  # Keras' count (see above)
    _assert_unpatched(model)

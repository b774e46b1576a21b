"""The probe runner of `OverfittingMonitor`: losses of fixed held-out and training examples.

One traced call computes the loss on both probes, saving and restoring metric state in
the same call (Keras' training metrics are untouched) with `EmbeddingProbe` counting
paused. Also the numbers the detectors compare losses with: the per-example scale of a
sum-reduced TFRS loss and the trivial baselines (mean predictor, uniform softmax).
"""

from __future__ import annotations

import math
from typing import Any

from tfrs_diag._keras import tf
from tfrs_diag.layers.embedding_probe import counting_paused


# Feature names a TFRS ranking model's label is looked for under (after ``model.label_key``).
LABEL_KEYS = ("rating", "user_rating", "label", "labels", "click", "clicked", "target", "y")


class ProbeRunner:
    """Runs the held-out and training probes (either may be None) on a model; traces once per model.

    ``run`` returns ``(heldout, seen)`` losses as the model computes them (a TFRS
    retrieval loss is a sum over the probe). The function is traced again once the
    first train step has built the model and its metrics (``stepped``), so that every
    metric variable is in the saved-and-restored set; then reused, across fits too.
    """

    def __init__(self, heldout: Any, seen: Any, size: int):
        self.heldout, self.seen, self.size = heldout, seen, int(size)
        self._fn = None
        self._key = None

    @property
    def active(self) -> bool:
        return self.heldout is not None or self.seen is not None

    def run(self, model, is_tfrs: bool, stepped: bool) -> tuple[float | None, float | None]:
        key = (id(model), stepped)
        if self._fn is None or self._key != key:
            self._fn, self._key = make_probe_fn(model, is_tfrs), key
        examples = tuple(e for e in (self.heldout, self.seen) if e is not None)
        with counting_paused():
            values = [float(v) for v in self._fn(examples).numpy()]
        heldout = values.pop(0) if self.heldout is not None else None
        seen = values.pop(0) if self.seen is not None else None
        return heldout, seen

    def per_example_scale(self, model, is_tfrs: bool) -> float:
        """What to divide a probe loss by for a per-example loss: the probe size when every TFRS
        task of the model sums its loss over the batch (TFRS retrieval's default), else 1."""
        tasks = _tfrs_tasks(model) if is_tfrs else []
        losses = [getattr(t, "_loss", None) for t in tasks]
        if losses and all(getattr(loss, "reduction", None) == tf.keras.losses.Reduction.SUM for loss in losses):
            return float(self.size)
        return 1.0

    def trivial_baselines(self, model, is_tfrs: bool) -> dict[str, float]:
        """Per-example losses of trivial predictors on the training probe (the held-out one if none).

        ``uniform_softmax``: ``log(probe size)`` for a model whose only TFRS task is
        `tfrs.tasks.Retrieval` (in-batch softmax over the probe's candidates).
        ``mean_predictor``: every example predicted as the probe's mean label, for plain
        Keras models with one loss and for a TFRS `Ranking` task whose label is found
        (``model.label_key`` or one of `LABEL_KEYS`). Missing when it does not apply.
        """
        out: dict[str, float] = {}
        example = self.seen if self.seen is not None else self.heldout
        if example is None:
            return out
        try:
            import tensorflow_recommenders as tfrs
        except ImportError:  # pragma: no cover
            tfrs = None
        tasks = _tfrs_tasks(model) if is_tfrs else []
        if tfrs is not None and tasks and all(isinstance(t, tfrs.tasks.Retrieval) for t in tasks):
            out["uniform_softmax"] = math.log(self.size)
        value = None
        try:
            if is_tfrs and tfrs is not None and len(tasks) == 1 and isinstance(tasks[0], tfrs.tasks.Ranking) \
                    and isinstance(example, dict):
                keys = [k for k in (getattr(model, "label_key", None), *LABEL_KEYS) if k in example]
                if keys:
                    value = _constant_loss(tasks[0]._loss, example[keys[0]], None)
            elif not is_tfrs and not isinstance(model.loss, (dict, list, tuple)):
                x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(example)
                if y is not None and (y.dtype.is_floating or y.dtype.is_integer):
                    with counting_paused():
                        y_pred = model(x, training=False)
                    value = _constant_loss(tf.keras.losses.get(model.loss), y, sw, tf.shape(y_pred), y_pred.dtype)
        except (ValueError, TypeError, AttributeError):  # a loss or label layout this simple recipe does not fit
            value = None
        if value is not None and math.isfinite(value):
            out["mean_predictor"] = value
        return out


def _constant_loss(loss_fn, y, sw, shape=None, dtype=tf.float32) -> float:
    """The loss of predicting the mean label for every example."""
    y = tf.cast(y, dtype)
    if shape is None:
        y = tf.reshape(y, [-1, 1])
        shape = tf.shape(y)
    mean = tf.reduce_mean(y, axis=0)
    constant = tf.broadcast_to(mean, shape)
    if isinstance(loss_fn, tf.keras.losses.Loss):
        value = loss_fn(y, constant, sample_weight=sw)
        if getattr(loss_fn, "reduction", None) == tf.keras.losses.Reduction.SUM:
            value = value / tf.cast(tf.shape(y)[0], value.dtype)
        return float(value)
    # a loss function by name ("mse"): per-example values, unweighted mean
    return float(tf.reduce_mean(loss_fn(tf.reshape(y, shape), constant)))


def _tfrs_tasks(model) -> list:
    try:
        import tensorflow_recommenders as tfrs
    except ImportError:  # pragma: no cover
        return []
    return [m for m in model.submodules if isinstance(m, tfrs.tasks.base.Task)]


def make_probe_fn(model, is_tfrs: bool):
    """A `tf.function` of a tuple of probes returning their losses, leaving no trace in metrics."""

    def loss_of(example):
        # A copy of every dict: the tutorials' compute_loss pops the label from it.
        example = copy_structure(example)
        if is_tfrs:
            return tf.cast(model.compute_loss(example, training=False), tf.float32)
        x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(example)
        y_pred = model(x, training=False)
        return tf.cast(model.compiled_loss(y, y_pred, sw), tf.float32)

    def probe_in_replica(examples):
        # Evaluating the probes must leave no trace: metric state is saved before and
        # put back after, in the same traced call (usage counts are paused).
        keep = state_variables(model)
        saved = [tf.identity(v) for v in keep]
        # Paused here too: under a strategy this runs (and is traced) in each
        # replica's own thread, which does not see the caller's thread-local pause.
        with tf.control_dependencies(saved), counting_paused():
            losses = [loss_of(e) for e in examples]
        with tf.control_dependencies(losses):
            restores = [v.assign(s) for v, s in zip(keep, saved)]
        with tf.control_dependencies(restores):
            return tf.stack(losses)

    strategy = getattr(model, "_distribution_strategy", None)
    if strategy is None:
        return tf.function(probe_in_replica)

    def probe(examples):
        # As Keras' evaluate does under a strategy: model code (and the metric updates
        # of compute_loss) runs in replica context. Every replica sees the whole probe,
        # so every replica's loss is the one-device loss; the first is read.
        per_replica = strategy.run(probe_in_replica, args=(examples,))
        return strategy.experimental_local_results(per_replica)[0]

    return tf.function(probe)


def state_variables(model) -> list:
    """Variables a probe evaluation may change: metric state."""
    metrics = [m for m in [model, *model.submodules] if isinstance(m, tf.keras.metrics.Metric)] + list(model.metrics)
    out, seen = [], set()
    for v in (v for m in metrics for v in m.variables):
        if id(v) not in seen and v.dtype != tf.string:
            seen.add(id(v))
            out.append(v)
    return out


def copy_structure(x):
    """The same tensors in new dicts, lists and tuples."""
    return tf.nest.map_structure(lambda t: t, x)

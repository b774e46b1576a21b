"""`OverfittingMonitor`: overfitting, one-epoch overfitting, underfitting and embedding health.

Thin Keras glue: the statistics are the pure functions of `tfrs_diag.stats.trends` and
`tfrs_diag.stats.embeddings`; alerts go through `tfrs_diag.summary.AlertLog`.
"""

from __future__ import annotations

import collections.abc
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag._model_checks import check_xla_compatible
from tfrs_diag.layers.embedding_probe import EmbeddingProbe, counting_paused
from tfrs_diag.stats import embeddings as E
from tfrs_diag.stats import trends as T

_logger = logging.getLogger("tfrs_diag")
_ON_OVERFIT = (None, "stop", "restore_best")
_ACCURACY_HINTS = ("acc", "auc", "recall", "precision", "ndcg", "hit", "top_", "mrr", "map")
_MAX_MODE_HINTS = _ACCURACY_HINTS + ("coverage",)
_EVALUATE_BATCH_SIZE = 32  # Keras' default for arrays; used for an unbatched validation dataset


def _mode_of(name: str) -> str:
    """"max" for metrics where higher is better (accuracy, recall, top-K...), else "min"."""
    return "max" if any(h in name.lower() for h in _MAX_MODE_HINTS) else "min"


class OverfittingMonitor(tf.keras.callbacks.Callback):
    """Watches a `fit` for overfitting, one-epoch overfitting, underfitting and embedding collapse.

    Detectors (thresholds are arguments; docs/diagnostics.md explains each):

    - **overfitting** (epoch level): over the last ``window`` epochs the validation
      ``monitor`` worsens (Mann-Kendall one-sided p < ``alpha`` and Theil-Sen slope in the
      worsening direction) while its training counterpart does not worsen.
    - **one_epoch_overfitting** (inside epochs): every ``probe_every_n_steps`` steps and at
      each epoch end, one traced call computes the loss on a fixed held-out probe
      (``probe_data``) and on a fixed probe of training examples (``train_probe_data``).
      Within the first ``jump_fraction`` of an epoch after the first, the held-out loss
      rises by more than ``jump_threshold`` (relative) above its value at the end of the
      previous epoch while the training probe's loss falls.
    - **underfitting**: from the second epoch on, the mean of the training probe's last
      ``plateau_window`` readings (else of the epoch training losses) is less than
      ``plateau_tolerance`` below the mean of the ``plateau_window`` before, while the loss
      is still above ``underfit_ratio`` x a trivial baseline: ``baseline_loss`` if given,
      else the smaller of the untrained model's probe loss (close to a uniform predictor
      for a retrieval softmax) and, for plain Keras models, a mean predictor's loss. A
      plateau together with a firing ``vanishing_gradients`` alert of
      ``gradient_statistics`` also counts.
    - **embedding_collapse**, **embedding_memorization**, **dead_embedding_rows**: for every
      `tfrs_diag.layers.EmbeddingProbe` in the model, each epoch: information abundance
      of the used rows (a row sample of ``embedding_sample_rows``) below
      ``collapse_ratio`` x the dimension; mean row norm of the least-used quarter of rows
      above ``memorization_ratio`` x that of the most-used quarter, and growing; more than
      ``dead_rows_fraction`` of rows never looked up.

    Each alert fires once per (kind, subject), prints one line saying what to try, is
    written to ``tfrs_diag/alerts`` and gets a "cleared" record when its condition stops.

    Written under ``log_dir/<run>``: ``tfrs_diag/overfit/probe/{heldout_loss,seen_loss,gap}``
    (at the global step), ``tfrs_diag/overfit/epoch/<metric>/{train,val,gap,relative_gap}``,
    ``tfrs_diag/overfit/epoch/trend/<name>/{slope,p_worse}`` (at the epoch index, like
    Keras' ``epoch_loss``), and ``tfrs_diag/embed/{information_abundance,abundance_ratio,
    effective_rank,dead_row_fraction,tail_head_norm_ratio,row_norm_bucket_<i>}/<table>``.
    The probe losses are also added to the epoch logs as ``probe_heldout_loss`` and
    ``probe_seen_loss`` (so `EarlyStopping` can use them).

    Args:
      log_dir: TensorBoard run directory (created; must be writable).
      validation_data: data the monitor evaluates with ``model.evaluate`` at each epoch
        end when ``fit`` got none (with ``fit(validation_data=...)`` the monitor reads
        Keras' ``val_*`` logs instead): a feature dict or ``(x, y)`` tuple of arrays, or a
        finite `tf.data.Dataset`, batched or not (unbatched ones are batched by 32). Without
        either, the epoch-level gap and trend are off, with one logged note. Generators and
        iterators are refused (read once); wrap one in ``tf.data.Dataset.from_generator``.
      probe_data: held-out examples for the in-epoch probe: a feature dict (TFRS), an
        ``(x, y)`` tuple (Keras) or a `tf.data.Dataset` of either (batched or not). The
        first ``probe_size`` examples are used. Default: taken from ``validation_data``.
      train_probe_data: training examples, in the same form.
      probe_size: examples per probe (both probes use the same number, so that
        sum-reduced losses such as TFRS retrieval's are comparable).
      probe_every_n_steps: cadence of the in-epoch probes (also run at every epoch end).
        One-epoch overfitting is only seen with several readings per epoch.
      monitor: the epoch-level quantity to test and to pick the best epoch by ("val_loss";
        without it the held-out probe loss at epoch end picks the best epoch).
      mode: "min", "max" or "auto" (max for accuracy/recall/NDCG-like names).
      on_overfit: None (alert only), "stop" (stop `fit`) or "restore_best" (stop and
        put back the weights of the best epoch by ``monitor``; like Keras' EarlyStopping,
        it copies the weights to host memory at each new best epoch).
      baseline_loss: the loss of a trivial predictor (e.g. popularity) on the training
        probe, for the underfitting test.
      gradient_statistics: a `GradientStatistics` callback in the same `fit`; its
        vanishing-gradient alerts feed the underfitting detector.
      verbose: print alerts and notes to the console.

    Example:

    >>> monitor = tfrs_diag.callbacks.OverfittingMonitor(               # doctest: +SKIP
    ...     "logs/run1", probe_data=test_features, train_probe_data=train_features,
    ...     probe_every_n_steps=20, on_overfit="restore_best")
    >>> model.fit(train_ds, validation_data=val_ds, epochs=20, callbacks=[monitor])  # doctest: +SKIP
    >>> [str(a) for a in monitor.alerts]                                 # doctest: +SKIP
    """

    def __init__(self, log_dir: str, validation_data: Any = None, probe_data: Any = None,
                 train_probe_data: Any = None, *, probe_size: int = 256, probe_every_n_steps: int = 100,
                 monitor: str = "val_loss", mode: str = "auto", on_overfit: str | None = None,
                 window: int = 5, alpha: float = 0.05, jump_threshold: float = 0.1, jump_fraction: float = 0.5,
                 plateau_window: int = 5, plateau_tolerance: float = 0.01, underfit_ratio: float = 0.95,
                 baseline_loss: float | None = None, gradient_statistics: Any = None,
                 collapse_ratio: float = 0.1, memorization_ratio: float = 2.0, dead_rows_fraction: float = 0.5,
                 embedding_sample_rows: int = 20000, num_popularity_buckets: int = 4, seed: int = 0,
                 verbose: int = 1, run: str = "train"):
        super().__init__()
        self._supports_tf_logs = True  # the batch hook never reads logs
        if on_overfit not in _ON_OVERFIT:
            raise ValueError(f"on_overfit must be one of {_ON_OVERFIT}, got {on_overfit!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        for name, value, lo in (("probe_size", probe_size, 2), ("probe_every_n_steps", probe_every_n_steps, 1),
                                ("window", window, 3), ("plateau_window", plateau_window, 1),
                                ("embedding_sample_rows", embedding_sample_rows, 2),
                                ("num_popularity_buckets", num_popularity_buckets, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        for name, value in (("alpha", alpha), ("jump_fraction", jump_fraction), ("underfit_ratio", underfit_ratio),
                            ("collapse_ratio", collapse_ratio), ("dead_rows_fraction", dead_rows_fraction)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        for name, value in (("jump_threshold", jump_threshold), ("plateau_tolerance", plateau_tolerance),
                            ("memorization_ratio", memorization_ratio)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.log_dir = S.check_log_dir(log_dir)
        self.run = run
        self.validation_data = validation_data
        self.probe_size = probe_size
        self.probe_every_n_steps = probe_every_n_steps
        self.monitor = monitor
        self.mode = _mode_of(monitor) if mode == "auto" else mode
        self.on_overfit = on_overfit
        self.window, self.alpha = window, float(alpha)
        self.jump_threshold, self.jump_fraction = float(jump_threshold), float(jump_fraction)
        self.plateau_window, self.plateau_tolerance = plateau_window, float(plateau_tolerance)
        self.underfit_ratio = float(underfit_ratio)
        self.gradient_statistics = gradient_statistics
        self.collapse_ratio, self.memorization_ratio = float(collapse_ratio), float(memorization_ratio)
        self.dead_rows_fraction = float(dead_rows_fraction)
        self.embedding_sample_rows, self.num_popularity_buckets = embedding_sample_rows, num_popularity_buckets
        self.seed = seed
        self.verbose = verbose
        self.alert_log = S.AlertLog(self.log_dir, run, echo=bool(verbose))
        self._scalars = S.ScalarBatch()

        # Probe examples: checked (and an empty one rejected) here, made tensors once.
        for name, value in (("validation_data", validation_data), ("probe_data", probe_data),
                            ("train_probe_data", train_probe_data)):
            _check_rereadable(value, name)
        if isinstance(validation_data, tf.data.Dataset) and \
                validation_data.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "validation_data is an infinite dataset (.repeat() without a count): the monitor evaluates all of "
                "it at each epoch end, which would never finish. Pass it without .repeat(), or .take(n) of it.")
        if probe_data is None and validation_data is not None:
            probe_data, self._heldout_from = validation_data, "validation_data"
        else:
            self._heldout_from = "probe_data"
        self._heldout = _take_examples(probe_data, probe_size, self._heldout_from)
        self._seen = _take_examples(train_probe_data, probe_size, "train_probe_data")
        if self._heldout is not None and self._seen is not None:
            n = min(_num_examples(self._heldout), _num_examples(self._seen))
            self._heldout, self._seen = _head(self._heldout, n), _head(self._seen, n)
        self._probe_fn = None
        self._probe_key = None
        self._stepped = False  # a train step has run: model and compiled metrics exist

        self.readings: list[dict[str, float]] = []  # step, epoch, heldout, seen
        self.epoch_logs: list[dict[str, float]] = []
        self.embedding_stats: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.restored_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._best_weights: list[np.ndarray] | None = None
        self.baselines: dict[str, float] = {} if baseline_loss is None else {"given": float(baseline_loss)}
        self._step = 0
        self._epoch = 0
        self._epoch_start_step = 0
        self._epoch_steps: list[int] = []
        self._jump_checked_epoch = -1
        self._noted: set[str] = set()
        self._probes: list[EmbeddingProbe] = []
        self._stats_fns: dict[int, Any] = {}
        self._prev_tail_norm: dict[str, float] = {}

    # ------------------------------------------------------------ public

    @property
    def alerts(self) -> list[S.Alert]:
        """Every alert fired (and cleared) so far, in order."""
        return list(self.alert_log.history)

    # ------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        model = self.model
        check_xla_compatible(model, "OverfittingMonitor")
        self._is_tfrs = _is_tfrs_model(model)
        if not self._is_tfrs and getattr(model, "compiled_loss", None) is None:
            raise RuntimeError("OverfittingMonitor needs a compiled model: call model.compile(loss=...) before fit().")
        self._probes = [layer for layer in _all_layers(model) if isinstance(layer, EmbeddingProbe)]
        if self._probe_key is not None and self._probe_key[0] != id(model):
            self._stepped = False  # another model: trace for it again once it is built
        if self._has_probes and not self.readings:
            # Before any training step: the trivial baseline of the underfitting test.
            heldout, seen = self._run_probes()
            if not self.baselines:
                self.baselines["untrained"] = seen if seen is not None else heldout
                mean_loss = self._mean_predictor_loss()
                if mean_loss is not None:
                    self.baselines["mean_predictor"] = mean_loss
            self._record_reading(heldout, seen)

    @property
    def _baseline(self) -> float | None:
        """The underfitting test's trivial baseline: the lowest of ``baselines`` (None before any)."""
        return min(self.baselines.values()) if self.baselines else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_start_step = self._step

    def on_train_batch_end(self, batch, logs=None):
        self._stepped = True
        self._step = self._epoch_start_step + int(batch) + 1
        if self._has_probes and self._step % self.probe_every_n_steps == 0:
            self._probe_reading()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._epoch_steps.append(self._step - self._epoch_start_step)
        reading = None
        if self._has_probes:
            reading = self.readings[-1] if self.readings and self.readings[-1]["step"] == self._step \
                else self._probe_reading()
            logs["probe_heldout_loss"] = reading["heldout"]
            if reading["seen"] is not None:
                logs["probe_seen_loss"] = reading["seen"]
        self._evaluate_validation(logs)
        values = {k: float(v) for k, v in logs.items() if _is_number(v)}
        self.epoch_logs.append(values)
        writer = S.writer_for(self.log_dir, self.run)
        with writer.as_default():
            self._epoch_level(values)
            if not self._has_probes:
                self._check_underfitting([e["loss"] for e in self.epoch_logs if "loss" in e], "loss")
            self._embedding_level()
        writer.flush()
        self._track_best(values, reading)

    def on_train_end(self, logs=None):
        S.writer_for(self.log_dir, self.run).flush()

    # ------------------------------------------------------------ probes

    @property
    def _has_probes(self) -> bool:
        return self._heldout is not None or self._seen is not None

    def _make_probe_fn(self):
        model, is_tfrs = self.model, self._is_tfrs

        def loss_of(example):
            # A copy of every dict: the tutorials' compute_loss pops the label from it.
            example = _copy_structure(example)
            if is_tfrs:
                return tf.cast(model.compute_loss(example, training=False), tf.float32)
            x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(example)
            y_pred = model(x, training=False)
            return tf.cast(model.compiled_loss(y, y_pred, sw), tf.float32)

        def probe_in_replica(examples):
            # Evaluating the probes must leave no trace: metric state is saved before and
            # put back after, in the same traced call (usage counts are paused).
            keep = _state_variables(model)
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

    def _run_probes(self) -> tuple[float | None, float | None]:
        # Traced again once the first train step has built the model and its metrics,
        # so that every metric variable is in the saved-and-restored set; then reused.
        key = (id(self.model), self._stepped)
        if self._probe_fn is None or self._probe_key != key:
            self._probe_fn, self._probe_key = self._make_probe_fn(), key
        examples = tuple(e for e in (self._heldout, self._seen) if e is not None)
        with counting_paused():
            values = [float(v) for v in self._probe_fn(examples).numpy()]
        heldout = values.pop(0) if self._heldout is not None else None
        seen = values.pop(0) if self._seen is not None else None
        return heldout, seen

    def _mean_predictor_loss(self) -> float | None:
        """Loss of predicting the mean label of the training probe for every example.

        Plain Keras models with one loss only (TFRS tasks keep their labels inside
        ``compute_loss``). With a logits loss the constant is not the best one, so the
        smaller of this and the untrained model's loss is the baseline.
        """
        if self._is_tfrs or self._seen is None or isinstance(self.model.loss, (dict, list, tuple)):
            return None
        try:
            x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(self._seen)
            if y is None or not y.dtype.is_floating and not y.dtype.is_integer:
                return None
            loss_fn = tf.keras.losses.get(self.model.loss)
            with counting_paused():
                y_pred = self.model(x, training=False)
            mean = tf.reduce_mean(tf.cast(y, y_pred.dtype), axis=0)
            constant = tf.broadcast_to(mean, tf.shape(y_pred))
            if isinstance(loss_fn, tf.keras.losses.Loss):
                value = float(loss_fn(y, constant, sample_weight=sw))
            else:  # a loss function by name ("mse"): per-example values, unweighted mean
                value = float(tf.reduce_mean(loss_fn(tf.reshape(tf.cast(y, y_pred.dtype), tf.shape(y_pred)),
                                                     constant)))
        except (ValueError, TypeError):  # a loss or label layout this simple recipe does not fit
            return None
        return value if math.isfinite(value) else None

    def _record_reading(self, heldout, seen) -> dict:
        reading = {"step": self._step, "epoch": self._epoch, "heldout": heldout, "seen": seen}
        self.readings.append(reading)
        scalars = {}
        if heldout is not None:
            scalars[S.tag("overfit", "probe", "heldout_loss")] = heldout
        if seen is not None:
            scalars[S.tag("overfit", "probe", "seen_loss")] = seen
        if heldout is not None and seen is not None:
            scalars[S.tag("overfit", "probe", "gap")] = heldout - seen
        with S.writer_for(self.log_dir, self.run).as_default():
            self._scalars.write(scalars, self._step)
        return reading

    def _probe_reading(self) -> dict:
        reading = self._record_reading(*self._run_probes())
        self._check_one_epoch_jump(reading)
        warmup = sum(1 for r in self.readings if r["epoch"] < 1) - 1  # keep the end-of-epoch-1 reading
        self._check_underfitting([r["seen"] if r["seen"] is not None else r["heldout"] for r in self.readings],
                                 "training probe" if self._seen is not None else "held-out probe", max(warmup, 0))
        return reading

    # ------------------------------------------------------------ detectors

    def _check_one_epoch_jump(self, reading):
        if self._epoch < 1 or self._heldout is None or not self._epoch_steps:
            return
        into = reading["step"] - self._epoch_start_step
        if into > self.jump_fraction * self._epoch_steps[-1]:
            if self._jump_checked_epoch < self._epoch:  # this boundary's window is over without a jump
                self._jump_checked_epoch = self._epoch
                self.alert_log.clear("one_epoch_overfitting", "held-out probe", reading["step"], self._epoch)
            return
        before = [r for r in self.readings if r["step"] == self._epoch_start_step]
        if not before or self._jump_checked_epoch >= self._epoch:
            return
        before = before[-1]
        if not all(math.isfinite(v) for v in (before["heldout"], reading["heldout"])):
            return
        rise = T.relative_change(before["heldout"], reading["heldout"])
        seen_fell = self._seen is None or reading["seen"] < before["seen"]
        if rise > self.jump_threshold and seen_fell:
            self._jump_checked_epoch = self._epoch
            evidence = {"heldout_before": before["heldout"], "heldout_after": reading["heldout"],
                        "relative_rise": rise, "steps_into_epoch": into, "boundary_step": before["step"]}
            if self._seen is not None:
                evidence.update(seen_before=before["seen"], seen_after=reading["seen"])
            fired = self.alert_log.fire(S.Alert(
                "one_epoch_overfitting", "warning", reading["step"], self._epoch, "held-out probe",
                f"Held-out loss rose {rise:.0%} within {into} steps of epoch {self._epoch + 1} while the training "
                f"examples' loss fell: stop after epoch {self._epoch} (on_overfit='restore_best') or lower the "
                "embedding learning rate.", evidence))
            if fired:
                self._act("one_epoch_overfitting")

    def _check_underfitting(self, series: Sequence[float], subject: str, first_epoch_readings: int = 0):
        # The first epoch is warm-up (a slow start is no plateau): judge only later readings.
        series = [v for v in series[first_epoch_readings:] if v is not None and math.isfinite(v)]
        if self._epoch < 1 or len(series) < 2 * self.plateau_window:
            return
        baseline = self._baseline if self._baseline is not None else series[0]
        # Finite here: the series holds at least two windows.
        improvement_over_window = T.relative_improvement(series, self.plateau_window)
        plateau = improvement_over_window < self.plateau_tolerance
        high = series[-1] > self.underfit_ratio * baseline
        vanishing = self._vanishing_layers()
        step = self._step
        if plateau and (high or vanishing):
            improvement = 1.0 - series[-1] / baseline if baseline else float("nan")
            if vanishing and not high:
                why = f"gradients vanish in {', '.join(vanishing)}"
            elif improvement > 0:
                why = f"it is only {improvement:.0%} below a trivial baseline ({baseline:.4g})"
            else:
                why = f"it is no better than a trivial baseline ({series[-1]:.4g} vs {baseline:.4g})"
            self.alert_log.fire(S.Alert(
                "underfitting", "warning", step, self._epoch, subject,
                f"The training loss stopped improving and {why}: raise the learning rate, widen the "
                "embeddings or the model, or train longer.",
                {"loss": series[-1], "baseline": baseline, "baselines": self.baselines,
                 "relative_improvement_over_window": improvement_over_window, "window": self.plateau_window,
                 "vanishing_layers": vanishing}))
        elif not (high or vanishing) or improvement_over_window >= 2 * self.plateau_tolerance:
            # Cleared only when clearly better, not on the first reading that wobbles down.
            self.alert_log.clear("underfitting", subject, step, self._epoch)

    def _vanishing_layers(self) -> list[str]:
        g = self.gradient_statistics
        if g is None:
            return []
        return sorted(subject for kind, subject in g.alert_log.active if kind == "vanishing_gradients")

    def _epoch_level(self, values: dict[str, float]):
        epoch = self._epoch
        pairs = [k for k in values if not k.startswith("val_") and f"val_{k}" in values]
        if not pairs:
            self._note("no_validation",
                       "OverfittingMonitor: no validation data (neither fit(validation_data=...) nor "
                       "OverfittingMonitor(validation_data=...)), so the epoch-level train/validation gap and its "
                       "trend test are off; the in-epoch probes still run when given.")
            return
        scalars = {}
        for k in pairs:
            train, val = values[k], values[f"val_{k}"]
            scalars[S.tag("overfit", "epoch", k, "train")] = train
            scalars[S.tag("overfit", "epoch", k, "val")] = val
            scalars[S.tag("overfit", "epoch", k, "gap")] = val - train
            scalars[S.tag("overfit", "epoch", k, "relative_gap")] = T.relative_change(train, val)
        if self.monitor not in values:
            self._note("no_monitor", f"OverfittingMonitor: monitor={self.monitor!r} is not in the epoch logs "
                                     f"(available: {sorted(values)}); the overfitting trend test is off.")
            _write_scalars(scalars, epoch)
            return
        train_key = self.monitor[4:] if self.monitor.startswith("val_") else None
        sign = 1.0 if self.mode == "min" else -1.0  # worse = up for "min"
        tests = {}
        for key in (self.monitor, train_key):
            if key is None:
                continue
            series = self._recent(key)
            if len(series) < 3:
                continue
            t = T.trend(series)
            p_worse = t.p_increasing if sign > 0 else t.p_decreasing
            tests[key] = (t, p_worse)
            scalars[S.tag("overfit", "epoch", "trend", key, "slope")] = t.slope
            scalars[S.tag("overfit", "epoch", "trend", key, "p_worse")] = p_worse
        _write_scalars(scalars, epoch)
        val = tests.get(self.monitor)
        if val is None or val[0].n < self.window:
            return
        t, p_worse = val
        train = tests.get(train_key)
        train_ok = train is None or (sign * train[0].slope <= 0 or train[1] >= self.alpha)
        overfit = p_worse < self.alpha and sign * t.slope > 0 and train_ok
        if overfit:
            best = f" (best at epoch {self.best_epoch + 1})" if self.best_epoch is not None else ""
            improving = self._still_improving(values)
            if improving:  # the TFRS question: loss worse, top-K accuracy better -- which to stop on?
                advice = (f"{', '.join(improving)} still improve{'s' if len(improving) == 1 else ''}, so if that "
                          f"is what you serve, monitor it instead (OverfittingMonitor(monitor=...), EarlyStopping), "
                          "else stop earlier (on_overfit='restore_best') or add L2 to the embeddings.")
            else:
                advice = ("stop earlier (on_overfit='restore_best'), add L2 or dropout to the embeddings, "
                          "or use more data.")
            fired = self.alert_log.fire(S.Alert(
                "overfitting", "warning", self._step, epoch, self.monitor,
                f"{self.monitor} has worsened for {self.window} epochs while training {train_key or 'loss'} "
                f"did not{best}: {advice}",
                {"slope": t.slope, "p_worse": p_worse, "window": self.window, "best_epoch": self.best_epoch,
                 "train_slope": train[0].slope if train else None, "still_improving": improving}))
            if fired:
                self._act("overfitting")
        else:
            self.alert_log.clear("overfitting", self.monitor, self._step, epoch)

    def _recent(self, key: str) -> list[float]:
        """The last ``window`` finite epoch values of ``key``."""
        return [e[key] for e in self.epoch_logs if key in e and math.isfinite(e[key])][-self.window:]

    def _still_improving(self, values: dict[str, float]) -> list[str]:
        """Validation accuracy metrics (recall, NDCG, top-K accuracy, ...; not per-group
        breakdowns) that improve significantly over the same window; at most three."""
        out = []
        for key in sorted(values):
            if (not key.startswith("val_") or key == self.monitor or "/" in key
                    or not any(h in key.lower() for h in _ACCURACY_HINTS)):
                continue
            series = self._recent(key)
            if len(series) < self.window:
                continue
            t = T.trend(series)
            p_better = t.p_increasing if _mode_of(key) == "max" else t.p_decreasing
            if p_better < self.alpha:
                out.append(key)
        return out[:3]

    def _evaluate_validation(self, logs: dict):
        # fit(validation_data=...) already gave val_loss; other callbacks may add other val_ keys.
        if self.validation_data is None or "val_loss" in logs:
            return
        data = self.validation_data
        if isinstance(data, (tuple, list)):  # (x, y[, sample_weight]) arrays
            x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(tuple(data))
            results = self.model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
        else:
            if isinstance(data, tf.data.Dataset) and not _is_batched(data.element_spec):
                data = data.batch(_EVALUATE_BATCH_SIZE)  # one example per element: batched as for arrays
            results = self.model.evaluate(data, verbose=0, return_dict=True)
        for k, v in results.items():
            logs.setdefault(f"val_{k}", float(v))

    def _embedding_level(self):
        scalars = {}
        for probe in self._probes:
            if not probe.built:
                continue
            table = probe.embeddings
            name = S.clean_name(table.name)
            counts = probe.usage_counts.numpy()
            fn = self._stats_fns.get(id(probe))
            if fn is None:
                fn = self._stats_fns[id(probe)] = tf.function(
                    lambda rows, t=table: E.table_statistics(t, rows),
                    input_signature=[tf.TensorSpec([None], tf.int64)])
            used = np.flatnonzero(counts > 0)
            rows = E.sample_rows(len(counts), self.embedding_sample_rows, candidates=used,
                                 seed=self.seed + self._epoch)
            norms, sigma, finite = (x.numpy() for x in fn(tf.constant(rows, tf.int64)))
            if finite and len(rows):
                ia, erank = E.information_abundance(sigma), E.effective_rank(sigma)
            else:  # diverged weights: no spectrum (the gradient statistics report the NaN)
                ia = erank = float("nan")
            dim = probe.output_dim
            dead = E.dead_row_fraction(counts)
            buckets = E.popularity_buckets(counts, self.num_popularity_buckets)
            bucket_norms = E.bucket_mean_norms(norms, buckets)
            tail_head = float(bucket_norms[0] / bucket_norms[-1]) if len(buckets) >= 2 and bucket_norms[-1] > 0 \
                else float("nan")
            stats = {"table": name, "epoch": self._epoch, "step": self._step, "information_abundance": ia,
                     "abundance_ratio": ia / dim, "effective_rank": erank, "dead_row_fraction": dead,
                     "bucket_norms": bucket_norms.tolist(), "tail_head_norm_ratio": tail_head,
                     "used_rows": int(len(used)), "sampled_rows": int(len(rows))}
            self.embedding_stats.append(stats)
            for key in ("information_abundance", "abundance_ratio", "effective_rank", "dead_row_fraction"):
                if math.isfinite(stats[key]):
                    scalars[S.tag("embed", key, name)] = stats[key]
            if math.isfinite(tail_head):
                scalars[S.tag("embed", "tail_head_norm_ratio", name)] = tail_head
            for i, v in enumerate(bucket_norms):
                if math.isfinite(v):
                    scalars[S.tag("embed", f"row_norm_bucket_{i}", name)] = v
            self._check_embedding(stats, name, dim, bucket_norms)
        with S.writer_for(self.log_dir, self.run).as_default():
            self._scalars.write(scalars, self._step)  # the same tags every epoch: one traced write

    def _check_embedding(self, stats, name, dim, bucket_norms):
        step, epoch, log = self._step, self._epoch, self.alert_log
        if dim >= 4 and stats["used_rows"] >= 2 * dim and math.isfinite(stats["abundance_ratio"]):
            if stats["abundance_ratio"] < self.collapse_ratio:
                log.fire(S.Alert(
                    "embedding_collapse", "warning", step, epoch, name,
                    f"The table's rows span about {stats['information_abundance']:.1f} of its {dim} dimensions "
                    "(information abundance): lower its learning rate or add L2 on it, and check that the layer "
                    "after it is not a narrow bottleneck.",
                    {k: stats[k] for k in ("information_abundance", "abundance_ratio", "effective_rank")}))
            else:
                log.clear("embedding_collapse", name, step, epoch)
        if stats["dead_row_fraction"] > self.dead_rows_fraction:
            log.fire(S.Alert(
                "dead_embedding_rows", "warning", step, epoch, name,
                f"{stats['dead_row_fraction']:.0%} of the table's rows were never looked up: shrink the vocabulary "
                "(a minimum count) or hash rare ids into a few OOV buckets.",
                {"dead_row_fraction": stats["dead_row_fraction"]}))
        else:
            log.clear("dead_embedding_rows", name, step, epoch)
        tail_head = stats["tail_head_norm_ratio"]
        prev = self._prev_tail_norm.get(name)
        self._prev_tail_norm[name] = float(bucket_norms[0]) if len(bucket_norms) else float("nan")
        growing = prev is not None and len(bucket_norms) and bucket_norms[0] > prev
        if math.isfinite(tail_head) and tail_head > self.memorization_ratio and growing:
            log.fire(S.Alert(
                "embedding_memorization", "warning", step, epoch, name,
                f"Rarely used rows have {tail_head:.1f}x the norm of popular ones and keep growing (memorising "
                "their few examples): add L2 on this table or lower its learning rate.",
                {"tail_head_norm_ratio": tail_head, "bucket_norms": stats["bucket_norms"]}))
        elif math.isfinite(tail_head) and tail_head <= self.memorization_ratio:
            log.clear("embedding_memorization", name, step, epoch)

    # ------------------------------------------------------------ best epoch and actions

    def _track_best(self, values: dict[str, float], reading: dict | None):
        if self.monitor in values:
            value, sign = values[self.monitor], (1.0 if self.mode == "min" else -1.0)
        elif reading is not None and reading["heldout"] is not None:
            self._note("best_from_probe", f"OverfittingMonitor: {self.monitor!r} is not in the logs; the best epoch "
                                          "is picked by the held-out probe loss.")
            value, sign = reading["heldout"], 1.0
        else:
            return
        if not math.isfinite(value):
            return
        if self.best_value is None or sign * value < sign * self.best_value:
            self.best_value, self.best_epoch = value, self._epoch
            if self.on_overfit == "restore_best":
                self._best_weights = [v.numpy() for v in _restorable_variables(self.model)]

    def _act(self, kind: str):
        if self.on_overfit is None:
            return
        self.model.stop_training = True
        self.stopped_epoch = self._epoch
        if self.on_overfit == "restore_best" and self._best_weights is not None:
            for v, w in zip(_restorable_variables(self.model), self._best_weights):
                v.assign(w)
            self.restored_epoch = self.best_epoch
            self._note(f"restored_{self._epoch}", f"OverfittingMonitor: {kind}; stopped training and restored the "
                                                   f"weights of epoch {self.best_epoch + 1}.", force=True)
        else:
            self._note(f"stopped_{self._epoch}", f"OverfittingMonitor: {kind}; stopped training.", force=True)

    def _note(self, key: str, message: str, force: bool = False):
        if key in self._noted and not force:
            return
        self._noted.add(key)
        self.notes.append(message)
        if self.verbose:
            print(message, flush=True)
        else:
            _logger.warning("%s", message)


# ---------------------------------------------------------------- helpers


def _write_scalars(values: Mapping[str, float], step: int) -> None:
    # Once per epoch, with tag sets that change as epochs accrue: plain eager writes
    # (S.ScalarBatch would trace one function per tag set).
    for tag_, value in values.items():
        S.write_scalar(tag_, value, step)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _is_tfrs_model(model) -> bool:
    try:
        import tensorflow_recommenders as tfrs
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, tfrs.models.Model)


def _all_layers(model) -> list:
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]


def _state_variables(model) -> list:
    """Variables a probe evaluation may change: metric state."""
    metrics = [m for m in [model, *model.submodules] if isinstance(m, tf.keras.metrics.Metric)] + list(model.metrics)
    out, seen = [], set()
    for v in (v for m in metrics for v in m.variables):
        if id(v) not in seen and v.dtype != tf.string:
            seen.add(id(v))
            out.append(v)
    return out


def _restorable_variables(model) -> list:
    """The model's weights minus usage counters and string tables (what restore_best puts back)."""
    counters = {id(m.usage_counts) for m in model.submodules if isinstance(m, EmbeddingProbe) and m.built}
    return [v for v in model.weights if id(v) not in counters and v.dtype != tf.string]


def _leaves(x) -> list:
    return tf.nest.flatten(x)


def _num_examples(example) -> int:
    return int(_leaves(example)[0].shape[0])


def _head(example, n: int):
    return tf.nest.map_structure(lambda t: t[:n], example)


def _copy_structure(x):
    """The same tensors in new dicts, lists and tuples."""
    return tf.nest.map_structure(lambda t: t, x)


def _is_batched(element_spec) -> bool:
    """Whether a dataset's elements are batches: every component has a leading axis, of one size.

    Static sizes count too: ``batch(n, drop_remainder=True)`` (what TPUs need) gives
    ``[n, ...]`` shapes, not ``[None, ...]``. A scalar component means one example per
    element. Unbatched elements whose every component is a vector of one length look
    like batches; such data should be passed batched.
    """
    shapes = [s.shape for s in tf.nest.flatten(element_spec) if hasattr(s, "shape")]
    if not shapes or any(sh.rank is None or sh.rank == 0 for sh in shapes):
        return False
    return len({sh[0] for sh in shapes} - {None}) <= 1


def _check_rereadable(data, argument: str) -> None:
    """Rejects data that can be read only once (a generator, an iterator).

    ``validation_data`` is evaluated at every epoch end; a probe would take its first
    examples out of a stream that may also feed `fit`, and its items may be examples or
    batches. A `tf.data.Dataset` (also one made with ``from_generator``) is re-readable.
    """
    if data is None or isinstance(data, (tf.data.Dataset, Mapping, tuple, list, np.ndarray, tf.Tensor)):
        return
    if isinstance(data, (collections.abc.Iterator, tf.data.Iterator)):
        when = "at every epoch end" if argument == "validation_data" else "and would consume it"
        raise ValueError(
            f"{argument} is a {type(data).__name__}, which can be read only once, and the monitor reads it {when}. "
            "Pass arrays (a feature dict or an (x, y) tuple) or a tf.data.Dataset, e.g. "
            "tf.data.Dataset.from_generator(make_generator, output_signature=...), which re-runs the generator.")


def _take_examples(data, size: int, argument: str):
    """The first ``size`` examples of ``data`` as a structure of tensors (one batch)."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        ds = data.unbatch() if _is_batched(data.element_spec) else data
        example = next(iter(ds.take(size).batch(size)), None)
    else:
        if isinstance(data, list):
            data = tuple(data)
        try:
            example = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a)[:size], data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{argument} must be a feature dict, an (x, y) tuple of arrays or a tf.data.Dataset; "
                             f"converting it to tensors failed: {e}") from None
    if example is None or not _leaves(example) or _num_examples(example) == 0:
        raise ValueError(f"{argument} holds no examples; pass at least 2 examples (e.g. the first few hundred "
                         "rows of the test split), or leave it out (None).")
    sizes = {int(t.shape[0]) for t in _leaves(example)}
    if len(sizes) != 1:
        raise ValueError(f"all arrays of {argument} must have the same number of rows, got {sorted(sizes)}")
    return example

"""`GradientStatistics`: the Keras callback around `tfrs_diag.capture.GradientCapture`.

capture -> detectors -> alert log: the capture computes statistics in-graph, the
callback reads them every ``every_n_steps`` and feeds `tfrs_diag.detectors`
(`NonFiniteGradients`, `ExplodingGradients`, `VanishingGradients`), whose findings go
to the run's alert log (`apply_findings`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag.summary import workers
from tfrs_diag._keras import tf
from tfrs_diag.callbacks.cadence import MAX_EVERY_N_STEPS, default_every_n_steps, steps_per_execution
from tfrs_diag.capture import EMBEDDING_COLUMNS, SNAPSHOT_COLUMNS, GradientCapture
from tfrs_diag.capture.checks import check_xla_compatible
from tfrs_diag.detectors import (ExplodingGradients, NonFiniteGradients, NonFinitePause, VanishingGradients,
                                 apply_findings)
from tfrs_diag.detectors.gradients import layer_norms
from tfrs_diag.stats.gradients import ROW_NORM_LOG10_EDGES

_ON_NONFINITE = ("alert", "stop", "raise")
_KINDS = ("nonfinite_gradients", "exploding_gradients", "vanishing_gradients")
_logger = logging.getLogger("tfrs_diag")

class NonFiniteGradientError(FloatingPointError):
    """Raised by ``GradientStatistics(on_nonfinite="raise")``; names variables and step."""


class GradientStatistics(tf.keras.callbacks.Callback):
    """Streams statistics of the gradients the optimizer really applies to TensorBoard.

    Works with unmodified `tfrs.Model` subclasses and any Keras model trained with
    `fit`, under ``jit_compile=True``, `tf.distribute` strategies and mixed precision.
    Statistics are computed inside the compiled train step (no extra forward or
    backward pass) and written from the host every ``every_n_steps`` steps. Every
    reading is written at the optimizer's step count (``optimizer.iterations`` after the
    step), so a second `fit`, ``initial_epoch`` or a resume with
    `tf.keras.callbacks.BackupAndRestore` (in a new process, or with a new callback on
    the same ``log_dir``) continues the timeline. With several workers
    (`tf.distribute.MultiWorkerMirroredStrategy`) only the chief writes to ``log_dir``
    (docs/scale.md).

    Written under ``log_dir/train`` (tags per docs/design.md's schema):

    - ``tfrs_diag/grad/{norm,max_abs,zero_fraction,weight_norm,update_ratio}/<variable>``
      and ``tfrs_diag/grad/layer_norm/<layer>``, ``tfrs_diag/grad/global_norm``;
    - ``tfrs_diag/grad/values/<variable>``: histogram of one step's gradient values
      every ``histogram_every_n_steps`` (a snapshot of that step, not accumulated);
    - embedding tables (gradients arriving as `tf.IndexedSlices`):
      ``tfrs_diag/embed/{unique_rows,row_grad_norm_mean,row_grad_norm_max,row_update_ratio}/<variable>``
      and the histogram ``tfrs_diag/embed/row_grad_norm_log10/<variable>`` of per-row
      gradient norms after duplicate rows are summed; the table is never densified;
    - ``tfrs_diag/grad/noise_scale`` (B_simple, in examples) with two or more replicas;
    - alerts at ``tfrs_diag/alerts``: ``nonfinite_gradients``, ``exploding_gradients``,
      ``vanishing_gradients``.

    The global gradient norm of the latest step is also in Keras ``logs`` as
    ``grad_norm``, so the progress bar and other callbacks see it.

    Args:
      log_dir: directory of the TensorBoard run (created; must be writable).
      every_n_steps: cadence of scalar statistics (and of the detectors' readings). None
        (default): from the steps per epoch when Keras knows them,
        ``steps_per_epoch // 8`` clamped to [4, 100], so that the vanishing test's streak
        fits in an epoch; 100 otherwise (`default_every_n_steps`).
      histogram_every_n_steps: cadence of histograms of gradient values.
      on_nonfinite: "alert" (record and go on), "stop" (stop `fit` at that step, logs
        flushed, the non-finite update zeroed so the weights stay finite) or "raise"
        (the same, then raise `NonFiniteGradientError`). "stop" and "raise" read one
        scalar per step from the device; "alert" reads only every ``every_n_steps``.
      exploding_factor, exploding_window, exploding_min_share: a step whose global
        gradient norm exceeds ``exploding_factor`` times its running median (over the
        previous ``exploding_window`` steps, checked in-graph on every step) explodes;
        the alert names the variables carrying at least ``exploding_min_share`` of that
        step's norm (`tfrs_diag.detectors.ExplodingGradients`).
      vanishing_decades, vanishing_window: a layer whose ``||g|| / ||w||`` stays more
        than ``vanishing_decades`` orders of magnitude below the median layer's for
        ``vanishing_window`` consecutive readings has vanishing gradients
        (`tfrs_diag.detectors.VanishingGradients`).
      histograms: write value histograms (set False to save disk space).
      verbose: print alerts to the console when they fire.

    Example:

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> cb = tfrs_diag.callbacks.GradientStatistics("logs/run1", every_n_steps=50)  # doctest: +SKIP
    >>> model.fit(train_ds, epochs=3, callbacks=[cb])                               # doctest: +SKIP
    >>> cb.alerts                                                                   # doctest: +SKIP
    """

    def __init__(self, log_dir: str, every_n_steps: int | None = None, histogram_every_n_steps: int = 1000,
                 on_nonfinite: str = "alert", *, exploding_factor: float = 100.0, exploding_window: int = 25,
                 exploding_min_share: float = 0.1, vanishing_decades: float = 2.0, vanishing_window: int = 3,
                 histograms: bool = True, verbose: int = 1, run: str = "train"):
        super().__init__()
        # The hooks never read `logs`: Keras need not convert them to numpy every step.
        self._supports_tf_logs = True
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {_ON_NONFINITE}, got {on_nonfinite!r}")
        self.log_dir = S.check_log_dir(log_dir)
        self._explicit_every_n_steps = every_n_steps is not None
        self.capture = GradientCapture(
            MAX_EVERY_N_STEPS if every_n_steps is None else every_n_steps, histogram_every_n_steps,
            exploding_factor=exploding_factor, exploding_window=exploding_window,
            exploding_min_share=exploding_min_share, sanitize_nonfinite=on_nonfinite != "alert")
        self.every_n_steps = self.capture.every_n_steps
        self.histogram_every_n_steps = self.capture.histogram_every_n_steps
        self.on_nonfinite = on_nonfinite
        self.nonfinite_detector = NonFiniteGradients()
        self.exploding_detector = ExplodingGradients(exploding_factor, exploding_window, exploding_min_share)
        self.vanishing_detector = VanishingGradients(vanishing_decades, vanishing_window)
        self.pause = NonFinitePause("GradientStatistics")
        self.vanishing_window = vanishing_window
        self.histograms = histograms
        self.run = run
        self.verbose = verbose
        self.alert_log = S.AlertLog(self.log_dir, run, echo=bool(verbose))
        self.notes: list[str] = []
        self._scalars = S.ScalarBatch()
        self._written_snapshot = -1
        self._written_histogram = -1
        self._step_base: int | None = None  # optimizer step = base + Keras batch index + 1, per epoch
        self._read_step = -1  # step of the latest reading (its detectors ran)
        self._next_read: int | None = None
        self._epoch: int | None = None
        self.last_stats: dict[str, Any] | None = None
        self._traced = None  # (key, train function traced with the capture)
        self.stopped_at_step: int | None = None

    @property
    def alerts(self) -> list[S.Alert]:
        """Every alert fired (and cleared) so far, in order."""
        return list(self.alert_log.history)

    # ------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        model = self.model
        if getattr(model, "optimizer", None) is None:
            raise RuntimeError(
                "GradientStatistics needs a compiled model: call model.compile(optimizer=...) before fit().")
        check_xla_compatible(model, "GradientStatistics")
        workers.enter(self.log_dir, model.distribute_strategy, self)
        spe = steps_per_execution(model)
        if not self._explicit_every_n_steps:
            steps = (self.params or {}).get("steps")
            self.every_n_steps = self.capture.every_n_steps = default_every_n_steps(steps, spe)
        if spe > self.every_n_steps:
            raise ValueError(
                f"steps_per_execution={spe} is larger than every_n_steps={self.every_n_steps}: statistics are "
                "read between executions, so some would be overwritten unread. Use every_n_steps >= "
                "steps_per_execution (a multiple of it keeps the cadence exact).")
        self.capture.attach(model)
        self.capture.on_abandoned = self._finish
        # fit() made its train function before on_train_begin; make it again so the
        # traced step includes the capture, or reuse the one traced for the last fit
        # with this callback when nothing it depends on has changed (tracing ~1 s).
        key = self._train_function_key(model)
        if self._traced is None or self._traced[0] != key:
            self._traced = (key, self._guarded(self.capture.make_train_function(force=True)))
        model.train_function = self._traced[1]
        # Per-fit detector state starts afresh (as Keras' EarlyStopping does); the step
        # numbers come from the optimizer, read at each epoch's first batch (after a
        # BackupAndRestore later in the callback list has restored them).
        for d in (self.nonfinite_detector, self.exploding_detector, self.vanishing_detector, self.pause):
            d.reset()
        self.capture.reset_detection()
        self._step_base = self._next_read = None
        self._read_step = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._step_base = None
        # After every on_train_begin, so after a BackupAndRestore has restored the count.
        self.capture.sync_step()

    def on_train_batch_end(self, batch, logs=None):
        if self._step_base is None:  # one scalar read per epoch
            step = int(self.model.optimizer.iterations.numpy())
            self._step_base = step - (int(batch) + 1)
            if self._next_read is None:  # the fit's first batch
                self._next_read = -(-step // self.every_n_steps) * self.every_n_steps
                # Anything recorded at or before the fit's first step is from an earlier fit.
                self._read_step = self._written_snapshot = self._written_histogram = (
                    step - steps_per_execution(self.model))
                # The detectors start afresh: alerts of the last fit still firing are closed
                # at its end, so they can fire again in this one.
                for kind, subject in [k for k in self.alert_log.active if k[0] in _KINDS]:
                    self.alert_log.clear(kind, subject, self._read_step, self._epoch)
        step = self._step_base + int(batch) + 1
        # ParameterServerStrategy hands batch hooks RemoteValues (of steps not run yet): no clearing there.
        norm = logs.get("grad_norm") if isinstance(logs, dict) else None
        if isinstance(norm, (int, float, np.number, np.ndarray, tf.Tensor)) and not self.pause.paused:
            # Back to its level: the exploding alert clears.
            apply_findings(self.alert_log, self.exploding_detector.calm(step, float(norm)), step, self._epoch)
            if self.exploding_detector.rearm:
                self.capture.rearm_exploding()
                self.exploding_detector.rearm = False
        if self.on_nonfinite != "alert" and self.capture.nonfinite_since() >= 0:
            self._flush_stats()
            self._handle_nonfinite_stop()
            return
        if step >= self._next_read:
            self._flush_stats()

    def on_epoch_end(self, epoch, logs=None):
        # An epoch of unknown length ends with a step whose input raised OutOfRangeError;
        # the optimizer did not count it, so neither do we.
        self.capture.sync_step()
        self._flush_stats()

    def on_train_end(self, logs=None):
        self._flush_stats()
        self._finish()
        workers.leave(self.log_dir, self)

    # ------------------------------------------------------------ host work

    def _guarded(self, train_function):
        """``train_function`` that unpatches the model when a step raises (fit then ends early)."""

        def guarded(*args, **kwargs):
            try:
                return train_function(*args, **kwargs)
            except (tf.errors.OutOfRangeError, StopIteration):
                raise  # the end of an epoch of unknown length: fit goes on
            except BaseException:
                self._finish()
                raise

        return guarded

    def _train_function_key(self, model):
        try:
            variables = tuple(id(v) for v in model.trainable_variables)
        except ValueError:  # an unbuilt Sequential tower: its weights come with the first step
            variables = None
        return (id(model), id(model.optimizer), steps_per_execution(model),
                bool(getattr(model, "_jit_compile", False)), variables, self.capture.every_n_steps)

    def _finish(self):
        self.capture.on_abandoned = None
        S.writer_for(self.log_dir, self.run).flush()
        self.capture.detach()
        if self.model is not None:
            if self._traced is not None and self.model.train_function is self._traced[1]:
                # Keyed now that the model is built, for reuse by the next fit with this callback.
                self._traced = (self._train_function_key(self.model), self._traced[1])
            # The cached train function holds the capture; a fit without it makes a clean one.
            self.model.train_function = None

    def _handle_nonfinite_stop(self):
        stats = self.last_stats
        first = stats["nonfinite_first_step"]
        step = int(first[first >= 0].min())
        names = [self.capture.tracked[i].name for i in np.flatnonzero(first == step)]
        self.stopped_at_step = step
        self.model.stop_training = True
        if stats["step"] == step:
            # The stopping step's own norms (NaN/Inf where it broke) go on the record.
            writer = S.writer_for(self.log_dir, self.run)
            with writer.as_default():
                for t in self.capture.tracked:
                    S.write_scalar(S.tag("grad", "norm", t.name), math.sqrt(stats["last_sumsq"][t.index])
                                   if stats["last_sumsq"][t.index] >= 0 else float("nan"), step)
            writer.flush()
        if self.on_nonfinite == "raise":
            self._finish()
            raise NonFiniteGradientError(
                f"Non-finite gradients at step {step} in {', '.join(names)}; training stopped, logs in "
                f"{self.log_dir}. Lower the learning rate, clip gradients (clipnorm=...) or check that batch.")

    def _flush_stats(self):
        coordinator = getattr(self.model, "_cluster_coordinator", None)
        if coordinator is not None:  # ParameterServerStrategy: steps still in flight would tear the
            coordinator.join()       # read (a snapshot's step and its values from different steps)
        stats = self.capture.read()
        if stats is None:
            return
        self.last_stats = stats
        writer = S.writer_for(self.log_dir, self.run)
        with writer.as_default():
            if stats["snapshot_step"] > self._written_snapshot:
                self._write_snapshot(stats)
                self._written_snapshot = stats["snapshot_step"]
            if self.histograms and stats["histogram_step"] > self._written_histogram:
                self._write_histograms(stats)
                self._written_histogram = stats["histogram_step"]
        self._detect(stats)
        writer.flush()
        self._next_read = (stats["step"] // self.every_n_steps + 1) * self.every_n_steps

    def _write_snapshot(self, stats):
        tracked = self.capture.tracked
        step = stats["snapshot_step"]
        snap = stats["snapshot"]
        col = {c: snap[:, j] for j, c in enumerate(SNAPSHOT_COLUMNS)}
        scalars: dict[str, float] = {}
        for t in tracked:
            for c in SNAPSHOT_COLUMNS:
                value = col[c][t.index]
                if c == "update_ratio" and not np.isfinite(value):
                    continue  # no copy kept (huge variable) or all-zero weights: undefined
                scalars[S.tag("grad", c, t.name)] = value
        layer_sq: dict[str, float] = {}
        for t in tracked:
            layer_sq[t.layer] = layer_sq.get(t.layer, 0.0) + float(col["norm"][t.index]) ** 2
        for layer, sq in layer_sq.items():
            scalars[S.tag("grad", "layer_norm", layer)] = math.sqrt(sq)
        scalars[S.tag("grad", "global_norm")] = math.sqrt(sum(layer_sq.values()))
        emb = stats["embedding"]
        for t in tracked:
            if t.sparse:
                for j, c in enumerate(EMBEDDING_COLUMNS):
                    scalars[S.tag("embed", c, t.name)] = emb[t.sparse_index, j]
        noise = stats.get("noise")
        if noise is not None and noise["updates"] > 0 and np.isfinite(noise["b_simple"]):
            scalars[S.tag("grad", "noise_scale")] = noise["b_simple"]
            scalars[S.tag("grad", "noise_scale_grad_sq")] = noise["grad_sq"]
            scalars[S.tag("grad", "noise_scale_trace")] = noise["trace"]
        self._scalars.write(scalars, step)
        for t in tracked:
            if t.sparse:
                S.write_histogram(S.tag("embed", "row_grad_norm_log10", t.name), ROW_NORM_LOG10_EDGES,
                                  stats["row_norm_hist"][t.sparse_index], step)

    def _write_histograms(self, stats):
        step = stats["histogram_step"]
        bins = self.capture.histogram_bins
        for t in self.capture.tracked:
            lo, hi = stats["histogram_range"][t.index]
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
                continue
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, bins + 1)
            S.write_histogram(S.tag("grad", "values", t.name), edges, stats["histogram"][t.index], step)

    # ------------------------------------------------------------ detectors

    def _detect(self, stats):
        """Feeds the reading to the detectors and writes their findings (host work per reading)."""
        tracked = self.capture.tracked
        names = [t.name for t in tracked]
        step = stats["step"]
        if step <= self._read_step:  # no step since the last reading (an epoch-end flush)
            return
        first = stats["nonfinite_first_step"]
        last_bad = stats["nonfinite_last_step"]
        # Finite: no NaN/Inf gradient since the previous reading (exact, recorded in-graph).
        finite = last_bad <= self._read_step
        for f in self.nonfinite_detector.update(
                {n: int(first[i]) for i, n in enumerate(names)}, finite,
                {n: int(stats["nonfinite_count"][i]) for i, n in enumerate(names)}):
            apply_findings(self.alert_log, [f], min(f.evidence["first_step"].values()) if f.action == "fire"
                           else step, self._epoch)
        since = [int(x) for x in first if x > self._read_step]
        note = self.pause.update(finite, step if finite else (min(since) if since else last_bad))
        if note:
            self._note(note)
        nonfinite_from = self.nonfinite_detector.first_step
        if not self.pause.paused:
            exploding = stats["exploding_first_step"]
            events = {names[i]: (int(exploding[i]), float(stats["exploding_ratio"][i]),
                                 float(stats["exploding_share"][i]))
                      for i in np.flatnonzero(exploding >= 0)
                      # An explosion at or after the first NaN is a consequence, not a warning.
                      if nonfinite_from is None or exploding[i] < nonfinite_from}
            for f in self.exploding_detector.update(events):
                apply_findings(self.alert_log, [f], f.evidence["step"], self._epoch)
            if stats["snapshot_step"] > self._read_step:  # a new snapshot
                col = {c: stats["snapshot"][:, j] for j, c in enumerate(SNAPSHOT_COLUMNS)}
                layers = [t.layer for t in tracked]
                grad = layer_norms(col["norm"], layers)
                weight = layer_norms(col["weight_norm"], layers)
                apply_findings(self.alert_log, self.vanishing_detector.update(stats["snapshot_step"], grad, weight),
                               stats["snapshot_step"], self._epoch)
        self._read_step = step

    def _note(self, message: str):
        self.notes.append(message)
        if self.verbose:
            print(message, flush=True)
        else:
            _logger.warning("%s", message)

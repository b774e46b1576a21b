"""`GradientStatistics`: the Keras callback around `tfrs_diag.capture.GradientCapture`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag._model_checks import check_xla_compatible
from tfrs_diag.capture import EMBEDDING_COLUMNS, SNAPSHOT_COLUMNS, GradientCapture
from tfrs_diag.stats.gradients import ROW_NORM_LOG10_EDGES

_ON_NONFINITE = ("alert", "stop", "raise")


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``GradientStatistics(on_nonfinite="raise")``; names variables and step."""


class GradientStatistics(tf.keras.callbacks.Callback):
    """Streams statistics of the gradients the optimizer really applies to TensorBoard.

    Works with unmodified `tfrs.Model` subclasses and any Keras model trained with
    `fit`, under ``jit_compile=True``, `tf.distribute` strategies and mixed precision.
    Statistics are computed inside the compiled train step (no extra forward or
    backward pass) and written from the host every ``every_n_steps`` steps.

    Written under ``log_dir/train`` (tags per DESIGN.md's schema):

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
      every_n_steps: cadence of scalar statistics.
      histogram_every_n_steps: cadence of histograms of gradient values.
      on_nonfinite: "alert" (record and go on), "stop" (stop `fit` at that step, logs
        flushed, the non-finite update zeroed so the weights stay finite) or "raise"
        (the same, then raise `NonFiniteGradientError`). "stop" and "raise" read one
        scalar per step from the device; "alert" reads only every ``every_n_steps``.
      exploding_factor: a variable whose gradient norm exceeds this multiple of its own
        running median (over the previous ``exploding_window`` steps) is exploding.
      vanishing_ratio: a layer whose gradient norm stays below this fraction of the
        largest layer gradient norm for ``vanishing_window`` consecutive readings has
        vanishing gradients.
      histograms: write value histograms (set False to save disk space).
      verbose: print alerts to the console when they fire.

    Example:

    >>> cb = tfrs_diag.callbacks.GradientStatistics("logs/run1", every_n_steps=50)  # doctest: +SKIP
    >>> model.fit(train_ds, epochs=3, callbacks=[cb])                               # doctest: +SKIP
    >>> cb.alerts                                                                   # doctest: +SKIP
    """

    def __init__(self, log_dir: str, every_n_steps: int = 100, histogram_every_n_steps: int = 1000,
                 on_nonfinite: str = "alert", *, exploding_factor: float = 100.0, exploding_window: int = 25,
                 vanishing_ratio: float = 1e-5, vanishing_window: int = 3, histograms: bool = True,
                 verbose: int = 1, run: str = "train"):
        super().__init__()
        # The hooks never read `logs`: Keras need not convert them to numpy every step.
        self._supports_tf_logs = True
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {_ON_NONFINITE}, got {on_nonfinite!r}")
        if not 0 < vanishing_ratio < 1:
            raise ValueError(f"vanishing_ratio must be in (0, 1), got {vanishing_ratio!r}")
        if isinstance(vanishing_window, bool) or not isinstance(vanishing_window, int) or vanishing_window <= 0:
            raise ValueError(f"vanishing_window must be a positive integer, got {vanishing_window!r}")
        self.log_dir = S.check_log_dir(log_dir)
        self.capture = GradientCapture(
            every_n_steps, histogram_every_n_steps, exploding_factor=exploding_factor,
            exploding_window=exploding_window, sanitize_nonfinite=on_nonfinite != "alert")
        self.every_n_steps = self.capture.every_n_steps
        self.histogram_every_n_steps = self.capture.histogram_every_n_steps
        self.on_nonfinite = on_nonfinite
        self.vanishing_ratio = float(vanishing_ratio)
        self.vanishing_window = vanishing_window
        self.histograms = histograms
        self.run = run
        self.alert_log = S.AlertLog(self.log_dir, run, echo=bool(verbose))
        self._scalars = S.ScalarBatch()
        self._written_snapshot = -1
        self._written_histogram = -1
        self._reported_nonfinite: set[int] = set()
        self._reported_exploding: set[int] = set()
        self._vanishing_streak: dict[str, int] = {}
        self._steps_before_fit = 0
        self._epoch_base = 0
        self._seen = 0
        self._next_read = 0
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
        spe = _steps_per_execution(model)
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
        self._steps_before_fit = self.capture.read()["step"] if self.capture.state is not None else 0
        self._epoch_base = self._seen = 0
        self._next_read = self._steps_before_fit + self.every_n_steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_base = self._seen

    def on_train_batch_end(self, batch, logs=None):
        self._seen = self._epoch_base + int(batch) + 1
        step = self._steps_before_fit + self._seen
        if self.on_nonfinite != "alert" and self.capture.nonfinite_since() >= 0:
            self._flush_stats()
            self._handle_nonfinite_stop()
            return
        if step >= self._next_read:
            self._flush_stats()

    def on_epoch_end(self, epoch, logs=None):
        self._flush_stats()

    def on_train_end(self, logs=None):
        self._flush_stats()
        self._finish()

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

    @staticmethod
    def _train_function_key(model):
        try:
            variables = tuple(id(v) for v in model.trainable_variables)
        except ValueError:  # an unbuilt Sequential tower: its weights come with the first step
            variables = None
        return (id(model), id(model.optimizer), _steps_per_execution(model),
                bool(getattr(model, "_jit_compile", False)), variables)

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
        self._check_nonfinite(stats)
        self._check_exploding(stats)
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
        self._check_vanishing(layer_sq, step)

    def _write_histograms(self, stats):
        step = stats["histogram_step"]
        bins = self.capture.histogram_bins
        for t in self.capture.tracked:
            lo, hi = stats["histogram_range"][t.index]
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
                continue
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, bins + 1)
            S.write_histogram(S.tag("grad", "values", t.name), edges, stats["histogram"][t.index], step)

    # ------------------------------------------------------------ alerts

    def _check_nonfinite(self, stats):
        first = stats["nonfinite_first_step"]
        new = [i for i in np.flatnonzero(first >= 0) if i not in self._reported_nonfinite]
        if not new:
            return
        tracked = self.capture.tracked
        step = int(first[new].min())
        subject = ", ".join(tracked[i].name for i in new if first[i] == step)
        self._reported_nonfinite.update(new)
        evidence = {"first_step": {tracked[i].name: int(first[i]) for i in new},
                    "nonfinite_steps": {tracked[i].name: int(stats["nonfinite_count"][i]) for i in new}}
        self.alert_log.fire(S.Alert(
            "nonfinite_gradients", "critical", step, self._epoch, subject,
            "Gradients became NaN/Inf here: lower the learning rate, clip gradients (clipnorm=1.0), "
            "or look for NaN/Inf in the inputs of that batch.", evidence))

    def _check_exploding(self, stats):
        first = stats["exploding_first_step"]
        tracked = self.capture.tracked
        for i in np.flatnonzero(first >= 0):
            if i in self._reported_exploding:
                continue
            self._reported_exploding.add(i)
            ratio = float(stats["exploding_ratio"][i])
            self.alert_log.fire(S.Alert(
                "exploding_gradients", "warning", int(first[i]), self._epoch, tracked[i].name,
                f"The gradient norm jumped to {ratio:.3g}x its running median: lower the learning rate "
                "or clip gradients (clipnorm=1.0) before it turns into NaN.",
                {"ratio_to_median": ratio, "window": self.capture.exploding_window}))

    def _check_vanishing(self, layer_sq: dict[str, float], step: int):
        norms = {k: math.sqrt(v) for k, v in layer_sq.items()}
        finite = [v for v in norms.values() if np.isfinite(v)]
        top = max(finite) if finite else 0.0
        if not top > 0:
            return
        reference = max(norms, key=lambda k: norms[k] if np.isfinite(norms[k]) else -1.0)
        for layer, norm in norms.items():
            if not np.isfinite(norm):
                continue
            if norm < self.vanishing_ratio * top:
                self._vanishing_streak[layer] = self._vanishing_streak.get(layer, 0) + 1
                if self._vanishing_streak[layer] == self.vanishing_window:
                    self.alert_log.fire(S.Alert(
                        "vanishing_gradients", "warning", step, self._epoch, layer,
                        f"This layer's gradients are {norm / top:.1e} of {reference}'s: use ReLU-family "
                        "activations or normalisation between layers, check its initialisation, or give it "
                        "a larger learning rate.",
                        {"layer_norm": norm, "reference_layer": reference, "reference_norm": top,
                         "readings": self.vanishing_window}))
            else:
                if self._vanishing_streak.pop(layer, 0) >= self.vanishing_window:
                    self.alert_log.clear("vanishing_gradients", layer, step, self._epoch)


def _steps_per_execution(model) -> int:
    spe = getattr(model, "_steps_per_execution", None)
    if spe is None:
        return 1
    try:
        return int(spe.numpy()) if hasattr(spe, "numpy") else int(spe)
    except Exception:  # pragma: no cover
        return 1

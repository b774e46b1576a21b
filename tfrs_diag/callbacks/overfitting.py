"""`OverfittingMonitor`: overfitting, one-epoch overfitting, underfitting and embedding health.

Thin Keras glue: it captures numbers (probe losses: `_probes.ProbeRunner`; epoch logs;
embedding tables: `_tables.TableReader`), feeds them to its detectors
(`tfrs_diag.detectors`), writes scalars and the detectors' findings, and acts on
overfitting (`_restore.BestWeights`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping


from tfrs_diag import detectors as D
from tfrs_diag import summary as S
from tfrs_diag.summary import workers
from tfrs_diag._keras import tf
from tfrs_diag.capture.checks import check_xla_compatible
from tfrs_diag.callbacks._data import check_rereadable, head, is_batched, num_examples, take_examples
from tfrs_diag.callbacks._gradient_signals import gradients_nonfinite, stalled_layers
from tfrs_diag.callbacks._probes import ProbeRunner
from tfrs_diag.callbacks.cadence import default_probe_every
from tfrs_diag.callbacks._restore import BestWeights
from tfrs_diag.callbacks._tables import TableReader
from tfrs_diag.stats import trends as T

_logger = logging.getLogger("tfrs_diag")
_ON_OVERFIT = (None, "stop", "restore_best")
_EVALUATE_BATCH_SIZE = 32  # Keras' default for arrays; used for an unbatched validation dataset


def _default_detectors() -> dict[str, D.Detector]:
    return {d.kind: d for d in (D.Overfitting(), D.OneEpochOverfitting(), D.Underfitting(), D.EmbeddingCollapse(),
                                D.EmbeddingMemorization(), D.DeadEmbeddingRows())}


class OverfittingMonitor(tf.keras.callbacks.Callback):
    """Watches a `fit` for overfitting, one-epoch overfitting, underfitting and embedding health.

    Each alert kind is one detector of `tfrs_diag.detectors` (docs/diagnostics.md gives
    each rule, its thresholds and the recorded runs they were set on):
    `Overfitting` (trend of ``monitor`` over the last epochs), `OneEpochOverfitting`
    (held-out probe jump after an epoch boundary), `Underfitting` (training loss at a
    trivial baseline, or stalled with stalled gradients), `EmbeddingCollapse`,
    `EmbeddingMemorization`, `DeadEmbeddingRows` (every `tfrs_diag.layers.EmbeddingProbe`,
    each epoch). Pass your own instances in ``detectors`` to change thresholds.

    Every ``probe_every_n_steps`` steps and at each epoch end, one traced call computes
    the loss on a fixed held-out probe (``probe_data``) and training probe
    (``train_probe_data``). After NaN/Inf probe losses or epoch values, or non-finite
    gradients reported by ``gradient_statistics``, the detectors pause until values are
    finite again, with one note (`tfrs_diag.detectors.NonFinitePause`).

    Written under ``log_dir/<run>``: ``tfrs_diag/overfit/probe/{heldout_loss,seen_loss,gap}``
    (per example: a sum-reduced TFRS loss divided by the probe size; at the global step),
    ``tfrs_diag/overfit/epoch/<metric>/{train,val,gap,relative_gap}`` (no ``gap`` and
    ``relative_gap`` for losses that cannot be compared, see `epoch_losses_comparable`),
    ``tfrs_diag/overfit/epoch/trend/<name>/{slope,p_worse}`` (at the epoch index), and
    ``tfrs_diag/embed/{information_abundance,abundance_ratio,effective_rank,dead_row_fraction,
    tail_head_norm_ratio,row_norm_bucket_<i>}/<table>``. The probe losses are also added
    to the epoch logs (per example) as ``probe_heldout_loss`` and ``probe_seen_loss``.

    `on_train_begin` resets every reading, detector and alert, so one instance can
    serve several fits (like Keras' `EarlyStopping`); ``alerts`` are the latest fit's.

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
      train_probe_data: training examples, in the same form (underfitting is judged on
        them; plain Keras models fall back to the epoch loss).
      probe_size: examples per probe (both probes use the same number, so that
        sum-reduced losses such as TFRS retrieval's are comparable).
      probe_every_n_steps: cadence of the in-epoch probes (also run at every epoch end).
        None (default): ``steps per epoch // 8`` (at least 8 readings per epoch, and so at
        most 2 x 9 x ``probe_size`` forward passes per epoch whatever its length: about 2%
        of an epoch's training cost on MovieLens-100k), from ``fit``'s known steps per
        epoch, else from the first epoch's length (every 100 steps until then). An explicit
        value is kept.
      monitor: the epoch-level quantity to test and to pick the best epoch by.
      mode: "min", "max" or "auto" (max for accuracy/recall/NDCG-like names).
      on_overfit: None (alert only), "stop" (stop `fit`) or "restore_best" (stop and
        put back the weights of the best epoch by ``monitor``).
      baseline_loss: the per-example loss of a trivial predictor (e.g. popularity) on
        the training probe, for the underfitting test.
      gradient_statistics: a `GradientStatistics` callback in the same `fit`: its
        vanishing-gradient alerts and update/weight ratios feed the underfitting test,
        its non-finite gradients pause the detectors.
      detectors: detector instances replacing the defaults of the same kind, e.g.
        ``[tfrs_diag.detectors.Overfitting(window=7), tfrs_diag.detectors.Underfitting(margin=0.05)]``.
      verbose: print alerts and notes to the console.
    """

    def __init__(self, log_dir: str, validation_data: Any = None, probe_data: Any = None,
                 train_probe_data: Any = None, *, probe_size: int = 256, probe_every_n_steps: int | None = None,
                 monitor: str = "val_loss", mode: str = "auto", on_overfit: str | None = None,
                 baseline_loss: float | None = None, gradient_statistics: Any = None,
                 detectors: Iterable[D.Detector] = (),
                 embedding_sample_rows: int = 20000, num_popularity_buckets: int = 4, seed: int = 0,
                 verbose: int = 1, run: str = "train"):
        super().__init__()
        self._supports_tf_logs = True  # the batch hook never reads logs
        if on_overfit not in _ON_OVERFIT:
            raise ValueError(f"on_overfit must be one of {_ON_OVERFIT}, got {on_overfit!r}")
        checks = [("probe_size", probe_size, 2), ("embedding_sample_rows", embedding_sample_rows, 2),
                  ("num_popularity_buckets", num_popularity_buckets, 2)]
        if probe_every_n_steps is not None:
            checks.append(("probe_every_n_steps", probe_every_n_steps, 1))
        for name, value, lo in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        self.detectors = _default_detectors()
        self.detectors["overfitting"] = D.Overfitting(monitor, mode)
        for d in detectors:
            if d.kind not in self.detectors:
                raise ValueError(f"detectors: {type(d).__name__} ({d.kind!r}) is not a detector of this monitor; "
                                 f"its kinds are {sorted(self.detectors)}")
            self.detectors[d.kind] = d
        self.log_dir = S.check_log_dir(log_dir)
        self.run = run
        self.validation_data = validation_data
        self.probe_size = probe_size
        self.probe_every_n_steps = probe_every_n_steps
        self._explicit_every = probe_every_n_steps is not None
        self.monitor = self.detectors["overfitting"].monitor
        self.mode = self.detectors["overfitting"].mode
        self.on_overfit = on_overfit
        self.baseline_loss = baseline_loss
        self.gradient_statistics = gradient_statistics
        self.verbose = verbose

        # Probe examples: checked (and an empty one rejected) here, made tensors once.
        for name, value in (("validation_data", validation_data), ("probe_data", probe_data),
                            ("train_probe_data", train_probe_data)):
            check_rereadable(value, name)
        if isinstance(validation_data, tf.data.Dataset) and \
                validation_data.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "validation_data is an infinite dataset (.repeat() without a count): the monitor evaluates all of "
                "it at each epoch end, which would never finish. Pass it without .repeat(), or .take(n) of it.")
        if probe_data is None and validation_data is not None:
            probe_data, self._heldout_from = validation_data, "validation_data"
        else:
            self._heldout_from = "probe_data"
        heldout = take_examples(probe_data, probe_size, self._heldout_from)
        seen = take_examples(train_probe_data, probe_size, "train_probe_data")
        if heldout is not None and seen is not None:
            n = min(num_examples(heldout), num_examples(seen))
            heldout, seen = head(heldout, n), head(seen, n)
        size = num_examples(heldout if heldout is not None else seen) if heldout is not None or seen is not None \
            else probe_size
        self.probes = ProbeRunner(heldout, seen, size)
        self.tables = TableReader(embedding_sample_rows, num_popularity_buckets, seed)
        self._stepped = False  # a train step has run: model and compiled metrics exist
        self._is_tfrs = False
        self._reset()

    def _reset(self):
        """Forgets everything of a previous fit (called by `on_train_begin`)."""
        self.alert_log = S.AlertLog(self.log_dir, self.run, echo=bool(self.verbose))
        self._scalars = S.ScalarBatch()
        self.readings: list[dict[str, float]] = []  # step, epoch, heldout, seen (as the model computes them)
        self.epoch_logs: list[dict[str, float]] = []
        self.embedding_stats: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self.best = BestWeights(self.mode, keep=self.on_overfit == "restore_best")
        self.restored_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.baselines: dict[str, float] = {} if self.baseline_loss is None else {"given": float(self.baseline_loss)}
        self.pause = D.NonFinitePause("OverfittingMonitor")
        for d in self.detectors.values():
            d.reset()
        self._scale = 1.0
        self._losses_comparable = True
        self._validation_extra: dict[str, float] = {}
        self._step = self._epoch = self._epoch_start_step = 0
        self._grad_nonfinite = -1
        if not self._explicit_every:
            self.probe_every_n_steps = None

    # ------------------------------------------------------------ public

    @property
    def alerts(self) -> list[S.Alert]:
        """Every alert fired (and cleared) in the latest fit, in order."""
        return list(self.alert_log.history)

    @property
    def best_epoch(self) -> int | None:
        return self.best.epoch

    @property
    def best_value(self) -> float | None:
        return self.best.value

    @property
    def probe_scale(self) -> float:
        """What a probe's loss is divided by for a per-example loss: the probe size when the
        model's TFRS tasks sum their loss over the batch (TFRS retrieval), else 1."""
        return self._scale

    @property
    def epoch_losses_comparable(self) -> bool:
        """Whether the epoch-level train and validation losses can be subtracted.

        Not for a `tfrs.Model` (its ``loss`` is the last batch's, so train and validation
        differ by their last batches' sizes and compositions) nor for a loss summed over
        the batch (it scales with the batch size). The probes (per example, equal sizes)
        give the gap then.
        """
        return self._losses_comparable

    @property
    def baseline(self) -> float | None:
        """The underfitting test's trivial baseline per example: the lowest of ``baselines``."""
        return min(self.baselines.values()) if self.baselines else None

    # ------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        self._reset()
        model = self.model
        check_xla_compatible(model, "OverfittingMonitor")
        workers.enter(self.log_dir, model.distribute_strategy, self)
        self._is_tfrs = _is_tfrs_model(model)
        if not self._is_tfrs and getattr(model, "compiled_loss", None) is None:
            raise RuntimeError("OverfittingMonitor needs a compiled model: call model.compile(loss=...) before fit().")
        self._losses_comparable = not self._is_tfrs and not _sum_reduced(model)
        self.tables.attach(model)
        if self.probe_every_n_steps is None:
            self.probe_every_n_steps = default_probe_every((self.params or {}).get("steps"))
        if self.probes.active:
            # Before any training step: the trivial baselines of the underfitting test.
            self._scale = self.probes.per_example_scale(model, self._is_tfrs)
            heldout, seen = self.probes.run(model, self._is_tfrs, self._stepped)
            if not self.baselines:
                self.baselines["untrained"] = (seen if seen is not None else heldout) / self._scale
                self.baselines.update(self.probes.trivial_baselines(model, self._is_tfrs))
            self._record_reading(heldout, seen)
        elif self._is_tfrs:
            self._note("no_probes_tfrs", "OverfittingMonitor: no train_probe_data, so underfitting is not judged "
                                         "(a TFRS epoch loss is the last batch's, often a sum).")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_start_step = self._step

    def on_train_batch_end(self, batch, logs=None):
        self._stepped = True
        self._step = self._epoch_start_step + int(batch) + 1
        if self.probes.active and self._step % self.probe_every_n_steps == 0:
            self._probe_reading()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        steps = self._step - self._epoch_start_step
        reading = None
        if self.probes.active:
            reading = self.readings[-1] if self.readings and self.readings[-1]["step"] == self._step \
                else self._probe_reading()
            self.detectors["one_epoch_overfitting"].end_epoch(
                self._epoch, self._step, *self._per_example(reading["heldout"], reading["seen"]), steps)
            heldout, seen = self._per_example(reading["heldout"], reading["seen"])
            logs["probe_heldout_loss"] = heldout
            if seen is not None:
                logs["probe_seen_loss"] = seen
            self._fit_cadence(steps)
        self._validation_extra = {}
        self._evaluate_validation(logs)
        values = {**self._validation_extra, **{k: float(v) for k, v in logs.items() if _is_number(v)}}
        # A tfrs.Model's logged losses are each worker's own last batch: decide on the chief's.
        values = workers.agree(self.model.distribute_strategy, values)
        self.epoch_logs.append(values)
        finite = D.all_finite(values.get(k) for k in ("loss", self.monitor)) and not self._gradients_nonfinite()
        if reading is not None:
            finite = finite and D.all_finite((reading["heldout"], reading["seen"]))
        self._pause(finite)
        writer = S.writer_for(self.log_dir, self.run)
        with writer.as_default():
            self._epoch_level(values)
            if self.probes.seen is None and not self._is_tfrs and "loss" in values and not self.pause.paused:
                self._apply(self.detectors["underfitting"].update(
                    self._step, self._epoch, seen=values["loss"], heldout=None, baseline=self.baseline,
                    stalled=self._stalled_layers()))
            self._embedding_level()
        writer.flush()
        self._track_best(values, reading)

    def on_train_end(self, logs=None):
        S.writer_for(self.log_dir, self.run).flush()
        workers.leave(self.log_dir, self)

    # ------------------------------------------------------------ readings

    def _per_example(self, heldout, seen):
        return (None if heldout is None else heldout / self._scale, None if seen is None else seen / self._scale)

    def _record_reading(self, heldout, seen) -> dict:
        reading = {"step": self._step, "epoch": self._epoch, "heldout": heldout, "seen": seen}
        self.readings.append(reading)
        heldout, seen = self._per_example(heldout, seen)  # what is written: per example
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
        coordinator = getattr(self.model, "_cluster_coordinator", None)
        if coordinator is not None:  # ParameterServerStrategy: batch hooks run before the step has
            coordinator.join()       # finished; probe the weights of the step the reading names
        reading = self._record_reading(*self.probes.run(self.model, self._is_tfrs, self._stepped))
        heldout, seen = self._per_example(reading["heldout"], reading["seen"])
        self._pause(D.all_finite((heldout, seen)) and not self._gradients_nonfinite())
        if self.pause.paused:
            return reading
        self._apply(self.detectors["one_epoch_overfitting"].update(
            self._step, self._epoch, heldout, seen, self._step - self._epoch_start_step, self.baseline))
        if seen is not None:
            self._apply(self.detectors["underfitting"].update(
                self._step, self._epoch, seen=seen, heldout=heldout, baseline=self.baseline,
                stalled=self._stalled_layers()))
        return reading

    def _fit_cadence(self, steps: int):
        """A default cadence that was a guess (unknown steps per epoch) is set from the first epoch's length."""
        if not self._explicit_every and self._epoch == 0 and not (self.params or {}).get("steps") and steps:
            self.probe_every_n_steps = default_probe_every(steps)

    # ------------------------------------------------------------ detectors

    def _apply(self, findings):
        D.apply_findings(self.alert_log, findings, self._step, self._epoch)
        for f in findings:
            if f.action == "fire" and f.kind in ("overfitting", "one_epoch_overfitting"):
                self._act(f.kind)

    def _pause(self, finite: bool):
        note = self.pause.update(finite, self._step)
        if note:
            self._note(f"pause_{self._step}_{finite}", note, force=True)

    def _gradients_nonfinite(self) -> bool:
        new, self._grad_nonfinite = gradients_nonfinite(self.gradient_statistics, self._grad_nonfinite)
        return new

    def _stalled_layers(self) -> list[str]:
        return stalled_layers(self.gradient_statistics)

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
            if k.endswith("loss") and not self._losses_comparable:
                self._note("epoch_loss_gap", (
                    "OverfittingMonitor: the epoch-level train/validation loss gap is not written: "
                    + ("a tfrs.Model reports the last batch's loss" if self._is_tfrs
                       else "the loss is summed over the batch") +
                    ", so the two differ by batch size, not by overfitting. The probe gap "
                    "(tfrs_diag/overfit/probe/gap: per example, equal-size samples) is the one to read."))
                continue
            scalars[S.tag("overfit", "epoch", k, "gap")] = val - train
            scalars[S.tag("overfit", "epoch", k, "relative_gap")] = T.relative_change(train, val)
        if self.monitor not in values:
            self._note("no_monitor", f"OverfittingMonitor: monitor={self.monitor!r} is not in the epoch logs "
                                     f"(available: {sorted(values)}); the overfitting trend test is off.")
            _write_scalars(scalars, epoch)
            return
        detector = self.detectors["overfitting"]
        findings = detector.update(values, best_epoch=self.best.epoch)
        for key, (t, p_worse) in detector.tests.items():
            scalars[S.tag("overfit", "epoch", "trend", key, "slope")] = t.slope
            scalars[S.tag("overfit", "epoch", "trend", key, "p_worse")] = p_worse
        _write_scalars(scalars, epoch)
        if not self.pause.paused:
            self._apply(findings)

    def _evaluate_validation(self, logs: dict):
        # fit(validation_data=...) already gave val_loss; other callbacks may add other val_ keys.
        if self.validation_data is None or "val_loss" in logs:
            return
        data = self.validation_data
        if isinstance(data, (tuple, list)):  # (x, y[, sample_weight]) arrays
            x, y, sw = tf.keras.utils.unpack_x_y_sample_weight(tuple(data))
            results = self.model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
        else:
            if isinstance(data, tf.data.Dataset) and not is_batched(data.element_spec):
                data = data.batch(_EVALUATE_BATCH_SIZE)  # one example per element: batched as for arrays
            results = self.model.evaluate(data, verbose=0, return_dict=True)
        # The loss (and the monitored key) go to the logs, where Keras' own validation would
        # put them; the rest is for the epoch-level tags only.
        for k, v in results.items():
            if k == "loss" or f"val_{k}" == self.monitor:
                logs.setdefault(f"val_{k}", float(v))
            else:
                self._validation_extra.setdefault(f"val_{k}", float(v))

    def _embedding_level(self):
        scalars, findings = {}, []
        for stats in self.tables.read(self._epoch, self._step):
            self.embedding_stats.append(stats)
            name = stats["table"]
            for key in ("information_abundance", "abundance_ratio", "effective_rank", "dead_row_fraction",
                        "tail_head_norm_ratio"):
                if math.isfinite(stats[key]):
                    scalars[S.tag("embed", key, name)] = stats[key]
            for i, v in enumerate(stats["bucket_norms"]):
                if math.isfinite(v):
                    scalars[S.tag("embed", f"row_norm_bucket_{i}", name)] = v
            if not D.all_finite([stats["information_abundance"], *stats["bucket_norms"]]):
                self._pause(False)
            if self.pause.paused:
                continue
            findings += self.detectors["embedding_collapse"].update(
                name, stats["information_abundance"], stats["dim"], stats["used_rows"], stats["effective_rank"])
            findings += self.detectors["dead_embedding_rows"].update(name, stats["dead_row_fraction"])
            findings += self.detectors["embedding_memorization"].update(name, stats["bucket_norms"])
        with S.writer_for(self.log_dir, self.run).as_default():
            self._scalars.write(scalars, self._step)  # the same tags every epoch: one traced write
        self._apply(findings)

    # ------------------------------------------------------------ best epoch and actions

    def _track_best(self, values: dict[str, float], reading: dict | None):
        if self.monitor in values:
            self.best.update(self.model, self._epoch, values[self.monitor])
        elif reading is not None and reading["heldout"] is not None:
            self._note("best_from_probe", f"OverfittingMonitor: {self.monitor!r} is not in the logs; the best epoch "
                                          "is picked by the held-out probe loss.")
            self.best.update(self.model, self._epoch, reading["heldout"], mode="min")

    def _act(self, kind: str):
        if self.on_overfit is None:
            return
        self.model.stop_training = True
        self.stopped_epoch = self._epoch
        restored = self.best.restore(self.model) if self.on_overfit == "restore_best" else None
        if restored is not None:
            self.restored_epoch = restored
            self._note(f"restored_{self._epoch}", f"OverfittingMonitor: {kind}; stopped training and restored the "
                                                   f"weights of epoch {restored + 1}.", force=True)
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


def _sum_reduced(model) -> bool:
    """Whether a Keras model's compiled loss sums over the batch (``reduction=SUM``)."""
    return getattr(getattr(model, "loss", None), "reduction", None) == tf.keras.losses.Reduction.SUM


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

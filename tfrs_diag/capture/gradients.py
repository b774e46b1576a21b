"""Capture of the gradients the optimizer really applies, as in-graph statistics.

`GradientCapture.attach(model)` wraps two bound methods of one model instance, nothing
else: ``model.optimizer.apply_gradients`` (it sees exactly the ``(gradient, variable)``
pairs of the step, unscaled under a mixed-precision `LossScaleOptimizer`, after the
all-reduce under `tf.distribute`) and ``model.train_step`` (for the per-replica batch
size and to add ``grad_norm`` to the Keras logs). The model's class is untouched, so an
unmodified `tfrs.Model` subclass works, and no extra forward or backward pass runs.

Statistics are computed in the compiled step into non-trainable variables that the
capture owns (not the model: checkpoints and `restore_best` never see them). The host
reads them every N steps. Nothing in the step calls back into Python, writes summaries
or uses string ops, so it compiles under ``jit_compile=True`` and runs on TPUs.

Every step runs a short fixed sequence of kernels (step time follows their number, not
their FLOPs): each variable's squared gradient norm (the global norm goes to the Keras
logs), a finiteness test of the global norm, the comparison of the global log-norm with
its running median for the exploding-gradient rule (`tfrs_diag.detectors.ExplodingGradients`),
and (two or more replicas) the gradient noise scale terms. Steps are numbered by the
optimizer (``optimizer.iterations`` after the step), so a resumed or second `fit`
continues the numbering. A `tf.cond` branch runs only on steps with something to record:
which variables went non-finite and when, the first exploding step per variable that
carries a share of that step's norm, and every
``every_n_steps`` a snapshot (max |g|, zero fraction, weight norm, update/weight ratio,
embedding row statistics). Every ``histogram_every_n_steps``: value histograms of that
one step (a snapshot, not accumulated over the interval).

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> capture = GradientCapture(every_n_steps=10)   # doctest: +SKIP
>>> capture.attach(model); model.fit(ds); stats = capture.read()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from tfrs_diag._graph import rare_cond
from tfrs_diag._keras import tf
from tfrs_diag.capture import snapshots
from tfrs_diag.capture.state import EMPTY, SCOPE, CaptureState
from tfrs_diag.capture.variables import TrackedVariable, track
from tfrs_diag.stats import gradients as G


class GradientCapture:
    """In-graph statistics of the gradients the optimizer applies, read every N steps.

    Args:
      every_n_steps: cadence of the snapshot statistics.
      histogram_every_n_steps: cadence of the value histograms (each one step's snapshot).
      histogram_bins: equal-width buckets between that step's min and max gradient.
      exploding_factor: a step whose global gradient norm is above this multiple of the
        running median (over ``exploding_window`` steps) explodes.
      exploding_window: steps in the running median; detection starts once it is more
        than half full (empty slots count as +inf), see `reset_detection`.
      exploding_min_share: an exploding step is recorded for the variables carrying at
        least this fraction of its global norm (and for the largest one).
      sanitize_nonfinite: replace a step's non-finite gradients by zeros before the
        optimizer sees them (used by ``on_nonfinite="stop"``/``"raise"`` so the weights
        you keep stay finite).
      update_ratio_max_elements: dense variables larger than this get no update/weight
        ratio (it needs a copy of the variable); embedding tables use touched rows only.
      noise_ema: EMA decay of the two noise-scale terms.
    """

    def __init__(self, every_n_steps: int = 100, histogram_every_n_steps: int = 1000, *,
                 histogram_bins: int = 30, exploding_factor: float = 100.0, exploding_window: int = 25,
                 exploding_min_share: float = 0.1, sanitize_nonfinite: bool = False, update_ratio_max_elements: int = 1 << 22,
                 noise_ema: float = 0.95):
        for name, value in (("every_n_steps", every_n_steps), ("histogram_every_n_steps", histogram_every_n_steps),
                            ("histogram_bins", histogram_bins), ("exploding_window", exploding_window)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not exploding_factor > 1:
            raise ValueError(f"exploding_factor must be > 1, got {exploding_factor!r}")
        if not 0 < exploding_min_share <= 1:
            raise ValueError(f"exploding_min_share must be in (0, 1], got {exploding_min_share!r}")
        if not 0 <= noise_ema < 1:
            raise ValueError(f"noise_ema must be in [0, 1), got {noise_ema!r}")
        self.every_n_steps = int(every_n_steps)
        self.histogram_every_n_steps = int(histogram_every_n_steps)
        self.histogram_bins = int(histogram_bins)
        self.exploding_factor = float(exploding_factor)
        self.exploding_window = int(exploding_window)
        self.exploding_min_share = float(exploding_min_share)
        self.sanitize_nonfinite = bool(sanitize_nonfinite)
        self.update_ratio_max_elements = int(update_ratio_max_elements)
        self.noise_ema = float(noise_ema)
        self.tracked: list[TrackedVariable] | None = None
        self.state: CaptureState | None = None
        self.num_replicas = 1
        self._model = None
        self._optimizer = None
        self._make_train_function = None
        #: Called when a new fit finds the capture still attached (the last fit raised).
        self.on_abandoned = None
        self._tls = threading.local()
        self._read_fn = None
        self._xla = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------ wiring

    @property
    def attached(self) -> bool:
        return self._model is not None

    def attach(self, model) -> None:
        """Wraps ``model.optimizer.apply_gradients`` and ``model.train_step``.

        Call before the train function is traced (a Keras callback does it in
        ``on_train_begin`` and re-makes the train function).
        """
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise RuntimeError(
                "The model has no optimizer: call model.compile(optimizer=...) before fit(); "
                "gradient statistics are taken where the optimizer applies the gradients.")
        if self._model is not None and self._model is not model:
            raise RuntimeError("This GradientCapture is attached to another model; use one per model.")
        if getattr(optimizer, "_tfrs_diag_capture", None) not in (None, self):
            raise RuntimeError("Another GradientCapture is already attached to this model's optimizer.")
        if self._model is model:
            return
        self._model, self._optimizer = model, optimizer
        self.num_replicas = int(model.distribute_strategy.num_replicas_in_sync)
        # XLA (jit_compile, TPUs) cannot compile tf.unique; plain graphs prefer it.
        self._xla = bool(getattr(model, "_jit_compile", False)) or "TPU" in type(model.distribute_strategy).__name__
        original_apply = optimizer.apply_gradients
        original_train_step = model.train_step
        self._make_train_function = model.make_train_function
        capture = self

        def make_train_function(*args, **kwargs):
            # Still attached when the next fit starts: the last fit raised before its
            # on_train_end. Detach first, so that fit trains the model as it is.
            hook = capture.on_abandoned
            capture.detach()
            if hook is not None:
                hook()
            model.train_function = None
            return model.make_train_function(*args, **kwargs)

        def apply_gradients(grads_and_vars, *args, **kwargs):
            return capture._apply(original_apply, grads_and_vars, args, kwargs)

        def train_step(data):
            if capture.num_replicas > 1:  # only the noise scale needs the batch size
                capture._tls.batch_size = tf.shape(tf.nest.flatten(data)[0])[0]
            capture._tls.global_norm = None
            logs = original_train_step(data)
            norm = capture._tls.global_norm
            if isinstance(logs, dict) and norm is not None:
                logs = dict(logs)
                logs["grad_norm"] = norm
            return logs

        # Instance attributes shadow the bound methods; object.__setattr__ keeps Keras'
        # attribute tracking out of it.
        object.__setattr__(optimizer, "apply_gradients", apply_gradients)
        object.__setattr__(optimizer, "_tfrs_diag_capture", self)
        object.__setattr__(model, "train_step", train_step)
        object.__setattr__(model, "make_train_function", make_train_function)

    def make_train_function(self, force: bool = True):
        """The model's own ``make_train_function``: traces a step that includes the capture."""
        return self._make_train_function(force=force)

    def detach(self) -> None:
        """Restores the wrapped methods; the statistics variables stay readable."""
        if self._model is None:
            return
        for obj, attr in ((self._optimizer, "apply_gradients"), (self._optimizer, "_tfrs_diag_capture"),
                          (self._model, "train_step"), (self._model, "make_train_function")):
            obj.__dict__.pop(attr, None)
        self._model = self._optimizer = None
        self._make_train_function = None

    # ------------------------------------------------------------ in-graph

    def _apply(self, original_apply, grads_and_vars, args, kwargs):
        pairs_all = list(grads_and_vars)
        keep = [(g, v) for g, v in pairs_all if g is not None and v.dtype.is_floating]
        if not keep:
            return original_apply(pairs_all, *args, **kwargs)
        replica_ctx = tf.distribute.get_replica_context()
        aggregate = (self.num_replicas > 1 and replica_ctx is not None
                     and not kwargs.get("skip_gradients_aggregation", False)
                     and kwargs.get("experimental_aggregate_gradients", True))
        local = None
        if aggregate:
            # All-reduce here (as LossScaleOptimizer does) to see both the per-replica
            # and the global gradients: together they give the gradient noise scale.
            local = [g for g, _ in keep]
            inner = getattr(self._optimizer, "inner_optimizer", self._optimizer)
            if hasattr(inner, "aggregate_gradients"):
                pairs_all = inner.aggregate_gradients(pairs_all)
                kwargs = {**kwargs, "skip_gradients_aggregation": True}
            else:  # legacy OptimizerV2
                pairs_all = inner._aggregate_gradients(pairs_all)
                kwargs = {**kwargs, "experimental_aggregate_gradients": False}
            keep = [(g, v) for g, v in pairs_all if g is not None and v.dtype.is_floating]

        with self._lock:
            if self.tracked is None:
                self.tracked = track(keep, self._model, self.update_ratio_max_elements)
                with tf.init_scope():
                    self.state = CaptureState(self.tracked, self, self.num_replicas, [v for _, v in keep])
        if len(keep) != len(self.tracked):
            raise RuntimeError(
                f"The set of trained variables changed from {len(self.tracked)} to {len(keep)} between traces; "
                "create a new GradientStatistics callback after changing which variables are trainable.")

        with tf.name_scope(SCOPE):
            grads = [g for g, _ in keep]
            variables = [v for _, v in keep]
            # The statistics have no Python control flow on tensors (tf.cond is explicit),
            # so AutoGraph conversion would only add tracing time.
            record = tf.autograph.experimental.do_not_convert(self._record)
            new_grads, after = record(grads, variables, local)
        if self.sanitize_nonfinite:
            it = iter(new_grads)
            pairs_all = [(next(it), v) if (g is not None and v.dtype.is_floating) else (g, v) for g, v in pairs_all]
        result = original_apply(pairs_all, *args, **kwargs)
        # Automatic control dependencies order `after` behind the optimizer's writes
        # to the same variables.
        with tf.name_scope(SCOPE):
            after()
        return result

    def _record(self, grads, variables, local_grads):
        """Per-step statistics: a short fixed sequence of kernels on every step.

        Step time follows the number of kernels the executor runs, not their FLOPs, so
        every step does only: squared norms, a finiteness test of their sum, the
        exploding-gradient comparison of the global norm against its running median and
        the cadence tests. The rest sits in two
        `tf.cond` branches taken only on steps with something to record:

        - before the update, on a non-finite or exploding step: which variables and
          when. It reads no model variable, so it never delays the optimizer;
        - after the update, on snapshot steps (and the step before each, to keep a copy
          of dense weights for ||dw||/||w||) and histogram steps.
        """
        s, cfg = self.state, self
        tracked = self.tracked
        norms = [snapshots.sum_of_squares(self, g, v) for g, v in zip(grads, variables)]
        sumsq = tf.stack([n[0] for n in norms])
        # The optimizer's step count after this step: a counter of our own, set to
        # `optimizer.iterations` when created and at each epoch's start (`sync_step`), so
        # resumed fits, a second fit and initial_epoch continue the timeline. (Reading
        # `iterations` here instead changes the traced graph's op order and, with it, a
        # seeded run's numerics.) Counted once the gradients exist: Keras ends an epoch of
        # unknown length with a step whose get_next raises OutOfRangeError.
        with tf.control_dependencies([sumsq]):
            step = s.step.assign_add(1)
        touched = [n[1] for n in norms]  # sparse: (row ids, valid, rows before the update)
        total_sq = tf.reduce_sum(sumsq)
        finite_total = tf.math.is_finite(total_sq)  # False iff some variable's norm is NaN/Inf (or overflows)
        self._tls.global_norm = tf.sqrt(total_sq)

        # Exploding: the global log10 norm vs the median of the last `window` steps. A
        # non-finite step enters the window as the median itself, so it moves nothing;
        # empty slots (EMPTY) keep the median above any norm until the window is more
        # than half full.
        window = cfg.exploding_window
        log_norm = tf.minimum(tf.math.log(tf.maximum(total_sq, 1e-38)) * (0.5 / math.log(10.0)), 39.0)
        history = s.log_norm_window.read_value()  # [window]
        # The (window // 2 + 1)-th largest is the median for an odd window.
        median = tf.math.top_k(history, k=window // 2 + 1, sorted=True).values[-1]
        ratio_log = log_norm - median
        over = ratio_log > math.log10(cfg.exploding_factor)
        s.log_norm_window.assign(tf.concat([history[1:], tf.where(finite_total, log_norm, median)[None]], 0))

        def rare_step():
            finite = tf.stack([G.all_finite(g.values if isinstance(g, tf.IndexedSlices) else g) for g in grads])
            bad = tf.logical_not(finite)
            overflow = snapshots.expected_overflow(self)
            if overflow is not None:
                # A dynamic LossScaleOptimizer skips such steps and lowers its scale:
                # expected, so counted apart. Once the scale is down to 1 they are real.
                s.overflow_count.assign_add(tf.cast(tf.reduce_any(bad) & overflow, tf.int64))
                bad = bad & tf.logical_not(overflow)
            s.nonfinite_first.assign(tf.where(bad & (s.nonfinite_first < 0), step, s.nonfinite_first))
            s.nonfinite_count.assign_add(tf.cast(bad, tf.int64))
            s.nonfinite_last_step.assign(tf.where(tf.reduce_any(bad), step, s.nonfinite_last_step))
            s.last_sumsq.assign(sumsq)
            # The variables that carry the explosion: min_share of the step's norm, or the largest.
            share = tf.sqrt(sumsq / tf.maximum(total_sq, 1e-38))
            carries = (share >= cfg.exploding_min_share) | tf.equal(sumsq, tf.reduce_max(sumsq))
            newly = over & finite & carries & (s.exploding_first < 0)
            s.exploding_first.assign(tf.where(newly, step, s.exploding_first))
            s.exploding_ratio.assign(tf.where(newly, tf.pow(10.0, ratio_log), s.exploding_ratio))
            s.exploding_share.assign(tf.where(newly, share, s.exploding_share))
            return bad

        rare = tf.logical_not(finite_total) | over
        bad = rare_cond(rare, rare_step, lambda: tf.zeros([len(tracked)], tf.bool), lower=self._xla)

        if s.noise is not None and local_grads is not None:
            snapshots.record_noise(self, local_grads, sumsq)

        new_grads = grads
        if cfg.sanitize_nonfinite:
            new_grads = [snapshots.zero_if(bad[i], g) for i, g in enumerate(grads)]

        def after():
            snapshot = tf.equal(step % cfg.every_n_steps, 0)
            histogram = tf.equal(step % cfg.histogram_every_n_steps, 0)
            # The step before a snapshot keeps a copy of the dense weights it leaves
            # behind: the snapshot step's weights before its update.
            prepare = tf.equal((step + 1) % cfg.every_n_steps, 0) if s.prev else tf.constant(False)

            def after_branch():
                dedup = [G.deduplicate_rows(g) if t.sparse else None for g, t in zip(grads, tracked)]
                tf.cond(histogram, lambda: snapshots.histograms(self, step, grads, dedup), lambda: tf.constant(False))
                tf.cond(snapshot, lambda: snapshots.snapshot(self, step, grads, dedup, variables, sumsq, touched),
                        lambda: tf.constant(False))
                tf.cond(prepare, snapshots.keep_weights(self, variables), lambda: tf.constant(False))
                return tf.constant(True)

            rare_cond(snapshot | histogram | prepare, after_branch, lambda: tf.constant(False), lower=self._xla)

        return new_grads, after

    # ------------------------------------------------------------ host side

    def read(self) -> dict[str, Any] | None:
        """Reads every statistic to numpy (one host round-trip per array).

        Returns None before the first step has been traced.
        """
        s = self.state
        if s is None:
            return None
        if self._read_fn is None:
            fields = {"step": s.step, "last_sumsq": s.last_sumsq,
                      "nonfinite_first_step": s.nonfinite_first, "nonfinite_count": s.nonfinite_count,
                      "nonfinite_last_step": s.nonfinite_last_step,
                      "loss_scale_overflow_steps": s.overflow_count,
                      "exploding_first_step": s.exploding_first, "exploding_ratio": s.exploding_ratio,
                      "exploding_share": s.exploding_share,
                      "snapshot_step": s.snap_step, "snapshot": s.snap, "embedding": s.emb,
                      "row_norm_hist": s.emb_hist, "histogram_step": s.hist_step, "histogram": s.hist,
                      "histogram_range": s.hist_range}
            if s.noise is not None:
                fields["noise"] = s.noise
            # One traced call instead of one eager read per variable.
            self._read_fn = tf.function(lambda: {k: v.read_value() for k, v in fields.items()})
        out = {k: v.numpy() for k, v in self._read_fn().items()}
        for k in ("step", "nonfinite_last_step", "loss_scale_overflow_steps", "snapshot_step", "histogram_step"):
            out[k] = int(out[k])
        if s.noise is not None:
            g2, trace, n, b = out["noise"]
            if n > 0:
                corr = 1.0 - self.noise_ema ** n  # EMA bias correction
                g2, trace = g2 / corr, trace / corr
            out["noise"] = {"grad_sq": float(g2), "trace": float(trace), "updates": int(n),
                            "b_simple": float(trace / g2) if g2 > 0 and n > 0 else float("nan"),
                            "replica_batch": float(b)}
        return out

    def sync_step(self) -> None:
        """Sets the step counter to ``optimizer.iterations`` (host side; once per epoch)."""
        if self.state is not None and self._optimizer is not None:
            self.state.step.assign(tf.cast(self._optimizer.iterations, tf.int64))

    def reset_detection(self) -> None:
        """Forgets the in-graph detector state (a new `fit`, like Keras' ``EarlyStopping``).

        Empties the exploding window and the first non-finite / exploding steps; the
        step count (the optimizer's) and the snapshots stay.
        """
        s = self.state
        if s is None:
            return
        v_count = len(self.tracked)
        s.log_norm_window.assign(tf.fill([self.exploding_window], tf.constant(EMPTY, tf.float32)))
        s.nonfinite_first.assign(tf.fill([v_count], tf.constant(-1, tf.int64)))
        s.nonfinite_count.assign(tf.zeros([v_count], tf.int64))
        s.nonfinite_last_step.assign(tf.constant(-1, tf.int64))
        s.exploding_first.assign(tf.fill([v_count], tf.constant(-1, tf.int64)))
        s.exploding_ratio.assign(tf.zeros([v_count]))
        s.exploding_share.assign(tf.zeros([v_count]))

    def rearm_exploding(self) -> None:
        """Forgets the first exploding step of every variable, so that a later explosion is recorded."""
        s = self.state
        if s is None:
            return
        v_count = len(self.tracked)
        s.exploding_first.assign(tf.fill([v_count], tf.constant(-1, tf.int64)))
        s.exploding_ratio.assign(tf.zeros([v_count]))
        s.exploding_share.assign(tf.zeros([v_count]))

    def nonfinite_since(self) -> int:
        """Step of the latest non-finite gradient (-1 if none): one scalar read."""
        if self.state is None:
            return -1
        return int(self.state.nonfinite_last_step.numpy())

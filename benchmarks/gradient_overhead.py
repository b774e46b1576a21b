#!/usr/bin/env python
"""What `GradientStatistics` adds to `model.fit`, next to the alternatives a user has.

Variants of `fit`, timed in one process on the same model, weights and data:

- ``plain``: no callbacks;
- ``gradstats``: `tfrs_diag.callbacks.GradientStatistics` at its default cadence
  (``every_n_steps=100``, ``histogram_every_n_steps=1000``);
- ``gradstats_ingraph``: the same callback with both cadences at 10**9, so the in-graph
  per-step statistics run but the host never writes a snapshot or histogram: the
  difference to ``gradstats`` is the host-side reading and writing;
- ``naive_summary``: a subclass of the same TFRS model whose ``train_step`` (that of
  `tfrs.Model`) also writes ``tf.summary.scalar`` of every gradient's norm and
  ``tf.summary.histogram`` of every gradient at every step, under
  ``writer.as_default()`` and ``tf.summary.record_if(True)`` around `fit` (the event
  file is checked to hold every summary);
- ``tensorboard``: ``tf.keras.callbacks.TensorBoard(log_dir, histogram_freq=1)``;
- ``gradstats_every_step`` (memory only): ``every_n_steps=1, histogram_every_n_steps=1``,
  so that every branch of the capture (snapshots, embedding-row statistics, value
  histograms) runs in the measured steps.

Workloads: ``movielens`` (the TFRS tutorial two-tower on MovieLens-100k, string ids,
embedding_dim 32, at batch 8192 and at batch 1024) and ``synthetic1m`` (integer ids,
a 1,000,000 x 64 item embedding table, Zipf-distributed item ids, batch 4096).
All use Adagrad(learning_rate=0.1).

Method. Each variant gets a freshly built model with the same initial weights and is
warmed up with a 2-step `fit` (so tracing is not in the timings, as far as the variant
allows: `GradientStatistics` makes a new train function in every `fit`, which is
measured, see "1st step"). Then ``--repeats`` timed fits per variant run interleaved in
alternating order (ABC, CBA, ...). Reported per variant: median and minimum wall
seconds of `fit` and their ratios to ``plain``; the median step time (between
consecutive batch ends, robust to bursts of other load); the time to the end of the
first batch (tracing shows here); the ratio of process CPU seconds.

Peak memory: for ``synthetic1m``, each variant runs once more in its own child process
(``--memory-child VARIANT WORKLOAD``, a fresh model, ``--memory-steps`` steps, 101 by
default so that the first snapshot at step 100 is included) which reports the peak RSS
during `fit` (VmHWM, reset just before `fit`; ``ru_maxrss`` is useless there, see
`_common.ru_maxrss_mb`).

Profile ("where the time goes", on movielens-b1024): train functions of a plain model
and of models with the capture attached are called step by step, interleaved, and the
host-side work of the callback is timed on its own (see `profile_overhead`).

Run (about 11-13 minutes on 2 CPU cores shared with other jobs):

    TF_USE_LEGACY_KERAS=1 python benchmarks/gradient_overhead.py --json bench.json

Smoke run (under a minute): ``--quick``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import glob  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from tfrs_diag import GradientCapture, datasets, models  # noqa: E402
from tfrs_diag._keras import tf  # noqa: E402
from tfrs_diag.callbacks import GradientStatistics  # noqa: E402

SEED = 0
LEARNING_RATE = 0.1
TIMED_VARIANTS = ("plain", "gradstats", "gradstats_ingraph", "naive_summary", "tensorboard")
MEMORY_ONLY_VARIANTS = ("gradstats_every_step",)
ALL_VARIANTS = TIMED_VARIANTS + MEMORY_ONLY_VARIANTS
WORKLOAD_GROUPS = ("movielens", "synthetic1m")
# Variants timed by default (the run must stay well under 15 minutes on 2 cores). The
# diagnostic gradstats_ingraph runs where per-step cost matters most (batch 1024);
# TensorBoard(histogram_freq=1) is left out on the 1M-row table: its weight histograms
# need ~17 GB there (measured; see docs/benchmarks.md). Ask for it with --variants.
DEFAULT_VARIANTS = {
    "movielens-b8192": ("plain", "gradstats", "naive_summary", "tensorboard"),
    "movielens-b1024": TIMED_VARIANTS,
    "synthetic1m": ("plain", "gradstats", "naive_summary"),
}
TIME_BAR = 1.03  # docs/design.md section 7: at most 3% added to fit time at default cadence
MEMORY_BAR = 1.05  # docs/design.md section 7: peak memory of fit grows by at most 5%
WARMUP_STEPS = 2
# TensorBoard's histogram summary one-hot encodes every value (float64, 30 buckets):
# measured ~260 bytes of peak memory per weight element (16.7 GB for 65M elements).
TB_HISTOGRAM_BYTES_PER_ELEMENT = 260


def default_data_dir() -> str:
    env = os.environ.get("TFRS_DIAG_MOVIELENS_DIR")
    return env if env else str(C.REPO_ROOT.parent / "shared" / "data" / "movielens-100k")


# ---------------------------------------------------------------- workloads


@dataclasses.dataclass
class Workload:
    name: str  # e.g. "movielens-b8192"; the WORKLOAD of --memory-child
    group: str  # "movielens" or "synthetic1m"
    description: str
    data: dict[str, np.ndarray]
    keys: tuple[str, str]
    model_kwargs: dict[str, Any]
    batch_size: int
    epochs: int
    variants: tuple[str, ...]
    memory: bool  # also measure peak RSS in child processes

    @property
    def num_examples(self) -> int:
        return len(self.data[self.keys[0]])

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.batch_size)

    def dataset(self) -> tf.data.Dataset:
        return models.retrieval_dataset(self.data, self.batch_size, keys=self.keys, shuffle_seed=SEED)

    def config(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self.model_kwargs.items() if not k.endswith("vocabulary")}
        return {"name": self.name, "group": self.group, "description": self.description,
                "examples": self.num_examples, "batch_size": self.batch_size, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "steps_per_fit": self.steps_per_epoch * self.epochs,
                "optimizer": f"Adagrad(learning_rate={LEARNING_RATE})", "model": cfg,
                "variants": list(self.variants)}


def zipf_interactions(num_users: int, num_items: int, num_interactions: int, exponent: float = 1.0,
                      seed: int = SEED) -> dict[str, np.ndarray]:
    """(user_index, item_index) pairs: users uniform, items Zipf(exponent) over ``num_items``.

    Item popularity ranks are spread over the table by a random permutation, so the
    popular rows are not all at the start of the embedding table.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1, dtype=np.float64) ** exponent
    rank = rng.choice(num_items, size=num_interactions, p=weights / weights.sum())
    items = rng.permutation(num_items)[rank]
    users = rng.integers(0, num_users, size=num_interactions)
    return {"user_index": users.astype(np.int64), "item_index": items.astype(np.int64)}


def _variants_for(name: str, args) -> tuple[str, ...]:
    if args.variants is not None:
        return args.variants
    return TIMED_VARIANTS if args.quick else DEFAULT_VARIANTS[name]


def make_workloads(args, only: str | None = None) -> tuple[list[Workload], dict[str, str]]:
    """The workloads selected by ``args`` (or just the one named ``only``), and the skipped ones."""
    workloads: list[Workload] = []
    skipped: dict[str, str] = {}
    groups = WORKLOAD_GROUPS if args.workload == "all" else (args.workload,)
    if only is not None:
        groups = (only.split("-")[0],)
    quick = args.quick
    if "movielens" in groups:
        path = Path(args.data_dir)
        if not (path / "u.data").is_file():
            msg = (f"MovieLens-100k not found at {path} (no u.data): skipping the movielens workload. "
                   "Pass --data-dir or set TFRS_DIAG_MOVIELENS_DIR.")
            C.log(msg)
            skipped["movielens"] = msg
        else:
            ml = datasets.movielens_100k(path)
            data = {k: ml.train[k] for k in ("user_id", "item_id")}
            configs = ((8192, 1), (1024, 5))  # (batch size, default epochs per timed fit)
            if quick:
                data = {k: v[:8192] for k, v in data.items()}
                configs = ((1024, 1),)
            kwargs = dict(user_vocabulary=ml.users["user_id"], item_vocabulary=ml.items["item_id"], embedding_dim=32)
            for batch, epochs in configs:
                name = f"movielens-b{batch}"
                workloads.append(Workload(
                    name, "movielens",
                    f"MovieLens-100k train split ({len(data['user_id'])} ratings), TwoTowerModel with StringLookup "
                    f"vocabularies, embedding_dim 32, batch {batch}", data, ("user_id", "item_id"), kwargs, batch,
                    epochs if quick else (args.epochs or epochs), _variants_for(name, args), memory=False))
    if "synthetic1m" in groups:
        num_items = 20_000 if quick else args.num_items
        n = 8192 if quick else args.interactions
        batch = 1024 if quick else args.batch_size_synthetic
        data = zipf_interactions(args.num_users, num_items, n)
        workloads.append(Workload(
            "synthetic1m", "synthetic1m",
            f"synthetic: {n} interactions, {args.num_users} users uniform, item ids Zipf(1.0) over {num_items} "
            f"items; TwoTowerModel(num_users, num_items, embedding_dim=64), batch {batch}",
            data, ("user_index", "item_index"),
            dict(num_users=args.num_users, num_items=num_items, embedding_dim=64),
            batch, 1 if quick else (args.epochs or 1), _variants_for("synthetic1m", args),
            memory=not args.no_memory))
    if only is not None:
        workloads = [w for w in workloads if w.name == only or (only == "movielens" and w.name == "movielens-b8192")]
        if not workloads:
            raise SystemExit(f"unknown or unavailable workload {only!r}")
    return workloads, skipped


# ---------------------------------------------------------------- the naive variant


class NaiveSummaryTwoTower(models.TwoTowerModel):
    """The same two-tower model, with the per-step summaries a user would hand-write.

    ``train_step`` is `tfrs.Model.train_step` plus, after the update, a scalar of each
    gradient's norm and a histogram of each gradient's values, every step. Embedding
    gradients arrive as `tf.IndexedSlices`; their ``.values`` (the gathered rows) are
    summarised, which is the cheap choice: passing the IndexedSlices itself to
    ``tf.summary.histogram`` would densify the whole table every step.
    """

    def train_step(self, inputs):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
            total_loss = loss + regularization_loss
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        step = self.optimizer.iterations
        for i, (g, v) in enumerate(zip(gradients, self.trainable_variables)):
            if g is None:
                continue
            values = g.values if isinstance(g, tf.IndexedSlices) else g
            name = f"{i}_{v.name.split(':')[0]}"
            tf.summary.scalar(f"grad_norm/{name}", tf.norm(values), step=step)
            tf.summary.histogram(f"grad/{name}", values, step=step)
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics["loss"] = loss
        metrics["regularization_loss"] = regularization_loss
        metrics["total_loss"] = total_loss
        return metrics


# ---------------------------------------------------------------- one variant


def build_model(w: Workload, naive: bool = False, init_weights=None):
    """A fresh, compiled model of ``w``; with ``init_weights``, starting from those weights."""
    tf.keras.utils.set_random_seed(SEED)
    cls = NaiveSummaryTwoTower if naive else models.TwoTowerModel
    model = cls(**w.model_kwargs)
    # Keras builds layers lazily: build both towers now, so the weights exist and can be set.
    model.user_model(tf.constant(w.data[w.keys[0]][:2]))
    model.item_model(tf.constant(w.data[w.keys[1]][:2]))
    if init_weights is not None:
        model.set_weights(init_weights)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=LEARNING_RATE))
    return model


def tensorboard_too_big(model) -> str | None:
    """Why TensorBoard(histogram_freq=1) would likely exhaust memory here, or None."""
    elements = sum(int(np.prod(v.shape)) for v in model.weights)
    need_gb = elements * TB_HISTOGRAM_BYTES_PER_ELEMENT / 1e9
    avail = C.mem_available_gb()
    if avail is not None and need_gb > 0.9 * avail:
        return (f"skipped: TensorBoard(histogram_freq=1) would need ~{need_gb:.0f} GB for the weight histograms of "
                f"{elements / 1e6:.0f}M weights; {avail:.0f} GB available")
    return None


class Runner:
    """One variant: its model, callbacks and (for ``naive_summary``) default summary writer."""

    def __init__(self, variant: str, w: Workload, log_root: str, init_weights=None):
        self.variant = variant
        self.log_dir = os.path.join(log_root, w.name, variant)
        os.makedirs(self.log_dir, exist_ok=True)
        self.model = build_model(w, naive=variant == "naive_summary", init_weights=init_weights)
        self.writer = None
        self.callbacks: list = []
        self.skip_reason = None
        if variant == "gradstats":
            self.callbacks = [GradientStatistics(self.log_dir, verbose=0)]
        elif variant == "gradstats_ingraph":
            self.callbacks = [GradientStatistics(self.log_dir, every_n_steps=10**9, histogram_every_n_steps=10**9,
                                                 verbose=0)]
        elif variant == "gradstats_every_step":
            self.callbacks = [GradientStatistics(self.log_dir, every_n_steps=1, histogram_every_n_steps=1, verbose=0)]
        elif variant == "tensorboard":
            self.skip_reason = tensorboard_too_big(self.model)
            self.callbacks = [tf.keras.callbacks.TensorBoard(self.log_dir, histogram_freq=1)]
        elif variant == "naive_summary":
            self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        elif variant != "plain":
            raise ValueError(f"unknown variant {variant!r}; choose from {ALL_VARIANTS}")
        self.timer = C.keras_fit_timer()
        self.steps_run = 0

    def fit(self, ds, epochs: int, extra_callbacks=()) -> dict[str, Any]:
        callbacks = self.callbacks + list(extra_callbacks) + [self.timer]
        t0, c0 = time.perf_counter(), time.process_time()
        if self.writer is not None:
            with self.writer.as_default(), tf.summary.record_if(True):
                self.model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)
            self.writer.flush()  # inside the timing: the summaries must reach the file
        else:
            self.model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)
        t1, c1 = time.perf_counter(), time.process_time()
        tm = self.timer
        self.steps_run += tm.batches
        steady_steps = max(tm.batches - 1, 1)
        durations = tm.step_durations()
        return {"wall": t1 - t0, "cpu": c1 - c0, "steps": tm.batches,
                "first_step": tm.first_batch_end - t0,
                "steady_per_step": (t1 - tm.first_batch_end) / steady_steps,
                "steady_cpu_per_step": (c1 - tm.cpu_first_batch_end) / steady_steps,
                "median_step": C.median(durations)}


def _crash(e: BaseException) -> tuple[str, str]:
    text = str(e).strip()
    return f"crashed: {type(e).__name__}", f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def count_summaries(log_dir: str) -> dict[str, int]:
    """Event files, bytes and summary values under ``log_dir`` (proof the summaries got written)."""
    files = sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True))
    values = 0
    for f in files:
        for record in tf.data.TFRecordDataset(f):
            values += len(tf.compat.v1.Event.FromString(record.numpy()).summary.value)
    return {"event_files": len(files), "bytes": sum(os.path.getsize(f) for f in files), "summary_values": values}


# ---------------------------------------------------------------- timing


def time_workload(w: Workload, repeats: int, log_root: str) -> dict[str, Any]:
    C.log(f"== {w.name}: {w.description}; {w.epochs} epoch(s) x {w.steps_per_epoch} steps per timed fit; "
          f"variants {', '.join(w.variants)}")
    ds = w.dataset()
    warm_ds = ds.take(WARMUP_STEPS)
    init_weights = build_model(w).get_weights()
    results: dict[str, dict[str, Any]] = {v: {"status": "ok", "samples": []} for v in w.variants}
    runners: dict[str, Runner] = {}
    for v in w.variants:
        with C.Stopwatch() as sw:
            try:
                runner = Runner(v, w, log_root, init_weights)
                if runner.skip_reason:
                    results[v]["status"] = runner.skip_reason
                else:
                    runner.fit(warm_ds, epochs=1)
                    runners[v] = runner
            except Exception as e:  # a crash is a finding: record it, keep going
                results[v]["status"], results[v]["error"] = _crash(e)
        C.log(f"  warm-up {v:<18} {sw.wall:6.1f}s  {results[v]['status']}"
              + (f" ({results[v]['error']})" if "error" in results[v] else ""))
    for rep in range(repeats):
        for v in C.interleaved_order([v for v in w.variants if v in runners], rep):
            try:
                sample = runners[v].fit(ds, epochs=w.epochs)
            except Exception as e:
                results[v]["status"], results[v]["error"] = _crash(e)
                C.log(f"  rep {rep + 1}/{repeats} {v:<18} {results[v]['status']} ({results[v]['error']})")
                runners.pop(v)
                continue
            results[v]["samples"].append(sample)
            C.log(f"  rep {rep + 1}/{repeats} {v:<18} fit {sample['wall']:7.2f}s  cpu {sample['cpu']:7.2f}s  "
                  f"1st step {sample['first_step']:5.2f}s  median step {1000 * sample['median_step']:7.1f} ms  "
                  f"steady mean {1000 * sample['steady_per_step']:7.1f} ms ({sample['steps']} steps)")
    checks = {}
    for v, runner in runners.items():
        if v in ("naive_summary", "gradstats", "gradstats_ingraph", "tensorboard"):
            counts = count_summaries(runner.log_dir)
            counts["steps_run"] = runner.steps_run
            if v == "naive_summary":
                n_vars = len(runner.model.trainable_variables)
                counts["expected_at_least"] = runner.steps_run * n_vars * 2
                counts["ok"] = counts["bytes"] > 0 and counts["summary_values"] >= counts["expected_at_least"]
                if not counts["ok"]:
                    C.log(f"  WARNING: naive_summary wrote {counts['summary_values']} summary values, expected >= "
                          f"{counts['expected_at_least']}")
            checks[v] = counts
            C.log(f"  {v} wrote {counts['summary_values']} summary values in {counts['event_files']} event file(s), "
                  f"{counts['bytes']} bytes, over {runner.steps_run} steps")
    summarise(results)
    del runners
    gc.collect()
    tf.keras.backend.clear_session()
    return {"config": w.config(), "variants": results, "summary_checks": checks}


def summarise(results: dict[str, dict[str, Any]]) -> None:
    """Adds medians, minima, spreads and ratios to ``plain`` to every variant's entry."""
    for r in results.values():
        s = r["samples"]
        for key in ("wall", "cpu", "first_step", "steady_per_step", "steady_cpu_per_step", "median_step"):
            r[f"median_{key}"] = C.median(x[key] for x in s)
        r["min_wall"] = min((x["wall"] for x in s), default=float("nan"))
        r["spread_wall"] = C.spread([x["wall"] for x in s])
    base = results.get("plain", {})
    for r in results.values():
        for key in ("wall", "cpu", "steady_per_step", "steady_cpu_per_step", "median_step"):
            r[f"ratio_{key}"] = C.ratio(r.get(f"median_{key}"), base.get(f"median_{key}"))
        r["ratio_min_wall"] = C.ratio(r.get("min_wall"), base.get("min_wall"))
        # Per-repetition ratios (variant and plain from the same round) as a drift check.
        paired = [C.ratio(a["wall"], b["wall"]) for a, b in zip(r["samples"], base.get("samples", []))]
        r["median_paired_ratio_wall"] = C.median(paired)


# ---------------------------------------------------------------- profile


def profile_overhead(w: Workload, rounds: int, log_root: str) -> dict[str, Any]:
    """Splits GradientStatistics' cost into tracing, in-graph per step and host-side work.

    - tracing: a new train function is made and called once (what every `fit` with the
      callback does in ``on_train_begin``), plain vs with the capture; the first call's
      time minus a steady step is the tracing cost;
    - in-graph: train functions of a plain model, of a second plain model (an A/A
      control: how far two identical models differ is the noise floor of this
      measurement), of one with the callback's capture at default cadence and of one
      with a capture that never snapshots, called one step at a time in alternating
      order for ``rounds`` rounds (no Keras loop, no callbacks), so a burst of other
      load hits all of them alike; medians and means per step;
    - host: the callback's per-batch hook (and Keras' conversion of the logs to numpy,
      which it triggers because it does not accept tensor logs), and one
      read-and-write of the statistics (``_flush_stats``, done every ``every_n_steps``).
    """
    C.log(f"== profile on {w.name}: tracing, in-graph step cost ({rounds} interleaved rounds), host work")
    ds = w.dataset().repeat()
    init = build_model(w).get_weights()
    out: dict[str, Any] = {"workload": w.name, "rounds": rounds}

    plain = build_model(w, init_weights=init)
    plain_copy = build_model(w, init_weights=init)  # A/A control: the measurement's own noise floor
    cb_model = build_model(w, init_weights=init)
    cb = GradientStatistics(os.path.join(log_root, "profile", "gradstats"), verbose=0)
    cb.set_model(cb_model)
    cb.set_params({"epochs": 1, "steps": None, "verbose": 0})
    cb.on_train_begin()  # attaches the capture, makes the instrumented train function
    nosnap_model = build_model(w, init_weights=init)
    nosnap = GradientCapture(every_n_steps=10**9, histogram_every_n_steps=10**9)
    nosnap.attach(nosnap_model)
    fns = {"plain": plain.make_train_function(force=True), "plain_copy": plain_copy.make_train_function(force=True),
           "gradstats": cb_model.train_function,
           "capture_no_snapshot": nosnap_model.make_train_function(force=True)}
    iters = {k: iter(ds) for k in fns}
    for k, fn in fns.items():  # trace + warm up
        for _ in range(3):
            fn(iters[k])

    # In-graph cost per step.
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    last_logs = None
    for r in range(rounds):
        for k in C.interleaved_order(list(fns), r):
            t0, c0 = time.perf_counter(), time.process_time()
            logs = fns[k](iters[k])
            times[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)
            if k == "gradstats":
                last_logs = logs
    steps = {}
    for k in fns:
        steps[k] = {"median_ms": 1000 * C.median(times[k]), "mean_ms": 1000 * float(np.mean(times[k])),
                    "trimmed_mean_ms": 1000 * _trimmed_mean(times[k]), "median_cpu_ms": 1000 * C.median(cpus[k])}
    for k in fns:
        for stat in ("median_ms", "mean_ms", "trimmed_mean_ms", "median_cpu_ms"):
            steps[k][f"ratio_{stat}"] = C.ratio(steps[k][stat], steps["plain"][stat])
    out["step"] = steps
    C.log("  per step: " + "; ".join(f"{k} median {v['median_ms']:.2f} ms (x{v['ratio_median_ms']:.3f}), "
                                     f"trimmed mean {v['trimmed_mean_ms']:.2f} ms (x{v['ratio_trimmed_mean_ms']:.3f})"
                                     for k, v in steps.items()))

    # Tracing: a fresh train function per call, as in every fit with the callback.
    trace = {"plain": [], "gradstats": []}
    for r in range(3):
        for k in C.interleaved_order(list(trace), r):
            m = plain if k == "plain" else cb_model
            fn = m.make_train_function(force=True)
            t0 = time.perf_counter()
            fn(iters[k])
            trace[k].append(time.perf_counter() - t0 - steps[k]["median_ms"] / 1000)
    out["trace_s"] = {k: C.median(v) for k, v in trace.items()}
    C.log(f"  tracing a new train function: plain {out['trace_s']['plain']:.2f} s, "
          f"with capture {out['trace_s']['gradstats']:.2f} s")

    # Host side.
    from tf_keras.src.utils import tf_utils  # noqa: PLC0415

    host: dict[str, Any] = {}
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        numpy_logs = tf_utils.sync_to_numpy_or_python_type(last_logs)
    host["logs_to_numpy_ms"] = 1000 * (time.perf_counter() - t0) / n
    cb._next_read = 1 << 62  # time the hook on a batch with nothing to read
    t0 = time.perf_counter()
    for i in range(n):
        cb.on_train_batch_end(0, numpy_logs)
    host["hook_ms"] = 1000 * (time.perf_counter() - t0) / n
    try:
        flushes = []
        for _ in range(20):
            cb._written_snapshot = cb._written_histogram = -1  # force a full write each time
            t0 = time.perf_counter()
            cb._flush_stats()
            flushes.append(time.perf_counter() - t0)
        host["flush_ms"] = 1000 * C.median(flushes)
        t0 = time.perf_counter()
        for _ in range(20):
            cb.capture.read()
        host["read_ms"] = 1000 * (time.perf_counter() - t0) / 20
    except AttributeError as e:  # the callback's internals changed
        host["flush_error"] = str(e)
    # The default cadence follows the epoch length (None until fit knows it): 100 when unknown.
    host["cadence"] = cb.every_n_steps or 100
    host["flush_per_step_at_default_cadence_ms"] = host.get("flush_ms", float("nan")) / host["cadence"]
    out["host"] = host
    C.log(f"  host: logs->numpy {host['logs_to_numpy_ms']:.3f} ms/step, hook {host['hook_ms']:.3f} ms/step, "
          f"one flush (read+write) {C.fmt(host.get('flush_ms'))} ms of which read {C.fmt(host.get('read_ms'))} ms")
    cb.on_train_end()
    nosnap.detach()
    del plain, plain_copy, cb_model, nosnap_model, fns, iters
    gc.collect()
    tf.keras.backend.clear_session()
    return out


def _trimmed_mean(values, cut: float = 0.1) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(v) * cut)
    return float(v[k:len(v) - k].mean()) if len(v) > 2 * k else float("nan")


# ---------------------------------------------------------------- memory


def memory_child(variant: str, workload: str, args) -> None:
    """Runs in a fresh process: one `fit` of ``variant`` on ``workload``, then reports its peak RSS.

    The peak is VmHWM, reset right before `fit` (so it is the peak *during* `fit`; the
    import of TensorFlow and the building of the model before it do not mask it), not
    ``ru_maxrss``, which in a child starts at the parent's peak (Linux carries it over exec).
    """
    out: dict[str, Any] = {"variant": variant, "workload": workload, "status": "ok"}
    try:
        (w,), _ = make_workloads(args, only=workload)
        ds = w.dataset().repeat().take(args.memory_steps)
        log_root = tempfile.mkdtemp(prefix="tfrs_diag_mem_")
        runner = Runner(variant, w, log_root)
        if runner.skip_reason:
            out["status"] = runner.skip_reason
        else:
            gc.collect()
            out["peak_rss_before_fit_mb"] = C.peak_rss_mb()
            out["ru_maxrss_before_fit_mb"] = C.ru_maxrss_mb()
            out["peak_reset"] = C.reset_peak_rss()
            out["rss_before_fit_mb"] = C.current_rss_mb()
            peaks: list[float] = []

            class PeakPerStep(tf.keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    peaks.append(round(C.peak_rss_mb(), 1))

            sample = runner.fit(ds, epochs=1, extra_callbacks=[PeakPerStep()])
            out.update(steps=sample["steps"], fit_wall=sample["wall"], peak_rss_after_step_mb=peaks)
            out["peak_rss_mb"] = C.peak_rss_mb()  # peak during fit (VmHWM was reset before it)
            out["growth_mb"] = out["peak_rss_mb"] - out["rss_before_fit_mb"]
            out["rss_after_fit_mb"] = C.current_rss_mb()
        shutil.rmtree(log_root, ignore_errors=True)
    except Exception as e:
        out["status"], out["error"] = _crash(e)
    out["ru_maxrss_mb"] = C.ru_maxrss_mb()
    C.emit_result(out)


def measure_memory(w: Workload, args) -> dict[str, Any]:
    variants = [v for v in ALL_VARIANTS if (v in w.variants and v != "gradstats_ingraph") or v in MEMORY_ONLY_VARIANTS]
    if args.quick:
        variants = [v for v in variants if v in ("plain", "gradstats")]
    C.log(f"== peak memory, {w.name}: one child process per variant, {args.memory_steps} steps each")
    passthrough = ["--data-dir", args.data_dir, "--num-items", args.num_items, "--num-users", args.num_users,
                   "--interactions", args.interactions, "--batch-size-synthetic", args.batch_size_synthetic,
                   "--memory-steps", args.memory_steps] + (["--quick"] if args.quick else [])
    out: dict[str, Any] = {}
    for v in variants:
        with C.Stopwatch() as sw:
            res = C.run_child([Path(__file__).resolve(), "--memory-child", v, w.name, *passthrough])
        if "error" in res and "status" not in res:
            res = {"status": "child failed", "error": res["error"]}
        out[v] = res
        C.log(f"  {v:<22} peak RSS in fit {C.fmt(res.get('peak_rss_mb'), 0)} MB, growth in fit "
              f"{C.fmt(res.get('growth_mb'), 0)} MB  [{res['status']}] ({sw.wall:.0f}s)"
              + (f" {res['error']}" if "error" in res else ""))
    base = out.get("plain", {})
    for res in out.values():
        res["ratio_peak_rss"] = C.ratio(res.get("peak_rss_mb"), base.get("peak_rss_mb"))
        res["ratio_growth"] = C.ratio(res.get("growth_mb"), base.get("growth_mb"))
    return out


# ---------------------------------------------------------------- report


HEADERS = ["variant", "fit s (median)", "x plain", "fit s (min)", "x plain", "median step ms", "x plain",
           "1st step s", "CPU x plain", "peak RSS MB", "x plain"]


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    memory = res.get("memory", {})
    for v in ALL_VARIANTS:
        r = res["variants"].get(v)
        m = memory.get(v, {})
        if r is None and not m:
            continue
        mem_cells = [C.fmt(m.get("peak_rss_mb"), 0), C.fmt(m.get("ratio_peak_rss"), 3, "x")] if m else ["—", "—"]
        if m and m.get("status") != "ok":
            mem_cells = [m["status"].split(":")[0], "—"]
        if r is None:
            rows.append([f"{v} (memory only)", "—", "—", "—", "—", "—", "—", "—", "—", *mem_cells])
        elif not r["samples"]:
            rows.append([v, r["status"].split(":")[0] + (": " + r["status"].split(":")[1].split()[0]
                                                          if r["status"].startswith("crashed") else ""),
                         "—", "—", "—", "—", "—", "—", "—", *mem_cells])
        else:
            rows.append([v, C.fmt(r["median_wall"]), C.fmt(r["ratio_wall"], 3, "x"),
                         C.fmt(r["min_wall"]), C.fmt(r["ratio_min_wall"], 3, "x"),
                         C.fmt(1000 * r["median_median_step"], 1), C.fmt(r["ratio_median_step"], 3, "x"),
                         C.fmt(r["median_first_step"]), C.fmt(r["ratio_cpu"], 3, "x"), *mem_cells])
    return rows


def bar_verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(workload, bar, value, limit):
        out.append({"workload": workload, "bar": bar, "value": value, "limit": limit,
                    "met": bool(value <= limit) if math.isfinite(value) else None})

    for name, res in report["workloads"].items():
        g = res["variants"].get("gradstats", {})
        if g.get("samples"):
            n = len(g["samples"])
            add(name, f"GradientStatistics fit time, median of {n}, <= {TIME_BAR}x plain", g["ratio_wall"], TIME_BAR)
            add(name, f"GradientStatistics fit time, min of {n}, <= {TIME_BAR}x plain", g["ratio_min_wall"], TIME_BAR)
        m = res.get("memory", {}).get("gradstats", {})
        if m.get("status") == "ok":
            add(name, f"GradientStatistics peak RSS during fit <= {MEMORY_BAR}x plain", m["ratio_peak_rss"], MEMORY_BAR)
            add(name, f"GradientStatistics RSS growth during fit <= {MEMORY_BAR}x plain", m["ratio_growth"], MEMORY_BAR)
    prof = report.get("profile")
    if prof:
        s = prof["step"]["gradstats"]
        add(prof["workload"], f"in-graph step time with the capture (profile, median of {prof['rounds']}) "
                              f"<= {TIME_BAR}x plain", s["ratio_median_ms"], TIME_BAR)
        add(prof["workload"], f"in-graph step CPU time with the capture (profile, median of {prof['rounds']}) "
                              f"<= {TIME_BAR}x plain", s["ratio_median_cpu_ms"], TIME_BAR)
    return out


def print_report(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(f"# Gradient statistics overhead ({meta['date']})")
    print(f"command: {meta['command']}")
    m = meta["machine"]
    print(f"machine: {m['cpus_usable']} CPU cores ({m['cpu_model']}), {m['mem_total_gb']} GB RAM, GPUs: {m.get('gpus')}, "
          f"TensorFlow {m.get('tensorflow')}, tf-keras {m.get('tf_keras')}, TFRS {m.get('tensorflow_recommenders')}; "
          f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}; "
          f"total {meta['total_seconds']:.0f} s")
    for name, msg in report["skipped"].items():
        print(f"\nSKIPPED {name}: {msg}")
    for name, res in report["workloads"].items():
        cfg = res["config"]
        print(f"\n## {name}: {cfg['description']}")
        print(f"{cfg['epochs']} epoch(s) x {cfg['steps_per_epoch']} steps per timed fit, {cfg['optimizer']}, "
              f"{report['meta']['repeats']} interleaved repetitions\n")
        print(C.format_table(HEADERS, table_rows(res)))
        plain = res["variants"].get("plain", {})
        if len(plain.get("samples", [])) > 1:
            print(f"- noise: plain fit times spread {C.fmt(100 * plain['spread_wall'], 0)}% (max-min)/median")
        for v, r in res["variants"].items():
            if r["status"] != "ok":
                print(f"- {v}: {r['status']}" + (f" — {r['error']}" if "error" in r else ""))
        for v, check in res.get("summary_checks", {}).items():
            print(f"- {v}: {check['summary_values']} summary values written ({check['bytes']} bytes) over "
                  f"{check['steps_run']} steps" + (f"; check {'OK' if check['ok'] else 'FAILED'}" if "ok" in check else ""))
        for v, mres in res.get("memory", {}).items():
            if mres.get("status") != "ok":
                print(f"- memory {v}: {mres.get('status')}" + (f" — {mres['error']}" if "error" in mres else ""))
    prof = report.get("profile")
    if prof:
        print(f"\n## Where the time goes ({prof['workload']}, train functions called step by step, "
              f"{prof['rounds']} interleaved rounds)\n")
        rows = []
        for k, v in prof["step"].items():
            rows.append([k, C.fmt(v["median_ms"]), C.fmt(v["ratio_median_ms"], 3, "x"), C.fmt(v["trimmed_mean_ms"]),
                         C.fmt(v["ratio_trimmed_mean_ms"], 3, "x"), C.fmt(v["mean_ms"]), C.fmt(v["median_cpu_ms"]),
                         C.fmt(v["ratio_median_cpu_ms"], 3, "x")])
        print(C.format_table(["train function", "median ms", "x plain", "trimmed mean ms", "x plain", "mean ms",
                              "median CPU ms", "x plain"], rows))
        t, h = prof["trace_s"], prof["host"]
        aa = prof["step"].get("plain_copy")
        if aa:
            print(f"\n- A/A control, a second identical plain model: x{aa['ratio_median_ms']:.3f} (median), "
                  f"x{aa['ratio_median_cpu_ms']:.3f} (CPU): differences of that size are noise")
        print(f"\n- tracing a new train function (every fit with GradientStatistics; plain: first fit only): "
              f"plain {t['plain']:.2f} s, with the capture {t['gradstats']:.2f} s")
        print(f"- host, every step: Keras converts the logs to numpy (the callback does not accept tensor logs) "
              f"{h['logs_to_numpy_ms']:.3f} ms, the callback's batch hook {h['hook_ms']:.3f} ms")
        print(f"- host, every every_n_steps: one read + write of the statistics {C.fmt(h.get('flush_ms'))} ms "
              f"(of which reading the variables {C.fmt(h.get('read_ms'))} ms) = "
              f"{C.fmt(h['flush_per_step_at_default_cadence_ms'], 3)} ms per step at every_n_steps={h.get('cadence', 100)}")
    print("\n## Bars (docs/design.md section 7)")
    for b in report["bars"]:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[b["met"]]
        print(f"- {b['workload']}: {b['bar']}: {C.fmt(b['value'], 3, 'x')} -> {verdict}")


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="MovieLens-100k directory (default: $TFRS_DIAG_MOVIELENS_DIR or ../shared/data/movielens-100k "
                        "next to the repository)")
    p.add_argument("--workload", choices=WORKLOAD_GROUPS + ("all",), default="all")
    p.add_argument("--repeats", type=int, default=3, help="timed fits per variant (interleaved); default 3")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per timed fit for every workload (default: movielens 1 at batch 8192, 5 at batch "
                        "1024; synthetic1m 1)")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated timed variants for every workload, 'plain' always included (of "
                        f"{', '.join(TIMED_VARIANTS)}). Default: per workload, {DEFAULT_VARIANTS}")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke run under a minute")
    p.add_argument("--json", metavar="PATH", help="also write all results (every sample) as JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--no-profile", action="store_true", help="skip the where-the-time-goes profile")
    p.add_argument("--profile-only", action="store_true",
                   help="run only the profile (no timed fits, no memory children): a quick loop for optimising")
    p.add_argument("--memory-only", action="store_true",
                   help="run only the peak-memory child processes (e.g. with --num-items 2000000)")
    p.add_argument("--profile-rounds", type=int, default=600, help="interleaved step rounds of the profile (600)")
    p.add_argument("--num-items", type=int, default=1_000_000, help="synthetic1m item table rows (default 1,000,000)")
    p.add_argument("--num-users", type=int, default=20_000, help="synthetic1m users (default 20,000)")
    p.add_argument("--interactions", type=int, default=100_000, help="synthetic1m interactions (default 100,000)")
    p.add_argument("--batch-size-synthetic", type=int, default=4096, help="synthetic1m batch size (default 4096)")
    p.add_argument("--memory-steps", type=int, default=101,
                   help="steps of each memory child's fit (default 101: GradientStatistics' first snapshot, at step "
                        "100, allocates, so the peak at default cadence is only seen past it)")
    p.add_argument("--log-root", help="keep the variants' TensorBoard logs here (default: a temporary directory)")
    p.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variants is not None:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in TIMED_VARIANTS]
        if unknown:
            p.error(f"unknown variant(s) {unknown}; choose from {TIMED_VARIANTS}")
        args.variants = tuple(v for v in TIMED_VARIANTS if v in variants or v == "plain")
    if args.quick:
        args.repeats = 1
        args.memory_steps = min(args.memory_steps, 3)
        args.profile_rounds = min(args.profile_rounds, 20)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        variant, workload = args.memory_child
        memory_child(variant, workload, args)
        return 0
    started = time.perf_counter()
    report: dict[str, Any] = {"meta": {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/gradient_overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "repeats": args.repeats, "quick": args.quick, "seed": SEED, "machine": C.machine_info(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()]}, "workloads": {}}
    C.log(f"machine: {report['meta']['machine']}")
    workloads, report["skipped"] = make_workloads(args)
    tmp = None
    log_root = args.log_root
    if log_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="tfrs_diag_bench_")
        log_root = tmp.name
    try:
        timed = [] if (args.profile_only or args.memory_only) else workloads
        for w in timed:
            report["workloads"][w.name] = time_workload(w, args.repeats, log_root)
        if (args.profile_only or not (args.no_profile or args.memory_only)) and workloads:
            target = next((w for w in workloads if w.name == "movielens-b1024"), workloads[0])
            report["profile"] = profile_overhead(target, args.profile_rounds, log_root)
        for w in workloads if not args.profile_only else ():
            if w.memory:
                entry = report["workloads"].setdefault(w.name, {"config": w.config(), "variants": {}})
                entry["memory"] = measure_memory(w, args)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report["bars"] = bar_verdicts(report)
    report["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["meta"]["total_seconds"] = time.perf_counter() - started
    print_report(report)
    if args.json:
        C.write_json(args.json, report)
        C.log(f"wrote {args.json}")
    C.log(f"done in {report['meta']['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""What `OverfittingMonitor` and `EmbeddingProbe` add to `model.fit` on MovieLens-100k.

Variants of `fit`, timed in one process on the TFRS tutorial two-tower model
(`tfrs_diag.models.TwoTowerModel`, StringLookup vocabularies, embedding_dim 32,
Adagrad(0.1)) over the MovieLens-100k train split:

- ``plain``: the model, no callbacks;
- ``monitor``: the same model with `OverfittingMonitor` at its defaults
  (``probe_every_n_steps=None``: steps per epoch // 8, every 9 steps here;
  ``probe_size=256``): a held-out probe of 256 test ratings and a probe of 256 train
  ratings, evaluated in one traced call at that cadence and at each epoch end, plus the
  epoch-end bookkeeping (no validation data);
- ``probe``: `TwoTowerModel(embedding_probe=True)`, both embeddings wrapped in
  `EmbeddingProbe` (one scatter_add of ones per lookup), no callbacks;
- ``probe_monitor``: both, so the monitor also computes the embedding statistics
  (row norms, a sampled SVD, usage buckets) of both tables at each epoch end.

Method: every variant has its own model (same seed), warmed up with a 2-step `fit` (so
tracing is not timed), then ``--repeats`` timed fits of ``--epochs`` epochs each run
interleaved in alternating order (ABCD, DCBA, ...). Reported per variant: median and
minimum wall seconds of `fit`, the median step time (between consecutive batch ends),
and their ratios to ``plain`` (``probe_monitor`` also against ``probe``).

Profile ("where the time goes"): single train steps of the plain and the EmbeddingProbe
model called alternately (``--profile-rounds``), robust to the slow drift of a shared
machine; and the monitor's host work timed on its own (one probe reading, one epoch end).

Run (about 2 minutes on 2 cores):

    TF_USE_LEGACY_KERAS=1 python benchmarks/overfitting_overhead.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from tfrs_diag import datasets, models  # noqa: E402
from tfrs_diag._keras import tf  # noqa: E402
from tfrs_diag.callbacks import OverfittingMonitor  # noqa: E402

SEED = 0
VARIANTS = ("plain", "monitor", "probe", "probe_monitor")
BARS = {"monitor": ("plain", 1.05), "probe": ("plain", 1.02)}


def default_data_dir() -> str:
    env = os.environ.get("TFRS_DIAG_MOVIELENS_DIR")
    return env if env else str(C.REPO_ROOT.parent / "shared" / "data" / "movielens-100k")


def build(variant: str, ml, log_root: str, probe_every_n_steps: int | None):
    tf.keras.utils.set_random_seed(SEED)
    model = models.TwoTowerModel(ml.users["user_id"], ml.items["item_id"], embedding_dim=32,
                                 embedding_probe=variant.startswith("probe"))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    callbacks = []
    if variant.endswith("monitor"):
        keys = ("user_id", "item_id")
        callbacks.append(OverfittingMonitor(
            os.path.join(log_root, variant), probe_data={k: ml.test[k] for k in keys},
            train_probe_data={k: ml.train[k] for k in keys}, probe_every_n_steps=probe_every_n_steps, verbose=0))
    return model, callbacks


def profile_steps(runners, ds, rounds: int) -> dict:
    """Single train steps of the plain and the EmbeddingProbe model, interleaved; the monitor's host work."""
    fns, its = {}, {}
    names = ("plain", "probe", "plain_copy")
    for v in names:
        model = runners[v][0]
        fns[v] = model.make_train_function(force=True)
        its[v] = iter(ds.repeat())
        for _ in range(3):
            fns[v](its[v])
    times = {v: [] for v in names}
    for r in range(rounds):
        for v in C.interleaved_order(names, r):
            t = time.perf_counter()
            fns[v](its[v])["loss"].numpy()  # wait for the step
            times[v].append(time.perf_counter() - t)
    ratios = [b / a for a, b in zip(times["plain"], times["probe"])]
    aa = [b / a for a, b in zip(times["plain"], times["plain_copy"])]
    monitor = runners["monitor"][1][0]
    probe_monitor = runners["probe_monitor"][1][0]

    def per_call_ms(fn, n):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return 1000 * (time.perf_counter() - t) / n

    return {"plain_ms": 1000 * C.median(times["plain"]), "probe_ms": 1000 * C.median(times["probe"]),
            "ratio_median": C.median(ratios), "plain_copy_ms": 1000 * C.median(times["plain_copy"]),
            "aa_ratio_median": C.median(aa), "reading_ms": per_call_ms(monitor._probe_reading, 20),
            "epoch_end_ms": per_call_ms(lambda: monitor.on_epoch_end(0, {}), 10),
            "epoch_end_probe_ms": per_call_ms(lambda: probe_monitor.on_epoch_end(0, {}), 10)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=default_data_dir(), help="MovieLens-100k directory")
    p.add_argument("--repeats", type=int, default=5, help="timed fits per variant, interleaved (default 5)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed fit (default 2)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--probe-every-n-steps", type=int, default=None,
                   help="the monitor's cadence (default: the monitor's own, from the steps per epoch)")
    p.add_argument("--profile-rounds", type=int, default=300,
                   help="interleaved single-step rounds of the in-graph cost profile (0: skip; default 300)")
    p.add_argument("--json", metavar="PATH", help="also write all samples as JSON")
    args = p.parse_args(argv)
    if not (Path(args.data_dir) / "u.data").is_file():
        print(f"MovieLens-100k not found at {args.data_dir}; pass --data-dir", file=sys.stderr)
        return 2
    logging.getLogger("tfrs_diag").setLevel(logging.ERROR)  # the monitor's "no validation data" note
    started = time.perf_counter()
    ml = datasets.movielens_100k(args.data_dir)
    ds = models.retrieval_dataset({k: ml.train[k] for k in ("user_id", "item_id")}, args.batch_size,
                                  shuffle_seed=SEED)
    steps = args.epochs * -(-len(ml.train["user_id"]) // args.batch_size)
    meta = {"date": datetime.date.today().isoformat(), "machine": C.machine_info(),
            "command": " ".join(["python", "benchmarks/overfitting_overhead.py", *(argv or sys.argv[1:])]),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "steps_per_fit": steps}
    C.log(f"{len(ml.train['user_id'])} train ratings, batch {args.batch_size}, {steps} steps per timed fit")
    samples = {v: {"wall": [], "step": []} for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="tfrs_diag_bench_") as log_root:
        runners = {v: build(v, ml, log_root, args.probe_every_n_steps) for v in VARIANTS}
        for v, (model, callbacks) in runners.items():
            model.fit(ds.take(2), epochs=1, verbose=0, callbacks=callbacks)  # trace and build
        timer = C.keras_fit_timer()
        for r in range(args.repeats):
            for v in C.interleaved_order(VARIANTS, r):
                model, callbacks = runners[v]
                model.fit(ds, epochs=args.epochs, verbose=0, callbacks=[*callbacks, timer])
                samples[v]["wall"].append(timer.train_end - timer.train_begin)
                samples[v]["step"].append(C.median(timer.step_durations()))
                C.log(f"  repeat {r + 1} {v:<14} {samples[v]['wall'][-1]:.2f} s")
        readings = len(runners["monitor"][1][0].readings)
        cadence = runners["monitor"][1][0].probe_every_n_steps
        if args.profile_rounds:
            runners["plain_copy"] = build("plain", ml, log_root, args.probe_every_n_steps)  # A/A control
            profile = profile_steps(runners, ds, args.profile_rounds)
        else:
            profile = None
    res = {}
    for v in VARIANTS:
        s = samples[v]
        res[v] = {"median_wall": C.median(s["wall"]), "min_wall": min(s["wall"]),
                  "median_step_ms": 1000 * C.median(s["step"]), "spread": C.spread(s["wall"]), "samples": s}
    for v in VARIANTS:
        for ref in ("plain", "probe"):
            res[v][f"x_{ref}_median"] = C.ratio(res[v]["median_wall"], res[ref]["median_wall"])
            res[v][f"x_{ref}_min"] = C.ratio(res[v]["min_wall"], res[ref]["min_wall"])
            res[v][f"x_{ref}_step"] = C.ratio(res[v]["median_step_ms"], res[ref]["median_step_ms"])
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["total_seconds"] = time.perf_counter() - started

    m = meta["machine"]
    print(f"# OverfittingMonitor / EmbeddingProbe overhead ({meta['date']})")
    print(f"command: {meta['command']}")
    print(f"machine: {m['cpus_usable']} CPU cores ({m['cpu_model']}), TensorFlow {m.get('tensorflow')}; load average "
          f"{meta['loadavg_start']} -> {meta['loadavg_end']}; total {meta['total_seconds']:.0f} s")
    print(f"MovieLens-100k train split, TwoTowerModel dim 32, batch {args.batch_size}, {steps} steps per fit, "
          f"{args.repeats} interleaved repetitions; the monitor probed every {cadence} steps, "
          f"{readings} probe readings in the last fit\n")
    rows = [[v, C.fmt(r["median_wall"]), C.fmt(r["x_plain_median"], 3, "x"), C.fmt(r["min_wall"]),
             C.fmt(r["x_plain_min"], 3, "x"), C.fmt(r["median_step_ms"], 2), C.fmt(r["x_plain_step"], 3, "x"),
             C.fmt(r["spread"] * 100, 0)] for v, r in res.items()]
    print(C.format_table(["variant", "fit s (median)", "x plain", "fit s (min)", "x plain", "median step ms",
                          "x plain", "spread %"], rows))
    pm = res["probe_monitor"]
    print(f"\nprobe_monitor vs probe (the monitor with embedding statistics): x{pm['x_probe_median']:.3f} (median), "
          f"x{pm['x_probe_min']:.3f} (min), x{pm['x_probe_step']:.3f} (median step)")
    print("\n## Bars")
    for v, (ref, bar) in BARS.items():
        value = res[v][f"x_{ref}_median"]
        print(f"- {v}: fit time median {value:.3f}x {ref} (min {res[v][f'x_{ref}_min']:.3f}x) <= {bar}x -> "
              f"{'MET' if value <= bar else 'NOT MET'}")
    if profile:
        print(f"\n## Where the time goes ({args.profile_rounds} interleaved rounds of single train steps)\n")
        print(f"- train step, plain: {profile['plain_ms']:.2f} ms; with EmbeddingProbe: {profile['probe_ms']:.2f} ms "
              f"(x{profile['probe_ms'] / profile['plain_ms']:.3f}, median of per-round ratios "
              f"x{profile['ratio_median']:.3f})")
        print(f"- A/A control, a second plain model: {profile['plain_copy_ms']:.2f} ms "
              f"(x{profile['plain_copy_ms'] / profile['plain_ms']:.3f}, per-round x{profile['aa_ratio_median']:.3f}): "
              "differences of that size are noise")
        print(f"- one probe reading of the monitor (host call + two 256-example losses): {profile['reading_ms']:.2f} ms "
              f"= {profile['reading_ms'] / cadence:.3f} ms per step at probe_every_n_steps={cadence}")
        print(f"- epoch-end work of the monitor: {profile['epoch_end_ms']:.1f} ms without EmbeddingProbe, "
              f"{profile['epoch_end_probe_ms']:.1f} ms with it (both tables' norms, sampled spectrum, buckets)")
    if args.json:
        C.write_json(args.json, {"meta": meta, "results": res, "profile": profile})
    return 0


if __name__ == "__main__":
    sys.exit(main())

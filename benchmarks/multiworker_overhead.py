#!/usr/bin/env python
"""What the callbacks add to a two-worker `MultiWorkerMirroredStrategy` `fit` on MovieLens-100k.

Starts two worker processes of itself on 127.0.0.1 (``TF_CONFIG``, free ports). Each builds,
in one strategy scope, two copies of the TFRS two-tower model (`tfrs_diag.models.TwoTowerModel`,
embedding_dim 32, Adagrad(0.1), same seed):

- ``plain``: no callbacks;
- ``diagnosed``: EmbeddingProbe towers, `GradientStatistics` and `OverfittingMonitor`
  (256-example probes) at their default cadences.

Both are warmed up with a 2-step `fit`, then ``--repeats`` one-epoch fits run interleaved
(AB, BA, ...), the same sequence on both workers (the collectives require it). The chief
prints the median and minimum wall seconds of each variant's `fit` and their ratio.

Run (about 2 minutes on 2 cores):

    TF_USE_LEGACY_KERAS=1 python benchmarks/multiworker_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "diagnosed")


def worker(args) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in args.ports.split(",")]},
                                          "task": {"type": "worker", "index": args.index}})
    from tfrs_diag import datasets, models
    from tfrs_diag._keras import tf
    from tfrs_diag.callbacks import GradientStatistics, OverfittingMonitor

    import logging

    logging.getLogger("tfrs_diag").setLevel(logging.ERROR)  # the monitor's "no validation data" note
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ml = datasets.movielens_100k(args.data_dir)
    keys = ("user_id", "item_id")
    ds = models.retrieval_dataset({k: ml.train[k] for k in keys}, args.batch_size, shuffle_seed=0)
    log_root = tempfile.mkdtemp(prefix="tfrs_diag_mw_bench_")
    runners = {}
    for v in VARIANTS:
        tf.keras.utils.set_random_seed(0)
        with strategy.scope():
            model = models.TwoTowerModel(ml.users["user_id"], ml.items["item_id"], embedding_dim=32,
                                         embedding_probe=v == "diagnosed")
            model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        callbacks = []
        if v == "diagnosed":
            gs = GradientStatistics(os.path.join(log_root, v), verbose=0)
            callbacks = [gs, OverfittingMonitor(os.path.join(log_root, v), probe_data={k: ml.test[k] for k in keys},
                                                train_probe_data={k: ml.train[k] for k in keys},
                                                gradient_statistics=gs, verbose=0)]
        runners[v] = (model, callbacks)
        model.fit(ds.take(2), epochs=1, verbose=0, callbacks=callbacks)
    walls = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            model, callbacks = runners[v]
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
            walls[v].append(time.perf_counter() - start)
    if args.index == 0:
        print(json.dumps({"walls": walls, "steps": int(ds.cardinality())}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("TFRS_DIAG_MOVIELENS_DIR",
                                                        str(REPO.parent / "shared" / "data" / "movielens-100k")))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.index is not None:
        worker(args)
        return 0
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = ",".join(str(s.getsockname()[1]) for s in sockets)
    for s in sockets:
        s.close()
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    load = os.getloadavg()
    procs = [subprocess.Popen([sys.executable, __file__, "--index", str(i), "--ports", ports,
                               "--data-dir", args.data_dir, "--repeats", str(args.repeats),
                               "--batch-size", str(args.batch_size)],
                              env=env, stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL, text=True)
             for i in range(2)]
    try:
        out, _ = procs[0].communicate(timeout=1200)
        procs[1].wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    result = json.loads(out.strip().splitlines()[-1])
    walls = result["walls"]
    med = {v: statistics.median(walls[v]) for v in VARIANTS}
    print(f"# multi-worker callback overhead: 2 workers, {result['steps']} steps per epoch, "
          f"{args.repeats} interleaved one-epoch fits per variant; load average {load[0]:.2f} at start; "
          f"{time.perf_counter() - started:.0f} s in all")
    for v in VARIANTS:
        print(f"{v:<10} median {med[v]:.2f} s  min {min(walls[v]):.2f} s  samples {[round(w, 2) for w in walls[v]]}")
    print(f"diagnosed / plain: median {med['diagnosed'] / med['plain']:.3f}, "
          f"min {min(walls['diagnosed']) / min(walls['plain']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

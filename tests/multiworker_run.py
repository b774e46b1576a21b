"""One short fit with every callback, as a MultiWorkerMirroredStrategy worker or in-process.

``python tests/multiworker_run.py --index I --ports P0,P1 --out DIR`` is worker I of a
two-worker cluster on 127.0.0.1 (tests/test_multiworker.py starts two of them);
`run` is the same fit under any strategy (the test's one-process reference). Each
writes ``DIR/result.json`` (what every callback decided, the raw Keras logs, the
user tower's usage counts, where this worker wrote) and the chief ``DIR/init.npz`` (the
weights before training, which the reference starts from).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

GLOBAL_BATCH = 64  # 32 per replica with two replicas
STEPS, EPOCHS, PROBE = 3, 3, 48
STOP_AFTER = 2  # epochs: the planted overfitting finding stops fit there, on every worker


def run(strategy, log_dir: str, out: str, init_weights=None, disk_full_after: int | None = None) -> dict:
    """The fit; with ``disk_full_after=E`` every summary flush fails from epoch E's end on."""
    import warnings

    import numpy as np
    import tensorflow as tf

    import tutorial_models as T
    from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor
    from tfrs_diag.layers.embedding_probe import counting_paused
    from tfrs_diag import summary
    from tfrs_diag.summary import writer as summary_writer

    data = T.movielens_like(num_ratings=600)
    case = T.cases(data)["quickstart"]
    tf.keras.utils.set_random_seed(0)
    first = next(iter(case.train.batch(8)))
    with strategy.scope(), counting_paused():
        with T.probed():
            model = case.build()
        model.user_model(first["user_id"])
        model.movie_model(first["movie_title"])
        # "first": each worker logs its own first replica's loss (Keras' default sums over
        # every replica), so the workers' logs differ and the monitor must agree on them.
        model.distribute_reduction_method = "first"
    if init_weights is not None:
        for v, w in zip(model.trainable_variables, init_weights):
            v.assign(w)

    def arrays(ds, n):
        return tf.nest.map_structure(lambda t: t.numpy(), next(iter(ds.batch(n))))

    from tfrs_diag import detectors as D

    class PlantedOverfitting(D.Overfitting):
        """Fires after epoch STOP_AFTER (the real test needs five epochs of a worsening trend)."""

        def update(self, values, best_epoch=None):
            findings = super().update(values, best_epoch)
            if len(self.epochs) == STOP_AFTER:
                findings += D.found(self.fire(self.monitor, "planted", {"epochs": STOP_AFTER}))
            return findings

    gs = GradientStatistics(log_dir, every_n_steps=1, verbose=0)
    monitor = OverfittingMonitor(log_dir, probe_data=arrays(case.validation, PROBE),
                                 train_probe_data=arrays(case.train, PROBE), probe_size=PROBE,
                                 probe_every_n_steps=2, gradient_statistics=gs, on_overfit="stop",
                                 detectors=[PlantedOverfitting()], verbose=0)
    beyond = BeyondAccuracy(log_dir, case.validation, case.candidates, k=(5, 10), query_key=case.query_key,
                            item_key=case.item_key, query_features=case.query_features, verbose=0)
    seen: dict = {"raw_logs": [], "write_dirs": set(), "disk_full": False}

    class Watch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["raw_logs"].append({k: float(v) for k, v in (logs or {}).items()})
            seen["write_dirs"].add(summary_writer.run_path(log_dir, ""))
            # After the callbacks' writes of this epoch (Watch is last): the disk fills.
            seen["disk_full"] = disk_full_after is not None and epoch >= disk_full_after

    original_create = tf.summary.create_file_writer

    def create(path, *args, **kwargs):  # a writer whose flush fails once the disk is full
        writer = original_create(path, *args, **kwargs)
        inner = writer.flush

        def flush():
            if seen["disk_full"]:
                raise tf.errors.ResourceExhaustedError(None, None, f"{path}; No space left on device")
            return inner()

        writer.flush = flush
        return writer

    if init_weights is None and strategy.extended.should_checkpoint:
        np.savez(os.path.join(out, "init.npz"), *[v.numpy() for v in model.trainable_variables])
    tf.summary.create_file_writer = create
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", summary.SummaryWriteWarning)
            model.fit(case.train.batch(GLOBAL_BATCH, drop_remainder=True).repeat(), epochs=EPOCHS,
                      steps_per_epoch=STEPS, validation_data=case.validation.batch(GLOBAL_BATCH, drop_remainder=True),
                      verbose=0, callbacks=[gs, monitor, beyond, Watch()])
    finally:
        tf.summary.create_file_writer = original_create
    result = {
        "alerts": {name: [a.to_dict() for a in cb.alerts] for name, cb in
                   (("gradients", gs), ("monitor", monitor), ("beyond", beyond))},
        "monitor_epoch_logs": monitor.epoch_logs,
        "stopped_epoch": monitor.stopped_epoch,
        "readings": monitor.readings,
        "raw_logs": seen["raw_logs"],
        "beyond": [dict(r.metrics) for _, r in beyond.history],
        "noise": gs.last_stats["noise"] if gs.last_stats and gs.last_stats.get("noise") else None,
        "usage_counts": model.user_model.layers[1].usage_counts.numpy().tolist(),
        "pid": os.getpid(),
        "write_warnings": [str(w.message) for w in warned if issubclass(w.category, summary.SummaryWriteWarning)],
        "write_dirs": sorted(seen["write_dirs"]),
        "write_dirs_left": [d for d in seen["write_dirs"] if os.path.exists(d)],
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, default=float)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--disk-full-after", type=int, default=None)
    args = parser.parse_args(argv)
    ports = args.ports.split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": args.index}})
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tensorflow as tf

    # Two workers share two cores with the test: one thread each keeps them from thrashing.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    os.makedirs(args.out, exist_ok=True)
    run(strategy, args.log_dir, args.out, disk_full_after=args.disk_full_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())

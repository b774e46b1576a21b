"""One short fit with every callback under ParameterServerStrategy, and the same fit on one device.

``python tests/ps_run.py --out DIR`` starts an in-process cluster (one worker and one
parameter server as `tf.distribute.Server`s on free 127.0.0.1 ports; the coordinator is
this process), fits the integer-index two-tower model there with GradientStatistics,
OverfittingMonitor and BeyondAccuracy, then fits a copy from the same initial weights
without a strategy, and writes ``DIR/result.json``. The servers cannot be stopped, so
the process ends with ``os._exit`` (tests/test_parameter_server.py bounds it in time).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import socket
import sys

STEPS, EPOCHS, BATCH = 4, 2, 64


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    faulthandler.dump_traceback_later(200, exit=True)  # a hung cluster ends the process with its stacks
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tensorflow as tf

    worker, ps = _free_ports(2)
    spec = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{worker}"], "ps": [f"127.0.0.1:{ps}"]})
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = 4  # fewer and an in-process worker can starve (fit hangs)
    tf.distribute.Server(spec, job_name="worker", task_index=0, protocol="grpc", config=config, start=True)
    tf.distribute.Server(spec, job_name="ps", task_index=0, protocol="grpc", start=True)
    strategy = tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc"))

    import tutorial_models as T
    from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor

    data = T.movielens_like(num_ratings=600)
    case = T.cases(data)["xla_two_tower"]
    probe = {k: v.numpy() for k, v in next(iter(case.validation.batch(32))).items()}
    results = {}
    init = None
    for where in ("ps", "one"):
        tf.keras.backend.clear_session()  # the same layer names (so the same tags) in both runs
        tf.keras.utils.set_random_seed(0)
        scope = strategy.scope() if where == "ps" else tf.distribute.get_strategy().scope()
        with scope:
            model = T.index_two_tower(data.num_users, len(data.movies), jit_compile=False)
            model.user_model(probe["user_index"][:2])
            model.movie_model(probe["movie_index"][:2])
        if init is None:
            init = [v.numpy() for v in model.trainable_variables]
        else:
            for v, w in zip(model.trainable_variables, init):
                v.assign(w)
        log_dir = os.path.join(args.out, where)
        gs = GradientStatistics(log_dir, every_n_steps=1, verbose=0)
        monitor = OverfittingMonitor(log_dir, probe_data=probe, train_probe_data=probe, probe_size=32,
                                     probe_every_n_steps=STEPS, gradient_statistics=gs, verbose=0)
        beyond = BeyondAccuracy(log_dir, case.validation, case.candidates, k=(5,), query_key=case.query_key,
                                item_key=case.item_key, query_features=case.query_features, verbose=0)
        history = model.fit(case.train.batch(BATCH, drop_remainder=True).repeat(), epochs=EPOCHS,
                            steps_per_epoch=STEPS, verbose=0, callbacks=[gs, monitor, beyond])
        results[where] = {
            "loss": [float(x) for x in history.history["loss"]],
            "readings": monitor.readings,
            "beyond": [dict(r.metrics) for _, r in beyond.history],
            "alerts": [[a.kind, a.subject, a.step, a.status] for cb in (gs, monitor, beyond) for a in cb.alerts],
            "last_step": gs.last_stats["step"],
        }
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(results, f, default=float)
    sys.stdout.flush()
    os._exit(0)  # the in-process servers cannot be shut down


if __name__ == "__main__":
    main()

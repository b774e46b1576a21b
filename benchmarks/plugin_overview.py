"""How fast the "Recsys diagnostics" plugin serves a big run, through a real data provider.

Writes a synthetic run of ``--steps`` training steps (default 100k) and ``--variables``
variables (default 50), the way the callbacks write it:

- GradientStatistics at ``--every`` steps (default 10: 10k readings): per layer gradient
  norm (one layer per variable), global norm and noise scale; per variable norm, max
  |g|, zero fraction, weight norm and update ratio every 10 readings;
- ``--evaluations`` evaluations (default 100) of BeyondAccuracy: ~60 scalars, a per-group
  table and a Lorenz curve each; 200 alerts;

then serves it with the plugin's WSGI app on TensorBoard's Python multiplexer
(``--load_fast=false``) and its Rust data server (the default ``--load_fast``), and times
``runs`` and ``overview`` of both runs (what the page requests when it opens): cold (the
first requests of a fresh plugin) and warm (median of ``--repeats``), against the stock
alternative in the same app: TensorBoard's Scalars plugin ``scalars`` route for each tag
the train overview draws (what the Scalars dashboard requests to show those curves).

    flock /tmp/tfrs_diag_bench.lock nice -n 0 .venv/bin/python benchmarks/plugin_overview.py
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import format_table, interleaved_order, log, machine_info, median, ratio, write_json  # noqa: E402


def write_logs(logdir: str, steps: int, variables: int, every: int, evaluations: int) -> int:
    """Writes the synthetic run with TensorBoard's event writer (one event per step); returns values."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.scalar import metadata as scalar_md
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    from tfrs_diag.summary import schema as S

    rng = np.random.default_rng(0)
    scalar_meta = scalar_md.create_summary_metadata(display_name=None, description=None)
    names = [f"tower_{i % 5}/layer_{i}/kernel" for i in range(variables)]
    layers = [n.rsplit("/", 1)[0] for n in names]
    written = 0

    def scalar(tag, value):
        return summary_pb2.Summary.Value(tag=tag, metadata=scalar_meta,
                                         tensor=tensor_util.make_tensor_proto(np.float32(value)))

    def record(tag, rtype, payload):
        body = S.encode_record(rtype, payload)
        return summary_pb2.Summary.Value(tag=tag, metadata=S.record_metadata(rtype),
                                         tensor=tensor_util.make_tensor_proto(body))

    train = EventFileWriter(os.path.join(logdir, "train"))
    for step in range(every, steps + 1, every):
        base = np.exp(-step / steps) * rng.lognormal(0, 0.1, variables)
        if step == steps // 2:
            base[min(7, variables - 1)] = np.nan
        values = [scalar(S.tag("grad", "layer_norm", layer), base[i]) for i, layer in enumerate(layers)]
        values += [scalar(S.tag("grad", "global_norm"), float(np.sqrt(np.nansum(base ** 2)))),
                   scalar(S.tag("grad", "noise_scale"), float(rng.lognormal(5, 0.2)))]
        if step % (every * 10) == 0:
            for i, n in enumerate(names):
                for col, v in (("norm", base[i]), ("max_abs", base[i] / 3), ("zero_fraction", 0.1),
                               ("weight_norm", 10.0), ("update_ratio", 1e-3)):
                    values.append(scalar(S.tag("grad", col, n), v))
        written += len(values)
        train.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary_pb2.Summary(value=values)))
    for j in range(200):
        alert = {"kind": "exploding_gradients", "severity": "warning", "step": (j + 1) * steps // 200, "epoch": j,
                 "subject": names[j % variables], "message": "The gradient norm jumped.", "evidence": {"ratio": 120.0},
                 "status": "firing"}
        train.add_event(event_pb2.Event(step=alert["step"], wall_time=time.time(),
                                        summary=summary_pb2.Summary(value=[record(S.ALERT_TAG, "alert", alert)])))
    train.close()

    val = EventFileWriter(os.path.join(logdir, "validation"))
    ks = (10, 100)
    for e in range(evaluations):
        step = (e + 1) * steps // evaluations
        values = []
        for k in ks:
            for m in ("recall", "ndcg", "mrr", "hit_rate"):
                values.append(scalar(S.tag("rank", f"{m}_at_{k}"), rng.uniform()))
            for m in ("coverage", "gini", "entropy", "entropy_norm", "novelty", "ild", "arp", "aplt"):
                values.append(scalar(S.tag("div", f"{m}_at_{k}"), rng.uniform()))
            for m in ("exposure_gini", "exposure_gap", "pop_rsp", "pop_reo"):
                values.append(scalar(S.tag("fair", f"{m}_at_{k}"), rng.uniform()))
            for g in ("majority", "minority"):
                for m in ("recall", "ndcg"):
                    values.append(scalar(S.tag("fair", "user_group", f"{m}_at_{k}", g), rng.uniform()))
        rows = [{"group": g, "count": 100, **{f"ndcg_at_{k}": float(rng.uniform()) for k in ks}}
                for g in ("majority", "minority")]
        values.append(record(S.tag("fair", "groups"), "group_table",
                             {"epoch": e, "ks": list(ks), "queries": 200, "missing_positives": 0,
                              "user_groups": {"user_group": rows}, "item_groups": []}))
        x = np.linspace(0, 1, 101)
        values.append(record(S.tag("fair", "exposure_lorenz"), "lorenz",
                             {"epoch": e, "curves": [{"k": k, "gini": 0.5, "x": x.tolist(), "y": (x ** 3).tolist()}
                                                     for k in ks]}))
        written += len(values)
        val.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary_pb2.Summary(value=values)))
    val.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--variables", type=int, default=50)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    from werkzeug.test import Client

    from tfrs_diag.views.tensorboard import plugin as P

    results = []
    with tempfile.TemporaryDirectory(prefix="tfrs_diag_plugin_bench_") as logdir:
        log(f"writing {args.steps} steps x {args.variables} variables (every {args.every}) to {logdir}")
        t0 = time.perf_counter()
        values = write_logs(logdir, args.steps, args.variables, args.every, args.evaluations)
        log(f"wrote {values} values in {time.perf_counter() - t0:.1f} s")
        for load_fast in (False, True):
            label = "load_fast=true (Rust data server)" if load_fast else "load_fast=false (Python multiplexer)"
            t0 = time.perf_counter()
            app = make_app(P, logdir, load_fast)
            client = Client(app)
            if load_fast:  # wait until the data server has read everything (asking the stock plugin)
                while True:
                    r = client.get("/data/plugin/scalars/scalars",
                                   query_string={"run": "train", "tag": "tfrs_diag/grad/global_norm"})
                    if r.status_code == 200 and r.json and r.json[-1][1] == args.steps:
                        break
                    time.sleep(0.5)
            load = time.perf_counter() - t0
            log(f"{label}: loaded in {load:.1f} s")

            def request(path, **q):
                t = time.perf_counter()
                r = client.get("/data/plugin/tfrs_diag/" + path, query_string=q)
                assert r.status_code == 200, r.data[:200]
                return time.perf_counter() - t, r

            # Cold: the first requests of a fresh plugin, as when the page opens.
            cold = {}
            for name, path, q in (("runs", "runs", {}), ("overview train", "overview", {"run": "train"}),
                                  ("overview validation", "overview", {"run": "validation"})):
                cold[name], response = request(path, **q)
                if name == "overview train":
                    overview = response.json
            drawn = [f"tfrs_diag/grad/layer_norm/{r}" for r in overview["gradients"]["layer_norm"]["rows"]]
            drawn += list(overview["scalars"])

            def ours():
                sizes = 0
                for path, q in (("runs", {}), ("overview", {"run": "train"}), ("overview", {"run": "validation"})):
                    sizes += len(request(path, **q)[1].data)
                return sizes

            def stock():
                sizes = 0
                for tag in drawn:
                    r = client.get("/data/plugin/scalars/scalars", query_string={"run": "train", "tag": tag})
                    assert r.status_code == 200, r.data[:200]
                    sizes += len(r.data)
                return sizes

            stock_name = f"stock: scalars route x {len(drawn)} tags (train)"
            times: dict[str, list[float]] = {"plugin: runs + overview x 2 runs (warm)": [], stock_name: []}
            sizes = {}
            for rep in range(args.repeats):
                for name in interleaved_order(list(times), rep):
                    fn = ours if name.startswith("plugin") else stock
                    t = time.perf_counter()
                    sizes[name] = fn()
                    times[name].append(time.perf_counter() - t)
            stock_s = median(times[stock_name])
            for name, seconds in cold.items():
                results.append({"loader": label, "what": f"plugin: {name} (cold, first request)", "seconds": seconds,
                                "max_seconds": seconds, "response_kb": float("nan"), "x_stock": ratio(seconds, stock_s)})
            results.append({"loader": label, "what": "plugin: runs + overview x 2 runs (cold)",
                            "seconds": sum(cold.values()), "max_seconds": sum(cold.values()),
                            "response_kb": sizes[list(times)[0]] / 1024, "x_stock": ratio(sum(cold.values()), stock_s)})
            for name in times:
                results.append({"loader": label, "what": name, "seconds": median(times[name]),
                                "max_seconds": max(times[name]), "response_kb": sizes[name] / 1024,
                                "x_stock": ratio(median(times[name]), stock_s)})
            series = overview["scalars"]["tfrs_diag/grad/global_norm"]
            log(f"{label}: overview heatmap {len(drawn) - len(overview['scalars'])} layers x "
                f"{len(overview['gradients']['layer_norm']['bins'])} bins, global norm {len(series)} points, "
                f"alerts {len(overview['alerts'])}")
            app.close()
    rows = [[r["loader"], r["what"], f"{r['seconds']:.3f}", f"{r['max_seconds']:.3f}",
             "" if r["response_kb"] != r["response_kb"] else f"{r['response_kb']:.0f}", f"{r['x_stock']:.2f}"]
            for r in results]
    print(format_table(["loader", "requests", "seconds (median)", "max s", "KB", "x stock"], rows))
    if args.json:
        write_json(args.json, {"machine": machine_info(), "args": vars(args), "results": results})
    return 0


def make_app(P, logdir: str, load_fast: bool):
    """The plugin's WSGI app with TensorBoard's Scalars plugin beside it (the stock alternative)."""
    from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin

    return P.make_wsgi_app(logdir, load_fast=load_fast, extra_plugins=[ScalarsPlugin])


if __name__ == "__main__":
    sys.exit(main())

"""Cost per query of each re-ranking/exploration layer against the bare top-K pass, in one process.

Variants, on the same random query batch and catalog (d = 32, float32, CPU):

- ``bare``: one matmul + `tf.math.top_k(k)` (what `tfrs.layers.factorized_top_k.BruteForce` does);
- ``mmr``, ``mmr_category``, ``dpp``, ``calibrated``, ``epsilon``, ``boltzmann``: the same
  matmul, then the layer picks k from the **whole catalog** as its pool (the worst case:
  serving re-ranks a retrieved pool of a few hundred), with the pool's embeddings, groups
  and tail mask gathered per query as `ReRankedTopK` does.

Each variant is one `tf.function`, traced and warmed before timing; variants run
interleaved (ABC, CBA, ...) and the median per query is reported with its ratio to
``bare`` of the same (catalog, k).

Usage::

    python benchmarks/rerank.py [--repeats N] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DIM = 32
#: Queries per timed call: fewer on the large catalog, where one call holds [B, N, d] embeddings.
BATCH = {1_000: 64, 100_000: 4}


def variants(tf, cand, groups, is_tail, k):
    from tfrs_diag.layers import DPP, MMR, Boltzmann, Calibrated, EpsilonGreedy

    layers = {"mmr": MMR(0.5, k=k), "mmr_category": MMR(0.5, k=k, similarity="category"), "dpp": DPP(0.5, k=k),
              "calibrated": Calibrated([0.25] * 4, 0.5, k=k), "epsilon": EpsilonGreedy(0.2, k=k),
              "boltzmann": Boltzmann(0.5, k=k)}

    @tf.function
    def bare(q):
        return tf.math.top_k(tf.matmul(q, cand, transpose_b=True), k=k).indices

    def make(layer):
        @tf.function
        def run(q):
            scores = tf.matmul(q, cand, transpose_b=True)
            b = tf.shape(q)[0]
            inputs = {"scores": scores}
            if "embeddings" in layer.requires:
                inputs["embeddings"] = tf.broadcast_to(cand[None], [b, *cand.shape])
            if "groups" in layer.requires:
                inputs["groups"] = tf.broadcast_to(groups[None], tf.shape(scores))
            if "is_tail" in layer.requires:
                inputs["is_tail"] = tf.broadcast_to(is_tail[None], tf.shape(scores))
            return layer(inputs, k=k)
        return run

    return {"bare": bare, **{name: make(layer) for name, layer in layers.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1k candidates only, 2 repeats")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import tensorflow as tf

    rng = np.random.default_rng(0)
    catalogs = (1_000,) if args.quick else (1_000, 100_000)
    repeats = 2 if args.quick else args.repeats
    rows, results = [], []
    for n in catalogs:
        cand = tf.constant(rng.normal(size=(n, DIM)).astype(np.float32))
        groups = tf.constant(rng.integers(0, 4, size=n).astype(np.int32))
        is_tail = tf.constant(rng.uniform(size=n) < 0.6)
        q = tf.constant(rng.normal(size=(BATCH[n], DIM)).astype(np.float32))
        for k in (10, 100):
            fns = variants(tf, cand, groups, is_tail, k)
            for fn in fns.values():  # trace and warm
                fn(q).numpy()
            times: dict[str, list[float]] = {name: [] for name in fns}
            for r in range(repeats):
                for name in C.interleaved_order(list(fns), r):
                    with C.Stopwatch() as sw:
                        fns[name](q).numpy()
                    times[name].append(sw.wall / BATCH[n])
            base = C.median(times["bare"])
            for name, ts in times.items():
                per_query = C.median(ts)
                rows.append([f"{n:,}", k, name, C.fmt(per_query * 1e3, 3), C.fmt(C.ratio(per_query, base), 1)])
                results.append({"candidates": n, "k": k, "variant": name, "ms_per_query": per_query * 1e3,
                                "ratio_to_bare": C.ratio(per_query, base), "spread": C.spread(ts)})
            C.log(f"done: {n} candidates, k={k}")
    print(C.format_table(["candidates", "k", "variant", "ms/query", "x bare"], rows))
    if args.json:
        C.write_json(args.json, {"machine": C.machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost of the one-pass top-K evaluation against the stock alternatives, in one process.

Variants, on the same model and data:

- ``factorized_topk``: `tfrs.metrics.FactorizedTopK` as the task's metric, `model.evaluate`
  over the test rows (one query per interaction, as TFRS evaluates);
- ``bare_rows`` / ``bare_users``: the floor, one matmul + `tf.math.top_k` per query batch
  against candidate embeddings computed once, over the test rows / the distinct users;
- ``ours_rows``: `tfrs_diag.TopKEvaluator` with every metric family (accuracy at every K,
  diversity incl. ILD, popularity bias, exposure per item group, per-user-group accuracy)
  on the same queries as ``factorized_topk``;
- ``ours_users``: the same with one query per user (the definition of the metrics);
- ``export_numpy``: the bare pass over users exporting top-K ids, then the same metrics in
  numpy afterwards.

Bars (docs/design.md section 7): ours at most 0.5x ``factorized_topk`` and at most 1.5x the bare
pass on the same queries.

Usage::

    python benchmarks/topk_eval.py [--workload movielens|synthetic100k|all] [--repeats N] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

KS = (10, 100)
BATCH = 1024


def _tf():
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------- workloads


def movielens_workload(data_dir: str):
    from tfrs_diag import datasets, models

    tf = _tf()
    data = datasets.movielens_100k(data_dir)
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=32)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    C.log("training the MovieLens two-tower model for 2 epochs")
    model.fit(models.retrieval_dataset(data.train, 8192), epochs=2, verbose=0)
    return data, model, "user_id", "item_id"


def synthetic_workload(num_items: int = 100_000, num_users: int = 5_000, rows: int = 20_000):
    """Random-init int-id two-tower over a catalog of ``num_items`` with Zipf test rows."""
    from tfrs_diag import models
    from tfrs_diag.datasets import RecDataset, head_tail_split

    tf = _tf()
    rng = np.random.default_rng(0)
    ranks = rng.permutation(num_items)
    weights = 1.0 / (ranks + 1.0)
    weights /= weights.sum()
    train_items = rng.choice(num_items, size=5 * rows, p=weights)
    counts = np.bincount(train_items, minlength=num_items).astype(np.float64)
    phi = counts / counts.sum()
    test = {"user_index": rng.integers(0, num_users, rows).astype(np.int32),
            "item_index": rng.choice(num_items, size=rows, p=weights).astype(np.int32)}
    test["user_group"] = (test["user_index"] % 3 == 0).astype(np.int32)
    users = {"user_id": np.arange(num_users).astype(str), "user_index": np.arange(num_users, dtype=np.int32),
             "user_group": (np.arange(num_users) % 3 == 0).astype(np.int32)}
    items = {"item_id": np.arange(num_items).astype(str), "item_index": np.arange(num_items, dtype=np.int32),
             "item_category": (np.arange(num_items) % 8).astype(np.int32)}
    test_full = {**test, "user_id": test["user_index"].astype(str), "item_id": test["item_index"].astype(str),
                 "rating": np.ones(rows, np.float32), "item_category": items["item_category"][test["item_index"]]}
    data = RecDataset(train={k: v[:1] for k, v in test_full.items()}, test=test_full, users=users, items=items,
                      item_popularity=phi, item_is_head=head_tail_split(counts), user_group_names=("a", "b"),
                      item_group_names=tuple(f"c{i}" for i in range(8)), name=f"synthetic{num_items}")
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(num_users=num_users, num_items=num_items, embedding_dim=32)
    model.user_model(tf.constant([0]))
    model.item_model(tf.constant([0]))
    return data, model, "user_index", "item_index"


# ---------------------------------------------------------------- variants


def make_factorized_topk(data, model, qk, ik):
    import tensorflow_recommenders as tfrs

    tf = _tf()
    cand_ids = data.items[ik]
    candidates = tf.data.Dataset.from_tensor_slices(cand_ids).batch(BATCH).map(lambda x: (x, model.item_model(x)))
    metric = tfrs.metrics.FactorizedTopK(candidates, ks=KS)

    class Eval(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.task = tfrs.tasks.Retrieval(metrics=metric)

        def compute_loss(self, f, training=False):
            return self.task(model.user_model(f[qk]), model.item_model(f[ik]), candidate_ids=f[ik])

    evaluator = Eval()
    evaluator.compile()
    ds = tf.data.Dataset.from_tensor_slices({qk: data.test[qk], ik: data.test[ik]}).batch(BATCH).cache()

    def run():
        return evaluator.evaluate(ds, return_dict=True, verbose=0)

    return run


def make_bare(data, model, qk, ik, queries: np.ndarray, export: bool = False):
    tf = _tf()

    @tf.function(reduce_retracing=True)
    def step(q, cand):
        return tf.math.top_k(tf.matmul(model.user_model(q), cand, transpose_b=True), k=max(KS)).indices

    def run():
        cand = tf.concat([model.item_model(tf.constant(data.items[ik][i:i + 8192]))
                          for i in range(0, len(data.items[ik]), 8192)], 0)
        out = []
        for lo in range(0, len(queries), BATCH):
            top = step(tf.constant(queries[lo:lo + BATCH]), cand)
            if export:
                out.append(top.numpy())
        return np.concatenate(out) if export else None

    return run


def numpy_metrics(top: np.ndarray, positives: list[np.ndarray], groups: np.ndarray, phi: np.ndarray,
                  tail: np.ndarray, item_groups: np.ndarray, n_groups: int) -> dict:
    """The same metrics from exported top-K ids, vectorised numpy."""
    n_items = len(phi)
    width = max(1, max(len(p) for p in positives))
    pos = np.full((len(positives), width), -1)
    for i, p in enumerate(positives):
        pos[i, : len(p)] = p
    n_rel = (pos >= 0).sum(1)
    hits = (top[:, :, None] == np.where(pos >= 0, pos, -9)[:, None, :]).any(2).astype(float)
    disc = 1.0 / np.log2(np.arange(2, max(KS) + 2))
    info = -np.log2(np.where(phi > 0, phi, phi[phi > 0].min()))
    out = {}
    for k in KS:
        h = hits[:, :k]
        idcg = np.cumsum(disc[:k])[np.minimum(np.maximum(n_rel, 1), k) - 1]
        out[f"recall_at_{k}"] = np.mean(h.sum(1) / np.maximum(n_rel, 1))
        out[f"ndcg_at_{k}"] = np.mean((h * disc[:k]).sum(1) / idcg)
        first = np.where(h.any(1), h.argmax(1) + 1, np.inf)
        out[f"mrr_at_{k}"] = np.mean(1.0 / first)
        counts = np.bincount(top[:, :k].ravel(), minlength=n_items).astype(float)
        c = np.sort(counts)
        j = np.arange(1, n_items + 1)
        out[f"gini_at_{k}"] = ((2 * j - n_items - 1) * c).sum() / (n_items * c.sum())
        p = counts[counts > 0] / counts.sum()
        out[f"entropy_at_{k}"] = -(p * np.log2(p)).sum()
        out[f"coverage_at_{k}"] = (counts > 0).mean()
        out[f"novelty_at_{k}"] = info[top[:, :k]].mean()
        out[f"arp_at_{k}"] = phi[top[:, :k]].mean(1).mean()
        out[f"aplt_at_{k}"] = tail[top[:, :k]].mean(1).mean()
        exp = np.bincount(top[:, :k].ravel(), weights=np.tile(disc[:k], len(top)), minlength=n_items)
        out[f"exposure_share_at_{k}"] = np.bincount(item_groups, weights=exp) / exp.sum()
        per_query = (h * disc[:k]).sum(1) / idcg
        out[f"ndcg_at_{k}_by_group"] = np.bincount(groups, weights=per_query, minlength=n_groups) / np.maximum(
            np.bincount(groups, minlength=n_groups), 1)
    return out


def make_export_numpy(data, model, qk, ik, evaluator):
    bare = make_bare(data, model, qk, ik, evaluator.queries(model).features[qk], export=True)
    q = evaluator.queries(model)
    positives = [row[row >= 0] for row in q.positives]
    groups = q.groups["user_group"]
    tail = ~np.asarray(data.item_is_head)
    item_groups = np.asarray(data.items["item_category"]).astype(np.int64)
    item_groups = np.unique(item_groups, return_inverse=True)[1]

    def run():
        top = bare()
        return numpy_metrics(top, positives, groups, data.item_popularity, tail, item_groups, groups.max() + 1)

    return run


def make_ours(data, model, qk, ik, per_row: bool):
    import tfrs_diag

    tf = _tf()
    test = data.test
    query_model = model
    if per_row:
        # Each test row its own query, as FactorizedTopK evaluates: the query key is the row.
        rows = np.arange(len(test[qk])).astype(np.int64)
        user_of_row = tf.constant(test[qk])
        test = {**test, "row": rows}

        class RowQueries:
            item_model = model.item_model

            @staticmethod
            def user_model(r):
                return model.user_model(tf.gather(user_of_row, r))

        query_model, qk_eval = RowQueries(), "row"
    else:
        qk_eval = qk
    evaluator = tfrs_diag.TopKEvaluator(
        data.items[ik], test, KS, query_key=qk_eval, item_key=ik, user_group_keys=("user_group",),
        item_groups=data.items["item_category"], item_popularity=data.item_popularity,
        item_is_head=data.item_is_head, batch_size=BATCH)

    def run():
        return evaluator.run(query_model)

    return run, evaluator


# ---------------------------------------------------------------- driver


def bench(name, data, model, qk, ik, repeats: int, min_seconds: float = 0.3) -> list[dict]:
    users = np.unique(data.test[qk])
    ours_users, evaluator = make_ours(data, model, qk, ik, per_row=False)
    ours_rows, _ = make_ours(data, model, qk, ik, per_row=True)
    variants = {
        "factorized_topk": make_factorized_topk(data, model, qk, ik),
        "bare_rows": make_bare(data, model, qk, ik, data.test[qk]),
        "ours_rows": ours_rows,
        "bare_users": make_bare(data, model, qk, ik, users),
        "ours_users": ours_users,
        "export_numpy": make_export_numpy(data, model, qk, ik, evaluator),
    }
    C.log(f"{name}: warming up (tracing) {len(variants)} variants")
    calls = {}
    for key, v in variants.items():
        v()
        with C.Stopwatch() as sw:
            v()
        # Fast variants are timed over several calls per measurement (as timeit does):
        # single calls of ~20 ms are at the mercy of the scheduler.
        calls[key] = max(1, math.ceil(min_seconds / max(sw.wall, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for key in C.interleaved_order(list(variants), r):
            with C.Stopwatch() as sw:
                for _ in range(calls[key]):
                    variants[key]()
            times[key].append(sw.wall / calls[key])
        C.log(f"{name}: repeat {r + 1}/{repeats} done")
    med = {k: C.median(v) for k, v in times.items()}
    rows = []
    for key in variants:
        queries = len(data.test[qk]) if key.endswith("rows") or key == "factorized_topk" else len(users)
        rows.append({"workload": name, "variant": key, "queries": queries, "seconds": med[key], "calls": calls[key],
                     "spread": C.spread(times[key]),
                     "vs_factorized_topk": C.ratio(med[key], med["factorized_topk"]),
                     "vs_bare_same_queries": C.ratio(med[key], med["bare_rows" if queries == len(data.test[qk])
                                                                  else "bare_users"])})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("movielens", "synthetic100k", "all"), default="all")
    parser.add_argument("--data-dir", default=os.environ.get("TFRS_DIAG_MOVIELENS_DIR",
                                                             str(C.REPO_ROOT.parent / "shared/data/movielens-100k")))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-items", type=int, default=100_000)
    parser.add_argument("--min-seconds", type=float, default=0.3,
                        help="time fast variants over enough calls to last this long per measurement")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    if args.workload in ("movielens", "all"):
        if (Path(args.data_dir) / "u.data").exists():
            rows += bench("movielens100k", *movielens_workload(args.data_dir), repeats=args.repeats,
                          min_seconds=args.min_seconds)
        else:
            C.log(f"skipping MovieLens: no u.data in {args.data_dir}")
    if args.workload in ("synthetic100k", "all"):
        rows += bench(f"synthetic{args.num_items // 1000}k", *synthetic_workload(args.num_items),
                      repeats=args.repeats, min_seconds=args.min_seconds)
    print(C.format_table(
        ["workload", "variant", "queries", "calls", "seconds (median)", "spread", "x FactorizedTopK",
         "x bare (same queries)"],
        [[r["workload"], r["variant"], r["queries"], r["calls"], C.fmt(r["seconds"], 4), C.fmt(r["spread"], 2),
          C.fmt(r["vs_factorized_topk"], 3), C.fmt(r["vs_bare_same_queries"], 2)] for r in rows]))
    if args.json:
        C.write_json(args.json, {"machine": C.machine_info(), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

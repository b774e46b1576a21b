"""Explanations per second: exact `Shapley` vs `shap.KernelExplainer`, plus IG and memory.

Workload: a small MovieLens-100k ranking model (`tfrs_diag.models.RankingModel`, 8
feature groups: user_id, item_id, user_gender, user_occupation (strings), user_age_bucket,
item_category, item_year, weekday (integers); embedding 16, MLP 64-32-1), trained one
epoch. 50 background rows from train, examples from test.

Variants, timed in one process, interleaved (ABC, CBA, ...), medians reported:

- ``shap_kernel_predict``: `shap.KernelExplainer` (nsamples=256: with 8 groups it evaluates
  every coalition, so it is exact) on a numpy wrapper calling ``model.predict`` (the
  wrapper TFRS users write, and the anchor of docs/design.md: about 5.7 explanations/s);
- ``shap_kernel``: the same with a faster wrapper, `tfrs_diag.explain.FeatureCodec`
  (``model.predict_on_batch``: no per-call tf.data pipeline);
- ``prototype``: all 2^8 coalitions x 50 background rows formed in embedding space, the
  whole MLP run on each, one example per call (the issue's plain prototype);
- ``coalitions_linear``: the same batched over examples, with the first Dense layer's
  per-group products formed once per example and background row;
- ``shapley``: `tfrs_diag.explain.Shapley` as shipped: additionally, each (example,
  background row) game is played only over the groups where the two differ (a group with
  the same id in both is a dummy player), batched by the number of such groups;
- ``integrated_gradients``: 32 Gauss-Legendre steps over the same 50 background rows.

Bar (docs/design.md section 7): ``shapley`` at least 100x the explanations per second of
``shap_kernel_predict`` (the anchor); the ratio to ``shap_kernel`` is printed too. The agreement of ``shapley`` with ``shap_kernel`` (max |difference|) is
printed too: the ratio compares the same numbers.

Memory: peak RSS of `Shapley` with 50 and with 5000 background rows (chunked calls keep it
bounded by ``max_batch_rows``).

Usage::

    python benchmarks/explainer.py [--data-dir DIR] [--repeats N] [--json out.json]
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

STRING_FEATURES = ("user_id", "item_id", "user_gender", "user_occupation")
INT_FEATURES = ("user_age_bucket", "item_category", "item_year", "weekday")


def _with_weekday(split):
    out = dict(split)
    out["weekday"] = ((np.asarray(split["timestamp"]) // 86400) % 7).astype(np.int32)
    return out


def workload(data_dir: str):
    from tfrs_diag import datasets, models
    from tfrs_diag._keras import tf

    data = datasets.movielens_100k(data_dir)
    train, test = _with_weekday(data.train), _with_weekday(data.test)
    tf.keras.utils.set_random_seed(0)
    model = models.RankingModel(train, string_features=STRING_FEATURES, int_features=INT_FEATURES,
                                embedding_dim=16, hidden=(64, 32))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    C.log("training the 8-group MovieLens ranking model for 1 epoch")
    model.fit(models.ranking_dataset(train, model.feature_names, 1024), epochs=1, verbose=0)
    return model, train, test


def take(d, lo, hi):
    return {k: v[lo:hi] for k, v in d.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TFRS_DIAG_MOVIELENS_DIR",
                                                             str(C.REPO_ROOT.parent / "shared/data/movielens-100k")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shap-examples", type=int, default=8, help="examples per shap_kernel timing")
    parser.add_argument("--examples", type=int, default=256, help="examples per timing of our variants")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import shap

    from tfrs_diag.explain import FeatureCodec, IntegratedGradients, RankingAdapter, Shapley
    from tfrs_diag.explain.shapley import all_coalitions, shapley_weights

    model, train, test = workload(args.data_dir)
    rng = np.random.default_rng(0)
    background = take(train, 0, 50)
    idx = rng.choice(len(test["rating"]), size=args.examples, replace=False)
    examples = {k: v[idx] for k, v in test.items()}
    names = model.feature_names

    codec = FeatureCodec(model, names, background, examples)
    kernel = shap.KernelExplainer(codec.predict, codec.encode(background))

    class PredictWrapper:  # what tutorials write: model.predict on the decoded feature dict
        def predict_on_batch(self, features):
            return model.predict(features, batch_size=1024, verbose=0)

    slow_codec = FeatureCodec(PredictWrapper(), names, background, examples)
    slow_kernel = shap.KernelExplainer(slow_codec.predict, slow_codec.encode(background))
    ours = Shapley(model, background, mode="exact")
    plain = Shapley(RankingAdapter(model, linear_scorer=False), background, mode="exact")
    masks = all_coalitions(len(names))
    weights = shapley_weights(masks)
    ig = IntegratedGradients(model, background, steps=32)

    def run_shap(explainer=kernel, c=codec):
        sub = take(examples, 0, args.shap_examples)
        return args.shap_examples, np.asarray(explainer.shap_values(c.encode(sub), nsamples=256, l1_reg=False,
                                                                    silent=True))

    def run_prototype():
        n = min(32, args.examples)
        for i in range(n):
            plain.coalition_values(plain.space.embed(take(examples, i, i + 1)), masks) @ weights
        return n, None

    def run_coalitions_linear():
        return args.examples, ours.coalition_values(ours.space.embed(examples), masks) @ weights

    def run_ours():
        return args.examples, ours.attribute(examples).values

    def run_ig():
        return args.examples, ig.attribute(examples)

    variants = {"shap_kernel_predict": lambda: run_shap(slow_kernel, slow_codec), "shap_kernel": run_shap,
                "prototype": run_prototype, "coalitions_linear": run_coalitions_linear, "shapley": run_ours,
                "integrated_gradients": run_ig}
    C.log("warm-up (tracing)")
    results = {name: fn() for name, fn in variants.items()}
    agree = float(np.abs(results["shapley"][1][:args.shap_examples] - results["shap_kernel"][1]).max())
    agree_linear = float(np.abs(results["shapley"][1] - results["coalitions_linear"][1]).max())
    ig_delta = float(results["integrated_gradients"][1].delta.max())
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in C.interleaved_order(list(variants), r):
            with C.Stopwatch() as sw:
                n, _ = variants[name]()
            rates[name].append(n / sw.wall)
            C.log(f"repeat {r + 1}/{args.repeats} {name}: {n / sw.wall:.1f} explanations/s")
    med = {name: C.median(v) for name, v in rates.items()}

    C.log("memory: 50 vs 5000 background rows")
    mem = {}
    for m in (50, 5000):
        explainer = Shapley(model, take(train, 0, m), mode="exact")
        explainer.attribute(take(examples, 0, 2))
        C.reset_peak_rss()
        before = C.current_rss_mb()
        explainer.attribute(take(examples, 0, 16))
        mem[m] = C.peak_rss_mb() - before

    anchor, fast = med["shap_kernel_predict"], med["shap_kernel"]
    rows = [[name, C.fmt(med[name], 1), C.fmt(C.spread(rates[name]), 2), C.fmt(C.ratio(med[name], anchor), 1, "x"),
             C.fmt(C.ratio(med[name], fast), 1, "x")] for name in variants]
    print(C.format_table(["variant", "explanations/s (median)", "spread", "vs shap_kernel_predict",
                          "vs shap_kernel"], rows))
    print(f"\nmax |shapley - shap_kernel| over {args.shap_examples} examples: {agree:.2e}; "
          f"max |shapley - coalitions_linear| over {args.examples}: {agree_linear:.2e}")
    print(f"integrated_gradients (32 Gauss-Legendre steps) max completeness delta: {ig_delta:.2e}")
    print(f"peak RSS growth during attribute(16 examples): 50 background rows {mem[50]:.0f} MB, "
          f"5000 background rows {mem[5000]:.0f} MB")
    ok = C.ratio(med["shapley"], anchor) >= 100
    print(f"bar (>= 100x shap_kernel_predict): {'MET' if ok else 'NOT MET'} ({C.ratio(med['shapley'], anchor):.0f}x; "
          f"{C.ratio(med['shapley'], fast):.0f}x shap_kernel)")
    if args.json:
        C.write_json(args.json, {"rates": rates, "median": med, "agreement": agree, "agreement_linear": agree_linear, "ig_delta": ig_delta,
                                 "memory_mb": mem, "machine": C.machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

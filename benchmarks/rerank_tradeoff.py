"""The accuracy/diversity trade-off of each re-ranker's knob on the demo model (docs/explore_exploit.md).

Trains the `tfrs-diag demo` retrieval model (`recipes.train_retrieval`, the synthetic data
of 40000 interactions unless ``--data-dir`` names MovieLens-100k), then runs
`tfrs_diag.evaluate(..., reranker=..., sweep=...)` for every layer on the test split and
prints one table per layer (K = 10, pool = the 100 best candidates).

Usage::

    python benchmarks/rerank_tradeoff.py [--data-dir DIR] [--epochs N] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SWEEPS = {"MMR (lambda)": ("mmr", [1.0, 0.9, 0.7, 0.5, 0.3]),
          "MMR on categories (lambda)": ("mmr_category", [1.0, 0.9, 0.7, 0.5]),
          "DPP (theta)": ("dpp", [0.99, 0.9, 0.7, 0.5]),
          "Calibrated, equal category shares (lambda)": ("calibrated", [0.0, 0.05, 0.2, 0.5]),
          "EpsilonGreedy (epsilon)": ("epsilon", [0.0, 0.1, 0.2, 0.4]),
          "Boltzmann (temperature)": ("boltzmann", [0.05, 0.2, 0.5, 1.0])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import tfrs_diag
    from tfrs_diag import recipes
    from tfrs_diag.evaluation.tradeoff import format_trade_off
    from tfrs_diag.layers import DPP, MMR, Boltzmann, Calibrated, EpsilonGreedy

    data = recipes.load_data(args.data_dir)
    with tempfile.TemporaryDirectory() as logdir:
        model = recipes.train_retrieval(data, logdir, epochs=args.epochs, verbose=0, beyond_accuracy=False,
                                        overfitting=False).model
    C.log("trained")
    groups = np.asarray(data.items["item_category"])
    num_groups = len(np.unique(groups))
    layers = {"mmr": MMR(), "mmr_category": MMR(similarity="category"), "dpp": DPP(),
              "calibrated": Calibrated([1.0] * num_groups), "epsilon": EpsilonGreedy(seed=0),
              "boltzmann": Boltzmann(seed=0)}
    common = dict(k=10, query_key="user_id", item_key="item_id", item_groups=groups,
                  item_popularity=data.item_popularity, rerank_pool=100, verbose=0)
    out = {}
    for title, (key, values) in SWEEPS.items():
        rows = tfrs_diag.evaluate(model, data.items["item_id"], data.test, reranker=layers[key], sweep=values,
                                  **common).trade_off
        out[key] = rows
        print(f"\n{title}")
        print("\n".join(format_trade_off(rows, 10)))
        C.log(f"swept {key}")
    if args.json:
        C.write_json(args.json, {"machine": C.machine_info(), "data": data.describe(), "sweeps": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

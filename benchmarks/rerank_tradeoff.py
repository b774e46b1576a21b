"""The accuracy/diversity trade-off of each re-ranker's knob on the demo model (docs/explore_exploit.md).

Trains the `tfrs-diag demo` retrieval model (`recipes.train_retrieval`, the synthetic data
of 40000 interactions unless ``--data-dir`` names MovieLens-100k), then runs
`tfrs_diag.evaluate(..., reranker=..., sweep=...)` for every layer on the test split and
prints one table per layer (K = 10, pool = the 100 best candidates).

Usage::

    python benchmarks/rerank_tradeoff.py [--data-dir DIR] [--epochs N] [--json out.json] [--svg out.svg]

``--svg`` writes the trade-off curves (NDCG@10 against coverage@10, one line per layer,
each point labelled with its knob value) as a plain SVG file: docs/images/tradeoff_demo.svg
is made by ``--svg docs/images/tradeoff_demo.svg``.
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
    parser.add_argument("--svg", default=None, help="write the NDCG@10 / coverage@10 curves here")
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
    if args.svg:
        Path(args.svg).write_text(trade_off_svg({title: out[key] for title, (key, _) in SWEEPS.items()}))
        C.log(f"wrote {args.svg}")
    return 0


def trade_off_svg(curves: dict, x: str = "coverage_at_10", y: str = "ndcg_at_10", width: int = 760,
                  height: int = 420) -> str:
    """Each sweep as a line of (x, y) points labelled with the knob's value, as an SVG document."""
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    pts = [(r[x], r[y]) for rows in curves.values() for r in rows]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    dx, dy = (x1 - x0) * 0.08 or 0.05, (y1 - y0) * 0.08 or 0.005
    x0, x1, y0, y1 = x0 - dx, x1 + dx, y0 - dy, y1 + dy
    m = {"l": 60, "r": 270, "t": 30, "b": 45}
    pw, ph = width - m["l"] - m["r"], height - m["t"] - m["b"]

    def X(v):
        return m["l"] + (v - x0) / (x1 - x0) * pw

    def Y(v):
        return m["t"] + ph - (v - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<rect x="{m["l"]}" y="{m["t"]}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
           f'<text x="{m["l"]}" y="18" font-size="13">The demo model: NDCG@10 against coverage@10 per '
           'knob value</text>',
           f'<text x="{m["l"] + pw}" y="{height - 8}" text-anchor="end">coverage@10 (share of the catalog '
           'recommended) &#8594;</text>',
           f'<text x="14" y="{m["t"] + ph / 2}" transform="rotate(-90 14 {m["t"] + ph / 2})" '
           'text-anchor="middle">NDCG@10 &#8594;</text>']
    for i in range(5):
        vx, vy = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{X(vx):.1f}" y="{m["t"] + ph + 14}" text-anchor="middle">{vx:.3g}</text>')
        out.append(f'<text x="{m["l"] - 4}" y="{Y(vy) + 3:.1f}" text-anchor="end">{vy:.3g}</text>')
        out.append(f'<line x1="{m["l"]}" x2="{m["l"] + pw}" y1="{Y(vy):.1f}" y2="{Y(vy):.1f}" stroke="#eee"/>')
    for j, (title, rows) in enumerate(curves.items()):
        c = colors[j % len(colors)]
        line = " ".join(f"{X(r[x]):.1f},{Y(r[y]):.1f}" for r in rows)
        out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        for r in rows:
            out.append(f'<circle cx="{X(r[x]):.1f}" cy="{Y(r[y]):.1f}" r="3" fill="{c}"/>')
            out.append(f'<text x="{X(r[x]) + 4:.1f}" y="{Y(r[y]) - 4:.1f}" fill="{c}" font-size="9">'
                       f'{r["value"]:g}</text>')
        ly = m["t"] + 14 + 16 * j
        label = title.replace("&", "&amp;")
        out.append(f'<rect x="{m["l"] + pw + 12}" y="{ly - 8}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{m["l"] + pw + 26}" y="{ly + 1}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

"""The text of tfrs_diag's findings: ``tfrs-diag report LOGDIR`` and what ``demo`` and ``explain`` print.

``report LOGDIR`` shows the plugin's alerts and tables as text, for servers without a
browser and CI logs:

>>> from tfrs_diag.views import report

Not run here: these lines train a model or read a training run's log directory (tests/test_cli_examples.py runs them).
>>> lines, alerts = report.report_lines("logs")  # doctest: +SKIP
>>> print("\\n".join(lines))                      # doctest: +SKIP

It reads every run (a directory holding event files) under LOGDIR with
`tfrs_diag.summary.events.read_run` and prints, per run: its alerts (one line each,
`tfrs_diag.summary.schema.format_alert`), the latest per-user-group table with the gap,
item-group exposure and the exposure Gini, the latest diversity/accuracy/overfitting
values, the gradient table, and the latest attribution table of the explainer; then,
once, the event files (or parts of them) that could not be read.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

from tfrs_diag.summary import events, schema
from tfrs_diag.summary.alerts import active_alerts
from tfrs_diag.recipes import TOP_K

# ---------------------------------------------------------------- text helpers


def latest(series: Sequence[tuple[int, float]]) -> tuple[int, float]:
    """The ``(step, value)`` of the largest step.

    >>> latest([(5, 1.0), (9, 0.5), (7, 2.0)])
    (9, 0.5)
    """
    return max(series, key=lambda sv: sv[0])


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Lines of a table: the first column left-aligned, the others right-aligned.

    >>> print("\\n".join(text_table(["name", "value"], [["a", "1"], ["bb", "22"]], indent="")))
    name  value
    a         1
    bb       22
    """
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return indent + "  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                                  for j, (c, w) in enumerate(zip(cells, widths)))

    return [line(headers)] + [line(r) for r in rows]


def format_number(x: float) -> str:
    """Three significant digits, or scientific notation for very small and large values.

    >>> format_number(0.123456), format_number(12345.0), format_number(float("nan"))
    ('0.123', '1.23e+04', 'nan')
    """
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-2 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


# ---------------------------------------------------------------- per diagnostic


def gradient_report(run, table_rows: dict[str, int] | None = None) -> list[str]:
    """Text tables of one run's gradient diagnostics, from its event files.

    ``run`` is a `tfrs_diag.summary.events.RunData` (``read_run(<log_dir>/train)``);
    ``table_rows`` optionally maps embedding variables to their row counts.
    """
    prefix_layer, prefix_ratio, prefix_weight = (
        schema.TAGS["grad_layer_norm"], schema.TAGS["grad_update_ratio"], schema.TAGS["grad_weight_norm"])
    layers = {t[len(prefix_layer):]: s for t, s in run.scalars.items() if t.startswith(prefix_layer)}
    if not layers:
        return ["Gradient health: no gradient statistics in this run (fewer steps than every_n_steps?)"]
    step = max(latest(s)[0] for s in layers.values())
    # A layer's update/weight ratio: ||dW|| / ||W|| over its variables (one for embeddings).
    ratios: dict[str, list[tuple[float, float]]] = {}
    for t, s in run.scalars.items():
        if t.startswith(prefix_ratio):
            var = t[len(prefix_ratio):]
            weight = run.scalars.get(prefix_weight + var)
            w = latest(weight)[1] if weight else 1.0
            ratios.setdefault(var.rsplit("/", 1)[0], []).append((latest(s)[1], w))
    rows = []
    for layer, series in sorted(layers.items()):
        parts = ratios.get(layer, [])
        ratio = (math.sqrt(sum((r * w) ** 2 for r, w in parts) / max(sum(w * w for _, w in parts), 1e-300))
                 if parts else float("nan"))
        rows.append((layer, format_number(latest(series)[1]), format_number(ratio) if parts else "-"))
    global_norm = run.scalars.get(schema.TAGS["grad_global_norm"])
    if global_norm:
        rows.append(("(all layers: global norm)", format_number(latest(global_norm)[1]), ""))
    lines = [f"Gradient health per layer (reading of step {step}):"]
    lines += text_table(("layer", "grad norm", "update/weight"), rows)
    lines.append("  update/weight = ||w_after - w_before|| / ||w_before|| of one step (embeddings: rows it touched)")

    prefix_rows = schema.TAGS["embed_unique_rows"]
    tables = sorted(t[len(prefix_rows):] for t in run.scalars if t.startswith(prefix_rows))
    if tables:
        rows = []
        for var in tables:
            def last(c):
                s = run.scalars.get(schema.TAGS[f"embed_{c}"] + var)
                return latest(s)[1] if s else float("nan")

            unique, lookups = last("unique_rows"), last("batch_rows")
            mean_unique = sum(v for _, v in run.scalars[prefix_rows + var]) / len(run.scalars[prefix_rows + var])
            size = (table_rows or {}).get(var)
            rows.append((var, f"{unique:.0f}" + (f" ({unique / size:.0%})" if size else ""),
                         f"{mean_unique:.0f}", f"{lookups:.0f}", format_number(last("row_grad_norm_mean")),
                         format_number(last("row_grad_norm_max")), format_number(last("row_update_ratio"))))
        lines += ["", f"Embedding tables (reading of step {step}; rows = unique rows the step touched):"]
        lines += text_table(("table", "rows", "rows (run mean)", "lookups", "mean row grad",
                         "max row grad", "update/weight"), rows)
    return lines


def overfitting_report(monitor) -> list[str]:
    """A few lines on the in-epoch probes and the best epoch of an `OverfittingMonitor`."""
    if monitor is None or not monitor.readings:
        return ["Overfitting monitor: no probe readings"]
    scale = monitor.probe_scale
    first, last = monitor.readings[0], monitor.readings[-1]

    def per_example(r, key):
        return None if r[key] is None else r[key] / scale

    n = monitor.probes.size
    if first["seen"] is None:
        lines = [f"held-out probe loss per example (mean over {n} examples): {per_example(first, 'heldout'):.4g} "
                 f"before training, {per_example(last, 'heldout'):.4g} at step {last['step']}"]
    else:
        h0, s0, h1, s1 = (per_example(first, "heldout"), per_example(first, "seen"), per_example(last, "heldout"),
                          per_example(last, "seen"))
        lines = [f"probe loss per example, held-out vs training examples ({n} of each): {h0:.4g} vs {s0:.4g} "
                 f"before training, {h1:.4g} vs {s1:.4g} at step {last['step']} (gap {h1 - s1:.3g})"]
    if monitor.best_epoch is not None:
        how = ""
        if monitor.monitor.endswith("loss") and not monitor.epoch_losses_comparable:
            how = " (a tfrs.Model's epoch loss is its last batch's: compare epochs, not train with validation)"
        lines.append(f"best epoch by {monitor.monitor}: {monitor.best_epoch + 1} ({monitor.best_value:.5g}){how}; "
                     f"the overfitting trend test needs {monitor.detectors['overfitting'].window} epochs")
    return lines


def skipped_report(skipped: Sequence[tuple[str, str]]) -> list[str]:
    """The lines that say, once, what could not be read: ``(file, reason)`` pairs.

    >>> skipped_report([("train/events.out.tfevents.1", "ends in a record cut short at byte 9")])
    ['Skipped (1 unreadable part of the event files):', '  train/events.out.tfevents.1: ends in a record cut short at byte 9']
    """
    if not skipped:
        return []
    unique = list(dict.fromkeys(skipped))
    return ([f"Skipped ({len(unique)} unreadable part{'s' if len(unique) > 1 else ''} of the event files):"]
            + [f"  {where}: {reason}" for where, reason in unique])


def demo_lines(demo, *, batch_size: int, logdir: str) -> list[str]:
    """What ``tfrs-diag demo`` prints after training (`tfrs_diag.recipes.DemoResult`)."""
    data, result = demo.data, demo.training
    losses = " -> ".join(f"{v:.4g}" for v in result.history["mean_loss"])
    k = min(TOP_K, data.num_items)
    test_pairs = len(next(iter(data.test.values())))
    train_pairs = len(next(iter(data.train.values())))
    # Summed losses: the epoch's total over its examples (the last batch may be partial).
    per_example = result.final_loss * -(-train_pairs // batch_size) / train_pairs
    lines = ["", "== Data ==", data.describe(), "",
             "== Training ==",
             f"{result.steps} steps in {result.seconds:.1f} s; loss per batch (mean over each epoch's batches): "
             f"{losses}",
             f"final loss: {per_example:.4g} per example ({result.final_loss:.4g} per batch of "
             f"{batch_size}: TFRS retrieval sums an in-batch softmax over the batch; a uniform softmax over "
             f"{batch_size} candidates: {math.log(batch_size):.4g} per example)",
             f"top-{k} recall per test interaction: {demo.hit_rate:.3f} (share of the {test_pairs} test (user, item) "
             f"pairs whose item is in the user's top {k}; a random recommender: {k / data.num_items:.3f})",
             "", "== Gradients =="]
    lines += gradient_report(demo.train_run, demo.table_rows)
    if result.beyond_accuracy is not None and result.beyond_accuracy.history:
        epoch, evaluation = result.beyond_accuracy.history[-1]
        lines += ["", f"== Top-K evaluation on the test split (after epoch {epoch + 1}; per query = per user) =="]
        lines += str(evaluation).splitlines()
    if result.overfitting is not None:
        lines += ["", "== Overfitting monitor =="] + overfitting_report(result.overfitting)
    lines += ["", f"== Alerts ({len(demo.alerts)}) =="]
    lines += [schema.format_alert(a) for a in demo.alerts] or ["no alerts"]
    lines += ["", "See the curves and histograms in TensorBoard:", f"  tensorboard --logdir {logdir}"]
    return lines


def explain_lines(found, *, logdir: str | None) -> list[str]:
    """What ``tfrs-diag explain`` prints after training (`tfrs_diag.recipes.ExplainResult`)."""
    attribution, result = found.attribution, found.training
    lines = ["", f"test RMSE {found.rmse:.3f} after {result.steps} steps ({result.seconds:.1f} s)", "",
             attribution.table()]
    if attribution.method in ("shapley", "integrated_gradients"):
        gap = abs(attribution.values.sum(1) + attribution.base_value - attribution.outputs).max()
        lines.append(f"values + base - output: max |gap| {gap:.1e}")
    lines.append("example = user_id item_id; values in rating units (the model predicts ratings 1-5)"
                 if attribution.method != "permutation_importance"
                 else "values = RMSE increase when the group is shuffled")
    if logdir:
        lines += ["", "See them in TensorBoard:", f"  tensorboard --logdir {os.path.abspath(logdir)}"]
    return lines


# ---------------------------------------------------------------- report LOGDIR

#: How the report's section of one run starts ("=== run train ===").
RUN_HEADING = "=== run "


def find_runs(logdir: str) -> list[str]:
    """Directories under ``logdir`` (itself included) that hold TensorBoard event files, sorted."""
    runs = []
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        if any(f.startswith("events.out.tfevents.") for f in files):
            runs.append(root)
    return runs


def _records(run, record_type: str) -> list[tuple[str, int, dict]]:
    out = []
    for tag, rows in run.records.items():
        out.extend((tag, step, payload) for step, payload in rows if payload.get("type") == record_type)
    return sorted(out, key=lambda r: r[1])


def _group_tables(payload: dict) -> list[str]:
    lines = []
    for key, rows in (payload.get("user_groups") or {}).items():
        if not rows:
            continue
        columns = [c for c in rows[0] if c != "group"]
        body = [[str(r.get("group"))] + [_cell(r.get(c)) for c in columns] for r in rows]
        present = [r for r in rows if r.get("count", 1) > 0]
        gaps = ["gap (max-min)"]
        for c in columns:
            vals = [r.get(c) for r in present if isinstance(r.get(c), (int, float))]
            gaps.append(format_number(max(vals) - min(vals)) if c != "count" and len(vals) >= 2 else "")
        lines += [f"  by {key}:"] + text_table(["group"] + columns, body + [gaps], indent="    ")
    items = payload.get("item_groups") or []
    if items:
        columns = [c for c in items[0] if c != "group"]
        lines += ["  item groups (exposure share vs. share of relevant items; disparity 1 = parity):"]
        lines += text_table(["group"] + columns, [[str(r.get("group"))] + [_cell(r.get(c)) for c in columns]
                                              for r in items], indent="    ")
    return lines


def _cell(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "" if x is None else str(x)
    return str(x) if isinstance(x, int) else format_number(x)


def _latest_scalars(run, family: str) -> list[str]:
    prefix = schema.tag(family) + "/"
    tags = sorted(t for t in run.scalars if t.startswith(prefix))
    if not tags:
        return []
    rows = []
    for t in tags:
        step, value = latest(run.scalars[t])
        # The monitor's epoch-level values are written at the epoch index, the rest at the step.
        at = f"epoch {step + 1}" if t.startswith(schema.TAGS["overfit_epoch"]) else f"step {step}"
        rows.append([t[len(prefix):], format_number(value), at])
    return text_table(["metric", "latest", "at"], rows)


def _attribution(payload: dict) -> list[str]:
    groups = [str(g) for g in payload.get("group_names") or []]
    values = payload.get("values") or []
    examples = payload.get("examples") or list(range(len(values)))
    outputs = payload.get("outputs")
    base = payload.get("base_value")
    rows = []
    for i, row in enumerate(values):
        out = outputs[i] if isinstance(outputs, list) and i < len(outputs) else ""
        rows.append([str(examples[i]) if i < len(examples) else f"#{i}"] + [_cell(v) for v in row] + [_cell(out)])
    lines = [f"  method: {payload.get('method')}, base value: {_cell(base) if not isinstance(base, list) else base}"]
    return lines + text_table(["example"] + groups + ["output"], rows)


def report_lines(logdir: str, *, verbose: int = 0) -> tuple[list[str], list[dict]]:
    """The report of every run under ``logdir`` as lines, and every alert found.

    ``verbose=1`` shows which run is being read on stderr (one updating line) when there
    are two or more runs; the lines themselves are returned, not printed.

    Damaged event files (a killed writer's last record, a file that is not an event
    file) do not stop it: what can be read is reported, and the last lines say once
    what was skipped. Lines are empty when ``logdir`` holds neither tfrs_diag data
    nor anything skipped.

    Raises:
      FileNotFoundError: ``logdir`` is not a directory.
    """
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"{logdir!r} is not a directory")
    lines: list[str] = []
    every_alert: list[dict] = []
    skipped: list[tuple[str, str]] = []
    run_dirs = find_runs(logdir)
    progress = verbose and len(run_dirs) >= 2
    for i, run_dir in enumerate(run_dirs):
        name = os.path.relpath(run_dir, logdir)
        if progress:
            print(f"\rreading run {i + 1}/{len(run_dirs)}: {name[-60:]:<60}", end="", file=sys.stderr, flush=True)
        run = events.read_run(run_dir)
        skipped += [(os.path.normpath(os.path.join(name, f)), reason) for f, reason in run.skipped]
        mine = [t for t in [*run.scalars, *run.records, *run.histograms] if t.startswith(schema.PREFIX)]
        if not mine:
            continue
        lines += _run_lines(name, run)
        every_alert.extend({**a, "run": name} for a in run.alerts())
    if progress:
        print(f"\rread {len(run_dirs)} runs{' ' * 72}", file=sys.stderr, flush=True)
    if skipped:
        lines += [""] + skipped_report(skipped)
    return lines, every_alert


def _run_lines(name: str, run) -> list[str]:
    alerts = run.alerts()
    lines = ["", f"{RUN_HEADING}{name} ===", f"Alerts ({len(alerts)}):"]
    lines += ["  " + schema.format_alert(a) for a in alerts] or ["  no alerts"]
    tables = _records(run, "group_table")
    if tables:
        _, step, payload = tables[-1]
        epoch = payload.get("epoch")
        lines += ["", f"Per-group table (step {step}" + (f", epoch {epoch + 1}" if epoch is not None else "")
                  + f", K = {payload.get('ks')}; count = queries, the rest means over them; "
                  + f"{_averaged_over(payload)}):"]
        lines += _group_tables(payload)
    lorenz = _records(run, "lorenz")
    if lorenz:
        _, step, payload = lorenz[-1]
        ginis = ", ".join(f"top-{c.get('k')}: {_cell(c.get('gini'))}" for c in payload.get("curves", []))
        lines += [f"  exposure Gini (step {step}): {ginis}"]
    lines += _pareto_lines(_records(run, schema.PARETO_RECORD))
    for family in ("rank", "div", "overfit"):
        table = _latest_scalars(run, family)
        if table:
            lines += ["", f"{_TITLES[family]}:"] + table
    if any(t.startswith(schema.FAMILY["grad"].prefix) for t in run.scalars):
        lines += [""] + gradient_report(run)
    explanations = _records(run, "attribution_table")
    if explanations:
        _, step, payload = explanations[-1]
        lines += ["", f"Explanations (step {step}):"] + _attribution(payload)
    return lines


def _pareto_lines(records: Sequence[tuple[str, int, dict]]) -> list[str]:
    """The first and the latest knob sweeps: how the trade-off moved as the model trained."""
    from tfrs_diag.evaluation.tradeoff import format_trade_off  # noqa: PLC0415

    lines: list[str] = []
    for _, step, payload in ([records[0], records[-1]] if len(records) > 1 else records):
        rows = [r for r in payload.get("rows") or [] if isinstance(r, dict) and isinstance(r.get("value"), (int, float))]
        ks, epoch = payload.get("ks") or [None], payload.get("epoch")
        if rows and ks[0] is not None:
            lines += ["", f"Re-ranker trade-off, {payload.get('reranker', 're-ranker')} (step {step}"
                      + (f", epoch {epoch + 1}" if isinstance(epoch, int) else "") + "):"] + format_trade_off(rows, ks[0])
    return lines


# The report's section titles, with what their figures average over.
_TITLES = {"rank": "Top-K accuracy (each a mean over the evaluation's queries)",
           "div": "Diversity & coverage (coverage, gini, entropy: item counts pooled over all queries' top-K lists; "
                  "novelty: mean over recommended items; ild, arp, aplt: means over queries)",
           "overfit": "Overfitting (probe/: losses per example on fixed probe examples; epoch/: the epoch logs)"}


def _averaged_over(payload: dict) -> str:
    """ "943 queries, one per user_id" from a group_table record (older records: the count only)."""
    queries = payload.get("queries", "?")
    if "query_key" not in payload:
        return f"{queries} queries"
    key = payload["query_key"]
    return f"{queries} queries, one per {key}" if key else f"{queries} queries, one per test row"


def firing(alerts: Sequence[dict], at_least: str) -> list[dict]:
    """Alerts of severity ``at_least`` or worse still active in their run (`active_alerts` per ``run``).

    >>> fired = {"kind": "k", "subject": "s", "severity": "warning", "step": 3, "run": "a"}
    >>> [a["run"] for a in firing([fired, {**fired, "run": "b"}, {**fired, "step": 4, "status": "cleared"}],
    ...                           "warning")]
    ['b']
    """
    runs: dict[Any, list[dict]] = {}
    for a in sorted(alerts, key=lambda a: a.get("step", 0)):
        runs.setdefault(a.get("run"), []).append(a)
    floor = schema.SEVERITY_ORDER[at_least]
    return [a for run in runs.values() for a in active_alerts(run)
            if schema.SEVERITY_ORDER.get(a.get("severity"), 0) >= floor]

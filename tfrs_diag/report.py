"""``tfrs-diag report LOGDIR``: the plugin's alerts and tables as text, for servers without a browser and CI logs.

>>> from tfrs_diag import report
>>> lines, alerts = report.report_lines("logs")  # doctest: +SKIP
>>> print("\\n".join(lines))                      # doctest: +SKIP

Reads every run (a directory holding event files) under LOGDIR with
`tfrs_diag.summary.read_run` and prints, per run: its alerts (one line each, as the demo
prints them), the latest per-user-group table with the gap, item-group exposure and the
exposure Gini, the latest diversity/accuracy/overfitting values, the gradient table, and
the latest attribution table of the explainer.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from tfrs_diag import summary
from tfrs_diag.cli import _last, _num, _table, format_alert, gradient_report

SEVERITY_ORDER = {s: i for i, s in enumerate(summary.SEVERITIES)}


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
            gaps.append(_num(max(vals) - min(vals)) if c != "count" and len(vals) >= 2 else "")
        lines += [f"  by {key}:"] + _table(["group"] + columns, body + [gaps], indent="    ")
    items = payload.get("item_groups") or []
    if items:
        columns = [c for c in items[0] if c != "group"]
        lines += ["  item groups (exposure share vs. share of relevant items; disparity 1 = parity):"]
        lines += _table(["group"] + columns, [[str(r.get("group"))] + [_cell(r.get(c)) for c in columns]
                                              for r in items], indent="    ")
    return lines


def _cell(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "" if x is None else str(x)
    return str(x) if isinstance(x, int) else _num(x)


def _latest_scalars(run, family: str) -> list[str]:
    prefix = summary.tag(family) + "/"
    tags = sorted(t for t in run.scalars if t.startswith(prefix))
    if not tags:
        return []
    rows = []
    for t in tags:
        step, value = _last(run.scalars[t])
        rows.append([t[len(prefix):], _num(value), str(step)])
    return _table(["metric", "latest", "step"], rows)


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
    return lines + _table(["example"] + groups + ["output"], rows)


def report_lines(logdir: str) -> tuple[list[str], list[dict]]:
    """The report of every run under ``logdir`` as lines, and every alert found.

    Raises:
      FileNotFoundError: ``logdir`` is not a directory.
    """
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"{logdir!r} is not a directory")
    lines: list[str] = []
    every_alert: list[dict] = []
    for run_dir in find_runs(logdir):
        run = summary.read_run(run_dir)
        mine = [t for t in [*run.scalars, *run.records, *run.histograms] if t.startswith(summary.PREFIX)]
        if not mine:
            continue
        name = os.path.relpath(run_dir, logdir)
        alerts = run.alerts()
        every_alert.extend(alerts)
        lines += ["", f"=== run {name} ===", f"Alerts ({len(alerts)}):"]
        lines += ["  " + format_alert(a) for a in alerts] or ["  no alerts"]
        tables = _records(run, "group_table")
        if tables:
            tag, step, payload = tables[-1]
            epoch = payload.get("epoch")
            lines += ["", f"Per-group table (step {step}" + (f", epoch {epoch + 1}" if epoch is not None else "")
                      + f", {payload.get('queries', '?')} queries, K = {payload.get('ks')}):"]
            lines += _group_tables(payload)
        lorenz = _records(run, "lorenz")
        if lorenz:
            _, step, payload = lorenz[-1]
            ginis = ", ".join(f"top-{c.get('k')}: {_cell(c.get('gini'))}" for c in payload.get("curves", []))
            lines += [f"  exposure Gini (step {step}): {ginis}"]
        for family, title in (("rank", "Top-K accuracy"), ("div", "Diversity & coverage"),
                              ("overfit", "Overfitting")):
            table = _latest_scalars(run, family)
            if table:
                lines += ["", f"{title}:"] + table
        if any(t.startswith(summary.tag("grad") + "/") for t in run.scalars):
            lines += [""] + gradient_report(run)
        explanations = _records(run, "attribution_table")
        if explanations:
            _, step, payload = explanations[-1]
            lines += ["", f"Explanations (step {step}):"] + _attribution(payload)
    return lines, every_alert


def firing(alerts: Sequence[dict], at_least: str) -> list[dict]:
    """Alerts of severity ``at_least`` or worse whose (kind, subject) was not cleared after them."""
    state: dict[tuple, dict] = {}
    for a in sorted(alerts, key=lambda a: a.get("step", 0)):
        key = (a.get("kind"), a.get("subject"))
        if a.get("status") == "cleared":
            state.pop(key, None)
        else:
            state[key] = a
    floor = SEVERITY_ORDER[at_least]
    return [a for a in state.values() if SEVERITY_ORDER.get(a.get("severity"), 0) >= floor]

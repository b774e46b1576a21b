"""The "Recsys diagnostics" TensorBoard plugin: every route through a WSGI client, with
both of TensorBoard's loaders, on logs of the real callbacks; `tfrs-diag report`; and a
real browser on a real `tensorboard` process."""

from __future__ import annotations

import glob
import json
import math
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from werkzeug.test import Client

from tfrs_diag import cli, recipes, summary
from tfrs_diag.summary import schema
from tfrs_diag.metrics.fairness import lorenz_curve
from tfrs_diag.views.tensorboard import plugin as P
from tfrs_diag.views.tensorboard import reader as R, series as S

# np.trapz was renamed np.trapezoid in NumPy 2.0; the TFX leg runs NumPy 1.26.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz

ROUTE = "/data/plugin/tfrs_diag/"
STATIC = pathlib.Path(P.__file__).parent / "static"
INDEX_JS = str(STATIC / "index.js")
FRONT_END = sorted(STATIC.glob("*.js"))
XSS_GROUP = "<img src=x onerror=alert(1)>"
XSS_FEATURE = "<script>alert(2)</script>"
NAN_STEP = 30


def _train_logs(logdir: str) -> None:
    """Two epochs of the demo's two-tower model with GradientStatistics and BeyondAccuracy.

    BeyondAccuracy's thresholds are set so both of its alerts fire for real (any gap in
    NDCG, any exposure concentration); one user group carries a hostile name.
    """
    from tfrs_diag import models
    from tfrs_diag._keras import tf
    from tfrs_diag.callbacks import BeyondAccuracy

    data = recipes.load_data(None, num_interactions=3000, seed=0)
    names = list(data.user_group_names)
    names[0] = XSS_GROUP
    beyond = BeyondAccuracy(logdir, data.test, data.items["item_id"], k=(10, 50), query_key="user_id",
                            item_key="item_id", user_group_keys=("user_group",),
                            user_group_names={"user_group": names}, item_groups=data.items["item_category"],
                            item_group_names=data.item_group_names, item_popularity=data.item_popularity,
                            fairness_ratio=1.0, exposure_gini=0.01, verbose=0)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    ds = models.retrieval_dataset(data.train, batch_size=128, shuffle_seed=0)
    recipes.fit_with_diagnostics(model, ds, logdir, epochs=2, every_n_steps=5, histogram_every_n_steps=20,
                                 verbose=0, extra_callbacks=[beyond])
    summary.close_writer(logdir, "validation")


# OverfittingMonitor's epoch curves of the synthetic run (at the epoch index): a loss whose
# values span three decades (log scale), and validation above train.
EPOCH_TRAIN = [30000.0, 900.0, 200.0, 60.0, 20.0]
EPOCH_VAL = [31000.0, 1200.0, 500.0, 400.0, 420.0]
COUNT = 700  # a count the page must show whole (it once showed "7")
COUNT_STEP = 45


# A re-ranker's sweep: accuracy falls as coverage and ILD rise.
PARETO_ROWS = [{"knob": "lambda", "value": v, "ndcg_at_10": 0.05 + 0.04 * v, "coverage_at_10": 0.6 - 0.3 * v,
                "ild_at_10": 0.7 - 0.2 * v} for v in (0.25, 0.5, 0.75, 1.0)]


def _synthetic_logs(logdir: str) -> None:
    """A run with what the other callbacks write: overfitting curves per epoch and per probe,
    a NaN gradient norm, an exploding global norm, three alerts at one step, an alert that
    fired, cleared and fired again, a per-group table and an embedding row count of
    exactly `COUNT`, an attribution table and a record type the plugin does not know."""
    writer = summary.writer_for(logdir, "synthetic")
    epoch_tag = lambda *parts: schema.TAGS["overfit_epoch"] + "/".join(parts)  # noqa: E731
    probe_tag = lambda leaf: schema.TAGS["overfit_probe"] + leaf  # noqa: E731
    with writer.as_default():
        for step in range(0, 100, 5):
            for layer, scale in (("tower/dense", 1.0), ("tower/embedding", 0.01)):
                value = float("nan") if (step == NAN_STEP and layer == "tower/dense") else scale * (1 + step)
                summary.write_scalar(summary.tag("grad", "layer_norm", layer), value, step)
            summary.write_scalar(schema.TAGS["grad_global_norm"], 10 ** (step / 25), step)  # 1 .. 6300
            summary.write_scalar(summary.tag("overfit", "gap", "loss"), 0.01 * step, step)
            summary.write_scalar(summary.tag("overfit", "probe", "train_recall"), 0.5 + 0.004 * step, step)
            heldout, seen = 5.0 + 0.01 * step, 5.0 - 0.02 * step
            summary.write_scalar(probe_tag("heldout_loss"), heldout, step)
            summary.write_scalar(probe_tag("seen_loss"), seen, step)
            summary.write_scalar(probe_tag("gap"), heldout - seen, step)
            rows = COUNT if step == COUNT_STEP else 600 + step
            summary.write_scalar(summary.tag("embed", "unique_rows", "tower/embedding"), float(rows), step)
        for epoch, (train, val) in enumerate(zip(EPOCH_TRAIN, EPOCH_VAL)):
            summary.write_scalar(epoch_tag("loss", "train"), train, epoch)
            summary.write_scalar(epoch_tag("loss", "val"), val, epoch)
            summary.write_scalar(epoch_tag("loss", "gap"), val - train, epoch)
            summary.write_scalar(epoch_tag("loss", "relative_gap"), (val - train) / train, epoch)
            # A loss summed over the batch: train and validation only, no gap rows.
            summary.write_scalar(epoch_tag("sum_loss", "train"), 100 * train, epoch)
            summary.write_scalar(epoch_tag("sum_loss", "val"), 100 * val, epoch)
            if epoch >= 2:
                summary.write_scalar(epoch_tag("trend", "val_loss", "slope"), 10.0 * epoch, epoch)
                summary.write_scalar(epoch_tag("trend", "val_loss", "p_worse"), 0.2 / epoch, epoch)
        summary.write_record(schema.TAGS["fair_groups"], "group_table", {
            "epoch": 1, "ks": [10], "queries": 1000, "query_key": "user_id", "item_groups": [],
            "user_groups": {"user_group": [{"group": "heavy", "count": COUNT, "ndcg_at_10": 0.25},
                                           {"group": "light", "count": 1000 - COUNT, "ndcg_at_10": 0.125}]}}, 90)
        summary.write_record(summary.tag("explain", "attributions"), "attribution_table", {
            "method": "shapley", "group_names": ["user_id", XSS_FEATURE, "item_category"],
            "examples": ["u1 -> i9", "u2 -> i3"], "values": [[0.5, -0.25, 0.125], [0.0, 1.5, -2.0]],
            "base_value": 3.5, "outputs": [3.875, 3.0], "epoch": 1}, 90)
        summary.write_record(summary.tag("explain", "mystery"), "mystery_table", {"answer": 42, "who": XSS_GROUP}, 90)
        summary.write_record(schema.TAGS["div_pareto"], schema.PARETO_RECORD, {
            "epoch": 1, "ks": [10], "knob": "lambda", "reranker": "MMR", "rows": PARETO_ROWS}, 90)
    log = summary.AlertLog(logdir, run="synthetic", echo=False)
    for subject in ("tower/dense", "tower/embedding", "tower/bias"):
        log.fire(summary.Alert("exploding_gradients", "warning", 50, 0, subject, f"{subject} exploded."))
    log.fire(summary.Alert("nonfinite_gradients", "critical", NAN_STEP, 0, "tower/dense", "NaN here."))
    log.clear("exploding_gradients", "tower/bias", 60, 0)
    log.fire(summary.Alert("vanishing_gradients", "warning", 70, 0, "tower/embedding", "Vanished."))
    log.clear("vanishing_gradients", "tower/embedding", 80, 0)
    log.fire(summary.Alert("vanishing_gradients", "warning", 90, 1, "tower/embedding", "Vanished again."))
    summary.close_writer(logdir, "synthetic")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("plugin_logs"))
    _train_logs(path)
    _synthetic_logs(path)
    return path


def _client(app) -> Client:
    return Client(app)


@pytest.fixture(scope="module", params=[False, True], ids=["load_fast=false", "load_fast=true"])
def client(request, logdir):
    app = P.make_wsgi_app(logdir, load_fast=request.param)
    c = _client(app)
    if request.param:  # the Rust data server loads in the background
        for _ in range(100):
            runs = c.get(ROUTE + "runs").json["runs"]
            if len(runs) == 3 and runs.get("synthetic", {}).get("records"):
                break
            time.sleep(0.1)
    yield c
    app.close()


def get(c: Client, route: str, **params):
    response = c.get(ROUTE + route, query_string=params)
    return response.status_code, response


# ---------------------------------------------------------------- pure helpers


def test_downsample_keeps_spikes_nonfinite_and_ends_within_budget():
    rng = np.random.default_rng(0)
    pts = [(i, float(v)) for i, v in enumerate(rng.normal(size=100_000))]
    pts[77_777] = (77_777, 1e6)
    pts[12_345] = (12_345, float("nan"))
    small = S.downsample(pts, 1000)
    assert len(small) <= 1000
    assert (77_777, 1e6) in small and small[0] == pts[0] and small[-1] == pts[-1]
    assert any(s == 12_345 and math.isnan(v) for s, v in small)
    assert [s for s, _ in small] == sorted(s for s, _ in small)
    assert min(v for _, v in small if math.isfinite(v)) == min(v for _, v in pts if math.isfinite(v))
    assert S.downsample(pts[:10], 1000) == pts[:10]
    many_nan = [(i, float("nan") if i % 3 else float(i)) for i in range(500)]
    for budget in (2, 3, 7, 10, 101):
        small = S.downsample(many_nan, budget)
        assert len(small) <= budget and small[0] == many_nan[0] and small[-1] == many_nan[-1]


def test_heatmap_takes_the_largest_reading_per_bin_and_marks_nonfinite():
    series = {"b": [(s, 1.0) for s in range(100)], "a": [(s, float(s)) for s in range(100)]}
    series["b"][42] = (42, float("inf"))
    hm = S.heatmap(series, columns=10)
    assert hm["rows"] == ["a", "b"] and len(hm["bins"]) == 10
    assert hm["bins"][0][0] == 0 and hm["bins"][-1][1] == 99
    assert hm["values"][0][-1] == 99.0  # the largest of steps 90..99
    assert hm["nonfinite"] == [[1, 42]] and hm["values"][1][4] == "inf"


def test_lorenz_curve_matches_the_gini_definition():
    rng = np.random.default_rng(1)
    counts = rng.zipf(1.5, size=500).astype(float)
    n = counts.size
    x, y = lorenz_curve(counts, points=n + 1)  # one x per item: the exact curve
    area = _trapezoid(y, x)
    c = np.sort(counts)
    gini = np.sum((2 * np.arange(1, n + 1) - n - 1) * c) / (n * c.sum())
    assert 1 - 2 * area == pytest.approx(gini, abs=1e-9)
    x, y = lorenz_curve(counts)
    assert len(x) == 101 and y[0] == 0 and y[-1] == pytest.approx(1) and np.all(np.diff(y) >= -1e-12)
    assert np.all(y <= x + 1e-12)  # below the line of equality
    with pytest.raises(ValueError, match="points"):
        lorenz_curve(counts, points=1)


def test_expand_alert_records_flattens_same_step_records_once():
    a, b = {"kind": "k", "subject": "a", "step": 5}, {"kind": "k", "subject": "b", "step": 5}
    records = [(5, {**a, "version": 1, "type": "alert"}), (5, {**b, "earlier_at_step": [a]}), (7, {**a, "step": 7})]
    assert summary.expand_alert_records(records) == [a, b, {**a, "step": 7}]
    assert summary.expand_alert_records(records[1:]) == [a, b, {**a, "step": 7}]  # only the last of step 5 kept


# ---------------------------------------------------------------- the front end's pure modules, in node


def _node(script: str, stdin: str = "") -> object:
    """Runs an ES module script with node; returns what it printed as JSON."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the front end's pure modules (format.js, grouping.js) are tested in node")
    done = subprocess.run([node, "--input-type=module", "-e", script], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _import(module: str, *names: str) -> str:
    return f"import {{{', '.join(names)}}} from '{(STATIC / module).as_uri()}';\n"


def _num(values, digits: int = 3) -> list[str]:
    # JSON has no NaN/Infinity: those are sent as the strings the page receives.
    return _node(_import("format.js", "num") + "import {readFileSync} from 'fs';\n"
                 "const xs = JSON.parse(readFileSync(0, 'utf8'));\n"
                 f"console.log(JSON.stringify(xs.map((x) => num(x, {digits}))));", json.dumps(values))


def test_num_shows_counts_whole_and_decimals_without_trailing_zero_damage():
    cases = {700: "700", 100: "100", 300: "300", 12345: "12345", 999_999: "999999", 1_000_000: "1000000", 0: "0",
             -700: "-700", 0.5: "0.5", 0.125: "0.125", 1.50: "1.5", -0.5: "-0.5", 2.0: "2", 12.34: "12.3",
             3e-7: "3e-7", -3e-7: "-3e-7", 2.5e9: "2.5e9", 1.25e-4: "1.25e-4", "nan": "nan", "inf": "inf",
             "-inf": "-inf"}
    assert dict(zip(cases, _num(list(cases)))) == cases


def test_num_round_trips_within_its_precision():
    rng = np.random.default_rng(0)
    ints = [int(v) for v in rng.integers(-1_000_000, 1_000_001, size=300)]
    assert _num(ints) == [str(v) for v in ints]  # every digit of a count
    floats = [float(v) for v in rng.choice([-1, 1], 400) * 10 ** rng.uniform(-12, 12, 400)]
    for digits, tolerance in ((3, 5e-3), (6, 5e-6)):
        for x, text in zip(floats, _num(floats, digits)):
            assert float(text) == pytest.approx(x, rel=tolerance), (x, text)
            mantissa = text.split("e")[0]
            assert not ("." in mantissa and mantissa.endswith(("0", "."))), text  # no trailing zeros
            assert ("e" in text) == (not 1e-3 <= abs(x) < 1e6), (x, text)
            assert "+" not in text


def test_tick_labels_tell_close_ticks_apart():
    ticks = [1419.6, 1419.8, 1420.0, 1420.2]
    labels = _node(_import("format.js", "tickLabels") + f"console.log(JSON.stringify(tickLabels({ticks})));")
    assert len(set(labels)) == len(ticks) and [float(t) for t in labels] == ticks


def test_labels_say_how_many_queries_a_figure_averages_over():
    payloads = [{"queries": 943, "query_key": "user_id"}, {"queries": 943, "query_key": None}, {"queries": 943},
                {"queries": 1}, {}]
    out = _node(_import("format.js", "averagedOver") + "import {readFileSync} from 'fs';\n"
                "console.log(JSON.stringify(JSON.parse(readFileSync(0, 'utf8')).map(averagedOver)));",
                json.dumps(payloads))
    assert out == ["averaged over 943 queries (one per user_id)", "averaged over 943 queries (one per test row)",
                   "averaged over 943 queries", "averaged over 1 query", ""]


def _chart_groups(tags) -> list[dict]:
    return _node(_import("grouping.js", "chartGroups") + "import {readFileSync} from 'fs';\n"
                 "const {tags, schema} = JSON.parse(readFileSync(0, 'utf8'));\n"
                 "console.log(JSON.stringify(chartGroups(tags, schema)));",
                 json.dumps({"tags": tags, "schema": schema.frontend_schema()}))


def _leaf(tag: str) -> str:
    return tag.rsplit("/", 1)[-1]


def _metric(tag: str, prefix: str) -> str:
    return tag[len(prefix):].rsplit("/", 1)[0]


def test_chart_groups_put_one_quantity_on_each_axis(logdir):
    tags = sorted(summary.read_run(os.path.join(logdir, "synthetic")).scalars)
    groups = _chart_groups(tags)
    assert sorted(t["tag"] for g in groups for t in g["series"]) == tags  # every tag on exactly one chart
    epoch, probe = schema.TAGS["overfit_epoch"], schema.TAGS["overfit_probe"]
    chart_of = {t["tag"]: i for i, g in enumerate(groups) for t in g["series"]}
    for g in groups:
        chart_tags = [t["tag"] for t in g["series"]]
        # What each tag's step counts (OverfittingMonitor writes epoch/ at the epoch index).
        assert {g["x"]} == {"epoch" if t.startswith(epoch) else "step" for t in chart_tags}, chart_tags
        leaves = {_leaf(t) for t in chart_tags}
        if all(t.startswith(epoch) for t in chart_tags):
            # Train and validation of one metric, or one difference or trend statistic alone.
            assert leaves <= {"train", "val"} or len(leaves) == 1, chart_tags
            assert len({_metric(t, epoch) for t in chart_tags}) == 1, chart_tags
        if all(t.startswith(probe) for t in chart_tags):
            assert leaves <= {"heldout_loss", "seen_loss"} or len(leaves) == 1, chart_tags
        assert len(set(g["quantity"] for g in groups if set(t["tag"] for t in g["series"]) & set(chart_tags))) == 1
    assert chart_of[epoch + "loss/train"] == chart_of[epoch + "loss/val"]
    assert len({chart_of[epoch + f"loss/{leaf}"] for leaf in ("train", "gap", "relative_gap")}) == 3
    assert chart_of[epoch + "trend/val_loss/slope"] != chart_of[epoch + "trend/val_loss/p_worse"]
    assert chart_of[probe + "heldout_loss"] == chart_of[probe + "seen_loss"] != chart_of[probe + "gap"]
    # A metric written without gap rows (a loss summed over the batch) gets its curves and nothing else.
    assert [g for g in groups if any(t["tag"].startswith(epoch + "sum_loss/") for t in g["series"])] == \
        [groups[chart_of[epoch + "sum_loss/train"]]]
    assert [t["name"] for t in groups[chart_of[epoch + "loss/train"]]["series"]] == ["train", "validation"]


# ---------------------------------------------------------------- routes


def test_runs_lists_every_run_with_its_records_and_families(client):
    code, r = get(client, "runs")
    assert code == 200
    runs = r.json["runs"]
    assert set(runs) == {"train", "validation", "synthetic"}
    assert runs["validation"]["records"]["tfrs_diag/fair/groups"] == "group_table"
    assert runs["validation"]["records"]["tfrs_diag/fair/exposure_lorenz"] == "lorenz"
    assert runs["synthetic"]["records"]["tfrs_diag/explain/attributions"] == "attribution_table"
    assert {"grad", "embed"} <= set(runs["train"]["scalar_families"])
    assert {"div", "rank", "fair"} <= set(runs["validation"]["scalar_families"])


def test_overview_has_the_alerts_fired_at_one_step_with_both_loaders(client):
    code, r = get(client, "overview", run="synthetic")
    assert code == 200
    alerts = r.json["alerts"]
    fired = [(a["kind"], a["subject"], a["step"], a["status"]) for a in alerts]
    # Three alerts at step 50: TensorBoard keeps one record per step, which carries all three.
    assert fired == [("nonfinite_gradients", "tower/dense", NAN_STEP, "firing"),
                     ("exploding_gradients", "tower/dense", 50, "firing"),
                     ("exploding_gradients", "tower/embedding", 50, "firing"),
                     ("exploding_gradients", "tower/bias", 50, "firing"),
                     ("exploding_gradients", "tower/bias", 60, "cleared"),
                     ("vanishing_gradients", "tower/embedding", 70, "firing"),
                     ("vanishing_gradients", "tower/embedding", 80, "cleared"),
                     ("vanishing_gradients", "tower/embedding", 90, "firing")]


def _still_open(alerts) -> dict[tuple, tuple]:
    """(kind, subject) -> (severity, since step) of alerts whose latest record is not a clear."""
    state: dict[tuple, tuple] = {}
    for a in sorted(alerts, key=lambda a: a["step"]):
        key = (a["kind"], a["subject"])
        if a.get("status") == "cleared":
            state.pop(key, None)
        else:
            state.setdefault(key, (a["severity"], a["step"]))
    return state


@pytest.mark.parametrize("run", ["synthetic", "validation"])
def test_overview_has_the_active_alerts_and_what_fired_and_cleared_with_both_loaders(client, logdir, run):
    _, r = get(client, "overview", run=run)
    written = summary.read_run(os.path.join(logdir, run)).alerts()
    active = r.json["active_alerts"]
    assert {(a["kind"], a["subject"]): (a["severity"], a["since_step"]) for a in active} == _still_open(written)
    assert r.json["alert_counts"] == {"fired": sum(a.get("status") != "cleared" for a in written),
                                      "cleared": sum(a.get("status") == "cleared" for a in written)}
    ranks = [schema.SEVERITY_ORDER[a["severity"]] for a in active]
    assert ranks == sorted(ranks, reverse=True)  # worst first
    if run == "synthetic":
        # Fired at 70, cleared at 80, fired again at 90: active since 90; the bias one cleared for good.
        assert ("vanishing_gradients", "tower/embedding") in {(a["kind"], a["subject"]) for a in active}
        assert next(a for a in active if a["kind"] == "vanishing_gradients")["since_step"] == 90
        assert ("exploding_gradients", "tower/bias") not in {(a["kind"], a["subject"]) for a in active}
        assert active[0]["kind"] == "nonfinite_gradients" and active[0]["since_epoch"] == 0


def test_overview_of_the_evaluation_run_has_alerts_tables_and_lorenz_curves(client, logdir):
    code, r = get(client, "overview", run="validation")
    assert code == 200
    body = r.json
    kinds = {a["kind"] for a in body["alerts"]}
    assert kinds == {"fairness_gap", "exposure_concentration"}
    tables = body["records"]["group_table"]
    assert len(tables) == 2 and [t["payload"]["epoch"] for t in tables] == [0, 1]
    groups = [row["group"] for row in tables[-1]["payload"]["user_groups"]["user_group"]]
    assert groups[0] == XSS_GROUP  # the name as written, not escaped or mangled by the server
    lorenz = body["records"]["lorenz"][-1]["payload"]["curves"]
    assert [c["k"] for c in lorenz] == [10, 50]
    run = summary.read_run(os.path.join(logdir, "validation"))
    for c in lorenz:
        x, y = np.array(c["x"]), np.array(c["y"])
        assert x[0] == 0 and x[-1] == 1 and y[-1] == pytest.approx(1) and np.all(np.diff(y) >= -1e-9)
        gini_scalar = run.scalars[f"tfrs_diag/fair/exposure_gini_at_{c['k']}"][-1][1]
        assert c["gini"] == pytest.approx(gini_scalar, rel=1e-5)
        # 101 points of the curve give the Gini to within the sampling error.
        assert 1 - 2 * _trapezoid(y, x) == pytest.approx(gini_scalar, abs=0.02)
    # Scalars of the evaluation families, not per-variable gradients.
    assert "tfrs_diag/div/coverage_at_10" in body["scalars"]
    assert all(not t.startswith(schema.PER_VARIABLE_PREFIXES) for t in body["scalars"])


def test_overview_gradient_heatmap_names_layers_and_marks_the_nan(client, logdir):
    _, r = get(client, "overview", run="train")
    hm = r.json["gradients"]["layer_norm"]
    assert hm["rows"] == ["item_model/item_model_embedding", "user_model/user_model_embedding"]
    assert r.json["gradients"]["variables"] == 2
    assert all(isinstance(v, float) and v > 0 for row in hm["values"] for v in row if v is not None)
    # The newest histogram of each tag, as written.
    written = summary.read_run(os.path.join(logdir, "train")).histograms
    hists = r.json["histograms"]
    assert set(hists) == set(written) and len([t for t in hists if t.startswith("tfrs_diag/grad/values/")]) == 2
    for tag, h in hists.items():
        step, arr = written[tag][-1]
        assert h["step"] == step and h["counts"] == pytest.approx(arr[:, 2].tolist())
        assert h["left"] == pytest.approx(arr[:, 0].tolist()) and h["right"] == pytest.approx(arr[:, 1].tolist())
    _, r = get(client, "overview", run="synthetic")
    hm = r.json["gradients"]["layer_norm"]
    assert hm["rows"] == ["tower/dense", "tower/embedding"]
    assert hm["nonfinite"] == [[0, NAN_STEP]]
    overfit = {t for t in r.json["scalars"] if t.startswith("tfrs_diag/overfit/")}
    assert {"tfrs_diag/overfit/gap/loss", "tfrs_diag/overfit/probe/train_recall", "tfrs_diag/overfit/epoch/loss/val",
            "tfrs_diag/overfit/epoch/trend/val_loss/p_worse"} <= overfit
    assert [s for s, _ in r.json["scalars"]["tfrs_diag/overfit/epoch/loss/train"]] == list(range(len(EPOCH_TRAIN)))
    assert set(r.json["records"]) == {"attribution_table", "mystery_table", "group_table", "pareto"}


def test_scalars_by_tag_and_prefix_are_downsampled(client):
    code, r = get(client, "scalars", run="synthetic", tag="tfrs_diag/overfit/gap/loss")
    assert code == 200
    series = r.json["scalars"]["tfrs_diag/overfit/gap/loss"]
    assert [s for s, _ in series] == list(range(0, 100, 5))
    assert series[3][1] == pytest.approx(0.15)
    code, r = get(client, "scalars", run="synthetic", prefix="tfrs_diag/grad/layer_norm/", max_points="6")
    assert code == 200
    dense = r.json["scalars"]["tfrs_diag/grad/layer_norm/tower/dense"]
    assert len(dense) <= 6 and [NAN_STEP, "nan"] in dense  # the NaN survives downsampling
    code, r = get(client, "scalars", run="train", prefix="tfrs_diag/grad/norm/")
    assert code == 200 and len(r.json["scalars"]) == 2


def test_records_route_returns_every_record_of_a_tag(client):
    code, r = get(client, "records", run="synthetic", tag="tfrs_diag/explain/attributions")
    assert code == 200 and r.json["type"] == "attribution_table"
    payload = r.json["records"][0]["payload"]
    assert payload["group_names"][1] == XSS_FEATURE and payload["values"][1] == [0.0, 1.5, -2.0]
    code, r = get(client, "records", run="synthetic", tag="tfrs_diag/alerts")
    assert code == 200 and len(r.json["alerts"]) == 8


@pytest.mark.parametrize("route, params", [
    ("overview", {}),
    ("overview", {"run": "nope"}),
    ("overview", {"run": "../../etc"}),
    ("overview", {"run": "train\x00"}),
    ("overview", {"run": "x" * 5000}),
    ("scalars", {"run": "train"}),
    ("scalars", {"run": "train", "tag": "tfrs_diag/grad/global_norm", "prefix": "tfrs_diag/"}),
    ("scalars", {"run": "train", "tag": "tfrs_diag/no/such/tag"}),
    ("scalars", {"run": "train", "prefix": "/etc/"}),
    ("scalars", {"run": "train", "prefix": "tfrs_diag/nothing_here/"}),
    ("scalars", {"run": "train", "tag": "tfrs_diag/grad/global_norm", "max_points": "0"}),
    ("scalars", {"run": "train", "tag": "tfrs_diag/grad/global_norm", "max_points": "abc"}),
    ("scalars", {"run": "train", "tag": "tfrs_diag/grad/global_norm", "max_points": "5000"}),
    ("records", {"run": "synthetic"}),
    ("records", {"run": "synthetic", "tag": "tfrs_diag/grad/layer_norm/tower/dense"}),
    ("records", {"run": "nope", "tag": "tfrs_diag/alerts"}),
])
def test_bad_parameters_get_400_with_a_json_error(client, route, params):
    code, r = get(client, route, **params)
    assert code == 400
    assert r.headers["Content-Type"].startswith("application/json") and r.json["error"]


@pytest.mark.parametrize("path", [
    "static/../plugin.py", "static/%2e%2e/plugin.py", "static/..%2fplugin.py", "static/%2e%2e%2f%2e%2e%2fsummary.py",
    "static//etc/passwd", "static/", "static/nope.js", "static/.%2F..%2F__init__.py", "static/index.js%00.css",
    "plugin.py", "../../../../etc/passwd",
])
def test_static_serving_never_leaves_the_static_folder(client, path):
    response = client.get(ROUTE + path)
    assert response.status_code == 404
    assert b"RecsysDiagnostics" not in response.data and b"root:" not in response.data


def test_static_files_page_and_frontend_metadata(client, logdir):
    response = client.get(ROUTE + "static/index.js")
    assert response.status_code == 200 and "javascript" in response.headers["Content-Type"]
    assert b"export async function render" in response.data
    assert b".innerHTML" not in response.data  # every user string goes in through textContent
    for module in FRONT_END:  # the modules index.js imports, by relative path
        served = client.get(ROUTE + "static/" + module.name)
        assert "javascript" in served.headers["Content-Type"] and served.data == module.read_bytes()
    assert client.get(ROUTE + "static/style.css").headers["Content-Type"].startswith("text/css")
    page = client.get(ROUTE + "page")
    assert page.status_code == 200 and b'import("./static/index.js")' in page.data
    from tensorboard.plugins import base_plugin

    plugin = P.RecsysDiagnosticsPlugin(base_plugin.TBContext(data_provider=None))
    assert plugin.frontend_metadata().es_module_path == "/static/index.js"
    assert plugin.data_plugin_names() == ("tfrs_diag",)


def test_loader_keeps_every_record_unless_the_user_chose():
    import argparse

    flags = argparse.Namespace(samples_per_plugin={})
    P.RecsysDiagnosticsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"tfrs_diag": 0}
    flags = argparse.Namespace(samples_per_plugin={"tfrs_diag": 5, "images": 3})
    P.RecsysDiagnosticsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"tfrs_diag": 5, "images": 3}


def test_plugin_is_registered_as_a_tensorboard_entry_point():
    from tensorboard import default

    assert P.RecsysDiagnosticsLoader in default.get_dynamic_plugins()


def test_runs_hands_the_front_end_the_schema(client):
    _, r = get(client, "runs")
    sent = r.json["schema"]
    assert sent == json.loads(json.dumps(schema.frontend_schema()))
    assert sent["tags"]["alerts"] == summary.ALERT_TAG and sent["prefix"] == summary.PREFIX
    assert [f["name"] for f in sent["families"]] == list(schema.FAMILIES)
    # Every family the callbacks wrote is one the schema sends, under its prefix.
    prefixes = {f["name"]: f["prefix"] for f in sent["families"]}
    written = {fam for info in r.json["runs"].values() for fam in info["scalar_families"]}
    assert written <= set(prefixes) and all(prefixes[f] == f"tfrs_diag/{f}/" for f in written)
    assert r.json["skipped"] == []  # these logs are whole


def test_front_end_spells_no_tag_and_asks_only_for_names_the_schema_has():
    assert {p.name for p in FRONT_END} >= {"index.js", "format.js", "grouping.js", "chart.js", "dom.js"}
    js = "\n".join(p.read_text(encoding="utf-8") for p in FRONT_END)
    assert "tfrs_diag/" not in js  # not even in a comment: every tag comes from the runs route
    assert ".innerHTML" not in js and "insertAdjacentHTML" not in js and "outerHTML" not in js
    keys = set(re.findall(r"tagOf\('([a-z_]+)'\)", js))
    families = set(re.findall(r"familyPrefix\('([a-z_]+)'\)", js))
    assert keys and keys <= set(schema.TAGS), keys - set(schema.TAGS)
    assert families and families <= set(schema.FAMILIES), families - set(schema.FAMILIES)
    # Record-type names the page branches on are the schema's.
    used_types = set(re.findall(r"recordsOf\(data, '([a-z_]+)'\)", js))
    assert used_types and used_types <= set(schema.RECORD_TYPES)
    # The summary links each alert kind to the view the schema names: one the page draws.
    views = set(re.findall(r"^  \['([a-z]+)', '", open(INDEX_JS, encoding="utf-8").read(), re.M))
    assert {"alerts", "gradients", "overfitting", "fairness"} <= views
    assert set(schema.ALERT_VIEWS.values()) <= views, set(schema.ALERT_VIEWS.values()) - views


def test_plugin_tag_names_come_from_the_schema():
    source = open(P.__file__, encoding="utf-8").read()
    assert not re.search(r"[\"']tfrs_diag/", source)
    assert schema.PER_VARIABLE_PREFIXES == schema.PER_VARIABLE_PREFIXES


# ---------------------------------------------------------------- tfrs-diag report


def test_report_lists_alerts_and_tables_of_every_run(logdir, capsys):
    assert cli.main(["report", logdir]) == 0
    out = capsys.readouterr().out
    for run in ("train", "validation", "synthetic"):
        assert f"=== run {run} ===" in out
    assert "WARNING fairness_gap (user_group=" in out and "WARNING exposure_concentration" in out
    assert out.count("WARNING exploding_gradients") == 3 and "CRITICAL nonfinite_gradients (tower/dense" in out
    assert "cleared exploding_gradients (tower/bias, step 60" in out
    assert XSS_GROUP in out and "gap (max-min)" in out and "exposure Gini" in out
    assert "method: shapley" in out and XSS_FEATURE in out
    assert "Gradient health per layer" in out and "overfit" not in out.split("=== run synthetic ===")[0]


def test_report_fail_on_exits_1_while_a_severe_alert_is_firing(logdir, capsys):
    assert cli.main(["report", logdir, "--fail-on", "critical"]) == 1  # the NaN alert never cleared
    assert "still firing" in capsys.readouterr().out


def test_report_missing_or_empty_logdir(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no tfrs_diag data" in capsys.readouterr().err


# ---------------------------------------------------------------- a killed run's logs


def _killed_logs(logdir: str, foreign: bool) -> None:
    """One alert and ten gradient norms, then the event file cut short as a killed writer leaves it,
    beside a file of random bytes (and, with ``foreign``, a TFRecord file of something else)
    named like event files."""
    from tfrs_diag._keras import tf

    log = summary.AlertLog(logdir, run="train", echo=False)
    log.fire(summary.Alert("exploding_gradients", "warning", 3, 0, "tower/dense", "Lower the learning rate."))
    with summary.writer_for(logdir, "train").as_default():
        for step in range(10):
            summary.write_scalar(schema.tag("grad", "layer_norm", "tower/dense"), 1.0 + step, step)
    summary.close_writer(logdir, "train")
    run_dir = os.path.join(logdir, "train")
    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    with open(path, "rb") as f:
        whole = f.read()
    with open(path, "wb") as f:
        f.write(whole[:-7])
    with open(os.path.join(run_dir, "events.out.tfevents.123.host"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))
    if foreign:
        with tf.io.TFRecordWriter(os.path.join(run_dir, "events.out.tfevents.124.host")) as w:
            w.write(b"\xff\xff\xff not an event")


@pytest.fixture(scope="module")
def killed_logdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("killed_logs"))
    _killed_logs(path, foreign=True)
    return path


def test_read_run_reads_what_a_killed_run_left_and_lists_the_rest(killed_logdir):
    run = summary.read_run(os.path.join(killed_logdir, "train"))
    # Everything before the cut: the alert and the nine whole gradient readings (the tenth was cut).
    assert [(a["kind"], a["step"]) for a in run.alerts()] == [("exploding_gradients", 3)]
    assert [s for s, _ in run.scalars["tfrs_diag/grad/layer_norm/tower/dense"]] == list(range(9))
    reasons = dict(run.skipped)
    assert set(reasons) == {os.path.basename(p) for p in glob.glob(os.path.join(killed_logdir, "train", "*"))}
    assert reasons["events.out.tfevents.123.host"].startswith("not an event file")
    assert reasons["events.out.tfevents.124.host"].startswith("not an event file")
    (cut,) = [r for f, r in run.skipped if not f.endswith(".host")]
    assert "cut short" in cut


def test_report_of_a_killed_run_shows_what_is_readable_and_says_once_what_was_skipped(killed_logdir, capsys):
    # Before: DecodeError on the foreign file (and only stderr warnings for the others).
    assert cli.main(["report", killed_logdir]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "WARNING exploding_gradients (tower/dense, step 3" in out and "tower/dense" in out
    assert "Gradient health per layer (reading of step 8)" in out
    assert out.count("Skipped (3 unreadable parts") == 1
    for name in ("events.out.tfevents.123.host", "events.out.tfevents.124.host"):
        assert out.count(name) == 1
    assert out.count("cut short") == 1 and "cut short" not in captured.err


def test_report_of_only_unreadable_files_says_so_and_fails(tmp_path, capsys):
    with open(tmp_path / "events.out.tfevents.123.host", "wb") as f:
        f.write(b"\x01" * 100)
    assert cli.main(["report", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "events.out.tfevents.123.host: not an event file" in captured.out
    assert "no tfrs_diag data" in captured.err


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_plugin_shows_a_killed_runs_data_and_names_the_skipped_files(tmp_path, load_fast):
    logdir = str(tmp_path)
    _killed_logs(logdir, foreign=False)  # TensorBoard's own Python loader raises on a foreign record
    app = P.make_wsgi_app(logdir, load_fast=load_fast)
    try:
        c = _client(app)
        for _ in range(100):  # the Rust data server loads in the background
            code, r = get(c, "runs")
            if r.json["runs"].get("train", {}).get("records"):
                break
            time.sleep(0.1)
        skipped = {e["file"]: e for e in r.json["skipped"]}
        assert skipped["events.out.tfevents.123.host"]["reason"].startswith("not an event file")
        assert all(e["run"] == "train" and e["kind"] == "file" for e in skipped.values())
        (cut,) = [e for f, e in skipped.items() if not f.endswith(".host")]
        assert "cut short" in cut["reason"]
        code, r = get(c, "overview", run="train")
        assert code == 200
        assert [a["kind"] for a in r.json["alerts"]] == ["exploding_gradients"]
        assert r.json["gradients"]["layer_norm"]["rows"] == ["tower/dense"]
        assert len(r.json["skipped"]) == 2
    finally:
        app.close()


def test_file_checks_follow_a_growing_file(tmp_path):
    writer = summary.writer_for(str(tmp_path), "train")
    with writer.as_default():
        summary.write_scalar(schema.tag("grad", "global_norm"), 1.0, 1)
    summary.close_writer(str(tmp_path), "train")
    (path,) = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
    with open(path, "rb") as f:
        records = f.read()
    checks = R.EventFileChecks(str(tmp_path))
    assert checks.skipped() == []
    n = checks._scans[path][1].records
    with open(path, "ab") as f:
        f.write(records[:5])  # a writer in the middle of a record's header
    assert "cut short" in checks.skipped()[0]["reason"]
    with open(path, "ab") as f:
        f.write(records[5:])  # the record (and the rest) now whole
    assert checks.skipped() == [] and checks._scans[path][1].records == 2 * n


# ---------------------------------------------------------------- a real browser on a real TensorBoard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser_logdir(logdir, tmp_path_factory):
    """The demo's logs (runs demo/train and demo/validation, as `tfrs-diag demo` writes them)
    beside the runs of `logdir` (the hostile group name, the synthetic run)."""
    path = tmp_path_factory.mktemp("browser_logs")
    for run in ("train", "validation", "synthetic"):
        shutil.copytree(os.path.join(logdir, run), path / run)
    recipes.run_demo(str(path / "demo"), num_interactions=4000, epochs=2, batch_size=256, every_n_steps=2,
                     histogram_every_n_steps=10, say=lambda *_: None)
    return str(path)


def _runs_of(logdir: str) -> dict[str, summary.RunData]:
    """Every run under ``logdir`` as TensorBoard names it, read back with `read_run`."""
    return {os.path.relpath(root, logdir): summary.read_run(root) for root, _, files in os.walk(logdir)
            if any(f.startswith("events.out.tfevents.") for f in files)}


def _screenshot(locator, name: str, tmp_path) -> None:
    """A PNG in the test's folder and, when TFRS_DIAG_SCREENSHOTS names a folder, there too (docs/images)."""
    locator.screenshot(path=str(tmp_path / name))
    folder = os.environ.get("TFRS_DIAG_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(tmp_path / name, os.path.join(folder, name))


def _vertex(figure, run: "summary.RunData", tag: str, step: int) -> dict:
    """Where, relative to the figure's SVG, the line of ``tag`` draws its point at ``step``."""
    index = [s for s, v in run.scalars[tag] if math.isfinite(v)].index(step)
    return figure.locator("svg.tfd-chart").evaluate("""(root, [tag, index]) => {
        const line = [...root.querySelectorAll('polyline')].find((l) => l.dataset.tag === tag);
        const [x, y] = line.getAttribute('points').trim().split(/\\s+/)[index].split(',').map(Number);
        const box = root.getBoundingClientRect(), vb = root.viewBox.baseVal;
        return {x: x * box.width / vb.width, y: y * box.height / vb.height};
    }""", [tag, index])


@pytest.mark.slow
def test_tensorboard_shows_alerts_and_the_fairness_table_in_chromium(browser_logdir, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api")
    logdir = browser_logdir
    runs = _runs_of(logdir)
    assert {"demo/train", "demo/validation", "synthetic", "validation"} <= set(runs)
    tensorboard = shutil.which("tensorboard", path=os.path.dirname(sys.executable))
    port = _free_port()
    log = open(tmp_path / "tensorboard.log", "wb")
    # As a user starts it: without TF_USE_LEGACY_KERAS (TensorBoard imports TensorFlow before the plugin).
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.Popen([tensorboard, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        listing = None
        for _ in range(240):  # TensorBoard imports TensorFlow first: allow a minute on a busy machine
            if proc.poll() is not None:
                pytest.fail("tensorboard exited:\n" + (tmp_path / "tensorboard.log").read_text()[-3000:])
            try:
                listing = json.load(urllib.request.urlopen(base + "/data/plugins_listing", timeout=2))
                if listing.get("tfrs_diag", {}).get("enabled"):
                    break
            except OSError:
                pass
            time.sleep(0.25)
        assert listing and listing["tfrs_diag"]["enabled"], listing

        dialogs, errors = [], []
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/#tfrs_diag")
            frame_el = page.wait_for_selector("iframe", timeout=60_000)
            frame = frame_el.content_frame()
            frame.wait_for_selector("#tfd-fairness table", timeout=60_000)
            frame.wait_for_selector("#tfd-alerts table")
            # Every run is checked (a usual logdir has few), so the summary covers them all.
            frame.wait_for_function(f"document.querySelectorAll('.tfd-runs input:checked').length == {len(runs)}")
            text = frame.locator("body").inner_text()
            page.screenshot(path=str(tmp_path / "tfrs_diag.png"), full_page=True)
            frame_el.screenshot(path=str(tmp_path / "tfrs_diag_frame.png"))

            # -- the summary: one line per active problem of every run, linked to its evidence, above the views.
            rows = frame.locator("#tfd-summary tr[data-kind]")
            shown = {(r.get_attribute("data-run"), r.get_attribute("data-kind"), r.get_attribute("data-subject"))
                     for r in rows.all()}
            expected = {(run, kind, subject): since for run, data in runs.items()
                        for (kind, subject), (_, since) in _still_open(data.alerts()).items()}
            assert shown == set(expected)
            demo_active = {k for k in expected if k[0].startswith("demo/")}
            assert demo_active and {k for k in shown if k[0].startswith("demo/")} == demo_active
            severities = [schema.SEVERITY_ORDER[r.get_attribute("data-severity")] for r in rows.all()]
            assert severities == sorted(severities, reverse=True)
            for r in rows.all():
                key = (r.get_attribute("data-run"), r.get_attribute("data-kind"), r.get_attribute("data-subject"))
                assert f"step {expected[key]}" in r.inner_text()  # since when
                link = r.locator("a.tfd-look")
                view = schema.ALERT_VIEWS[key[1]]
                target = view if frame.locator(f"#tfd-{view}").count() else "alerts"
                assert link.get_attribute("href") == f"#tfd-{target}" and frame.locator(f"#tfd-{target}").count() == 1
            fired = sum(a.get("status") != "cleared" for d in runs.values() for a in d.alerts())
            cleared = sum(a.get("status") == "cleared" for d in runs.values() for a in d.alerts())
            summary_text = frame.locator("#tfd-summary").inner_text()
            assert f"{fired} alerts fired in the checked runs, {cleared} cleared" in summary_text
            top = lambda sel: frame.locator(sel).first.bounding_box()["y"]  # noqa: E731
            assert top("#tfd-summary") < top("section.tfd-section")
            # The link of the NaN alert scrolls to the gradient view.
            frame.locator('#tfd-summary tr[data-kind="nonfinite_gradients"] a.tfd-look').click()
            frame.wait_for_function(
                "Math.abs(document.getElementById('tfd-gradients').getBoundingClientRect().top) < 40")

            # Alerts of the evaluation run, the fairness table with its gap, the Lorenz view.
            assert "fairness_gap" in text and "exposure_concentration" in text
            assert "by user_group" in text and "gap (max − min)" in text
            assert "Gini" in text
            # The hostile group name is text: shown verbatim, no <img> element, no alert().
            assert XSS_GROUP in text
            assert frame.locator("img").count() == 0 and not dialogs and not errors
            # Columns whose worst group gets under 0.8 of the best are flagged (gap, ratio, worst cell).
            table = runs["validation"].records["tfrs_diag/fair/groups"][-1][1]
            rows_ = [r for r in table["user_groups"]["user_group"] if r["count"] > 0]
            ratios = [min(r[c] for r in rows_) / max(r[c] for r in rows_) for c in rows_[0]
                      if c not in ("group", "count") and max(r[c] for r in rows_) > 0]
            validation = frame.locator('#tfd-fairness .tfd-panel[data-run="validation"]')
            assert validation.locator("td.tfd-gap-flagged").count() == 3 * sum(x < 0.8 for x in ratios)
            # The all-queries baseline row holds the evaluation's accuracy at the table's step.
            step = runs["validation"].records["tfrs_diag/fair/groups"][-1][0]
            ndcg = dict(runs["validation"].scalars["tfrs_diag/rank/ndcg_at_10"])[step]
            baseline = validation.locator("tr.tfd-baseline-row td").all_inner_texts()
            headers = validation.locator("table").first.locator("th").all_inner_texts()
            assert baseline[0] == "all queries" and baseline[headers.index("count")] == str(table["queries"])
            assert float(baseline[headers.index("ndcg_at_10")]) == pytest.approx(ndcg, rel=5e-3)

            # -- labels: every figure says what a point stands for; tables how many queries they average over.
            for run in ("synthetic", "validation", "demo/validation"):
                payload = runs[run].records["tfrs_diag/fair/groups"][-1][1]
                note = frame.locator(f'#tfd-fairness .tfd-panel[data-run="{run}"] .tfd-over').first.inner_text()
                queries = f"averaged over {payload['queries']} queries"
                if "query_key" not in payload:
                    assert queries in note and "(one per" not in note, note
                else:
                    who = "test row" if payload["query_key"] is None else payload["query_key"]
                    assert f"{queries} (one per {who})" in note, note
            figures = frame.locator("figure.tfd-figure")
            assert figures.count() > 20
            assert frame.locator("figure.tfd-figure:not(:has(figcaption.tfd-over))").count() == 0
            accuracy = frame.locator('#tfd-accuracy .tfd-panel[data-run="demo/validation"] figcaption')
            accuracy = accuracy.first.inner_text()
            assert f"{runs['demo/validation'].records['tfrs_diag/fair/groups'][-1][1]['queries']} queries" in accuracy

            # -- one quantity per axis, the x unit the writer counts, log scale when the values span > 2 decades.
            epoch, probe = schema.TAGS["overfit_epoch"], schema.TAGS["overfit_probe"]
            charts = figures.evaluate_all("""(figs) => figs.map((f) => ({
                quantity: f.dataset.quantity, x: f.dataset.x, scale: f.dataset.scale,
                run: f.closest('.tfd-panel').dataset.run,
                tags: [...new Set([...f.querySelectorAll('[data-tag]')].map((l) => l.dataset.tag))],
                ylabel: f.querySelector('.tfd-y-label') && f.querySelector('.tfd-y-label').textContent,
                xlabel: f.querySelector('.tfd-axis-label') && f.querySelector('.tfd-axis-label').textContent}))""")
            log_charts = 0
            for c in charts:
                assert c["tags"], c
                assert c["ylabel"].startswith(c["quantity"]) and c["xlabel"] == c["x"], c
                assert {c["x"]} == {"epoch" if t.startswith(epoch) else "step" for t in c["tags"]}, c
                leaves = {t.rsplit("/", 1)[-1] for t in c["tags"]}
                if all(t.startswith(epoch) for t in c["tags"]):
                    assert leaves <= {"train", "val"} or len(leaves) == 1, c  # gaps and trends alone
                    assert len({t[len(epoch):].rsplit("/", 1)[0] for t in c["tags"]}) == 1, c
                if all(t.startswith(probe) for t in c["tags"]):
                    assert leaves <= {"heldout_loss", "seen_loss"} or len(leaves) == 1, c
                values = [v for t in c["tags"] for _, v in runs[c["run"]].scalars[t] if math.isfinite(v)]
                spans = bool(values) and min(values) > 0 and max(values) / min(values) > 100 and "p_worse" not in leaves
                assert (c["scale"] == "log") == spans, c
                assert ("log scale" in c["ylabel"]) == spans, c
                log_charts += spans
            assert log_charts and log_charts < len(charts)
            tags_of = {(c["run"], t): i for i, c in enumerate(charts) for t in c["tags"]}
            for run in ("synthetic", "demo/train"):
                assert tags_of[(run, epoch + "loss/train")] == tags_of[(run, epoch + "loss/val")]
                assert tags_of[(run, probe + "gap")] != tags_of[(run, probe + "heldout_loss")]
            assert tags_of[("synthetic", epoch + "loss/gap")] != tags_of[("synthetic", epoch + "loss/train")]
            # The demo's TFRS retrieval loss is a last-batch sum: OverfittingMonitor writes no epoch gap for it.
            assert ("demo/train", epoch + "loss/gap") not in tags_of
            # A loss without gap rows (as OverfittingMonitor now writes summed losses) is charted all the same.
            assert ("synthetic", epoch + "sum_loss/train") in tags_of
            assert ("synthetic", epoch + "sum_loss/gap") not in tags_of

            # -- the re-ranking trade-off: one point per knob value, accuracy up, the chosen diversity across.
            pareto = frame.locator('#tfd-tradeoff .tfd-panel[data-run="synthetic"] figure.tfd-pareto')
            assert pareto.get_attribute("data-quantity") == "ndcg@10" and pareto.get_attribute("data-x") == "coverage@10"
            points = pareto.locator("circle.tfd-pareto-point")
            assert [float(p) for p in points.evaluate_all("(ps) => ps.map((p) => p.dataset.knob)")] == [
                r["value"] for r in PARETO_ROWS]
            ys = points.evaluate_all("(ps) => ps.map((p) => Number(p.getAttribute('cy')))")
            assert ys == sorted(ys, reverse=True)  # svg y grows downwards: NDCG rises with lambda
            frame.locator('#tfd-tradeoff .tfd-panel[data-run="synthetic"] select').select_option("ild")
            assert frame.locator('#tfd-tradeoff .tfd-panel[data-run="synthetic"] figure.tfd-pareto').get_attribute(
                "data-x") == "ild@10"
            others = frame.locator("#tfd-records").inner_text()
            assert "mystery_table" in others and "pareto" not in others  # a known type now, not raw JSON

            # -- a count of 700 is "700": in the per-group table and in a chart's hover read-out.
            synthetic = frame.locator('#tfd-fairness .tfd-panel[data-run="synthetic"] table')
            headers = synthetic.locator("th").all_inner_texts()
            heavy = synthetic.locator('tr[data-group="heavy"] td').all_inner_texts()
            assert heavy[headers.index("count")] == str(COUNT)
            embed_tag = summary.tag("embed", "unique_rows", "tower/embedding")
            synthetic_panel = '.tfd-panel[data-run="synthetic"]'
            figure = frame.locator(f'#tfd-embeddings {synthetic_panel} figure:has([data-tag="{embed_tag}"])')
            assert figure.count() == 1
            figure.locator("svg.tfd-chart").hover(position=_vertex(figure, runs["synthetic"], embed_tag, COUNT_STEP))
            readout = figure.locator(".tfd-readout")
            readout.wait_for(state="visible")
            assert readout.locator(".tfd-readout-at").inner_text() == f"step {COUNT_STEP}"
            assert readout.locator(".tfd-readout-value").inner_text() == str(COUNT)
            # An epoch-indexed chart reads out epochs as Keras counts them (from 1) and the exact value.
            figure = frame.locator(f'#tfd-overfitting {synthetic_panel} figure:has([data-tag="{epoch}loss/val"])')
            figure.locator("svg.tfd-chart").hover(position=_vertex(figure, runs["synthetic"], epoch + "loss/val", 2))
            readout = figure.locator(".tfd-readout")
            readout.wait_for(state="visible")
            assert readout.locator(".tfd-readout-at").inner_text() == "epoch 3"
            assert readout.locator('.tfd-readout-line[data-series="validation"] .tfd-readout-value').inner_text() == \
                str(int(EPOCH_VAL[2]))
            # The read-out is drawn inside the figure, beside the reading.
            inside, box = readout.bounding_box(), figure.bounding_box()
            assert box["y"] <= inside["y"] and inside["y"] + inside["height"] <= box["y"] + box["height"]
            assert box["x"] <= inside["x"] and inside["x"] + inside["width"] <= box["x"] + box["width"]
            _screenshot(figure, "chart_readout.png", tmp_path)

            # -- views without data: one folded line naming them and the callback that writes each.
            without = [run for run, d in runs.items() if not any(t.startswith("tfrs_diag/overfit/") for t in d.scalars)]
            note = frame.locator("#tfd-overfitting .tfd-without").inner_text()
            assert note == f"No data in {', '.join(sorted(without))}."
            for run in sorted(runs):
                if run not in without:
                    frame.get_by_label(run, exact=True).uncheck()
            frame.wait_for_selector('#tfd-empty-views li[data-view="overfitting"]', state="attached")
            assert frame.locator("#tfd-overfitting").count() == 0
            hint = frame.locator('#tfd-empty-views li[data-view="overfitting"]').text_content()
            assert "under tfrs_diag/overfit/" in hint
            assert frame.locator(".tfd-empty-views").count() == 1
            # Runs with nothing active: the summary says so in one line, with what fired and cleared.
            for run in ("train", "validation"):
                frame.get_by_label(run, exact=True).uncheck()
            frame.wait_for_selector("#tfd-summary.tfd-summary-ok")
            left = [run for run in runs if frame.get_by_label(run, exact=True).is_checked()]
            assert left == ["demo/validation"] and not _still_open(runs["demo/validation"].alerts())
            fired = sum(a.get("status") != "cleared" for a in runs["demo/validation"].alerts())
            cleared = sum(a.get("status") == "cleared" for a in runs["demo/validation"].alerts())
            assert fired and frame.locator("#tfd-summary").inner_text() == (
                f"Nothing needs attention: no active alert in the checked runs ({fired} alert{'s' * (fired > 1)} "
                f"fired, {cleared} cleared).")
            _screenshot(frame.locator("#tfd-summary"), "summary_nothing_active.png", tmp_path)

            # The stand-alone page route shows the same dashboard; its views are the docs' screenshots
            # (the demo's runs and the synthetic one: docs/images when TFRS_DIAG_SCREENSHOTS says so).
            page.goto(base + "/data/plugin/tfrs_diag/page")
            page.wait_for_selector("#tfd-alerts table")
            assert "Recsys diagnostics" in page.locator("body").inner_text()
            page.screenshot(path=str(tmp_path / "page_full.png"), full_page=True)
            for run in ("train", "validation"):
                page.get_by_label(run, exact=True).uncheck()
            page.wait_for_function("!document.querySelector('.tfd-panel[data-run=\"validation\"]') && "
                                   "document.querySelector('#tfd-alerts table')")
            page.mouse.move(0, 0)
            _screenshot(page, "dashboard_top.png", tmp_path)
            for section in page.locator("section").all():
                view = section.get_attribute("id")[len("tfd-"):]
                if view not in ("records", "scalars", "skipped"):  # JSON and leftovers: not worth a picture
                    _screenshot(section, f"view_{view}.png", tmp_path)
            # A run that does not load is named once, in the summary, and drawn nowhere.
            page.route("**/overview?run=synthetic", lambda route: route.fulfill(
                status=500, content_type="application/json", body=json.dumps({"error": "disk on fire"})))
            page.goto(base + "/data/plugin/tfrs_diag/page")
            page.wait_for_selector("#tfd-summary .tfd-failed")
            assert "Could not load synthetic (disk on fire)" in page.locator("#tfd-summary").inner_text()
            assert page.locator('.tfd-panel[data-run="synthetic"]').count() == 0
            assert page.locator('#tfd-summary tr[data-run="synthetic"]').count() == 0
            assert page.locator('#tfd-summary tr[data-run="demo/train"]').count() == len(
                [k for k in expected if k[0] == "demo/train"])
            page.unroute("**/overview?run=synthetic")
            browser.close()
        assert (tmp_path / "tfrs_diag.png").stat().st_size > 10_000
        assert (tmp_path / "view_summary.png").exists() and (tmp_path / "view_overfitting.png").exists()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

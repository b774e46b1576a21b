"""The "Recsys diagnostics" TensorBoard plugin: every route through a WSGI client, with
both of TensorBoard's loaders, on logs of the real callbacks; `tfrs-diag report`; and a
real browser on a real `tensorboard` process."""

from __future__ import annotations

import glob
import json
import math
import os
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
INDEX_JS = os.path.join(os.path.dirname(P.__file__), "static", "index.js")
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


def _synthetic_logs(logdir: str) -> None:
    """A run with what the other callbacks write: overfitting curves, a NaN gradient norm,
    three alerts at one step, an attribution table and a record type the plugin does not know."""
    writer = summary.writer_for(logdir, "synthetic")
    with writer.as_default():
        for step in range(0, 100, 5):
            for layer, scale in (("tower/dense", 1.0), ("tower/embedding", 0.01)):
                value = float("nan") if (step == NAN_STEP and layer == "tower/dense") else scale * (1 + step)
                summary.write_scalar(summary.tag("grad", "layer_norm", layer), value, step)
            summary.write_scalar(summary.tag("overfit", "gap", "loss"), 0.01 * step, step)
            summary.write_scalar(summary.tag("overfit", "probe", "train_recall"), 0.5 + 0.004 * step, step)
        summary.write_record(summary.tag("explain", "attributions"), "attribution_table", {
            "method": "shapley", "group_names": ["user_id", XSS_FEATURE, "item_category"],
            "examples": ["u1 -> i9", "u2 -> i3"], "values": [[0.5, -0.25, 0.125], [0.0, 1.5, -2.0]],
            "base_value": 3.5, "outputs": [3.875, 3.0], "epoch": 1}, 90)
        summary.write_record(summary.tag("explain", "mystery"), "mystery_table", {"answer": 42, "who": XSS_GROUP}, 90)
    log = summary.AlertLog(logdir, run="synthetic", echo=False)
    for subject in ("tower/dense", "tower/embedding", "tower/bias"):
        log.fire(summary.Alert("exploding_gradients", "warning", 50, 0, subject, f"{subject} exploded."))
    log.fire(summary.Alert("nonfinite_gradients", "critical", NAN_STEP, 0, "tower/dense", "NaN here."))
    log.clear("exploding_gradients", "tower/bias", 60, 0)
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
                     ("exploding_gradients", "tower/bias", 60, "cleared")]


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
    assert overfit == {"tfrs_diag/overfit/gap/loss", "tfrs_diag/overfit/probe/train_recall"}
    assert set(r.json["records"]) == {"attribution_table", "mystery_table"}


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
    assert code == 200 and len(r.json["alerts"]) == 5


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
    js = open(INDEX_JS, encoding="utf-8").read()
    assert "tfrs_diag/" not in js  # not even in a comment: every tag comes from the runs route
    keys = set(re.findall(r"tagOf\('([a-z_]+)'\)", js))
    families = set(re.findall(r"familyPrefix\('([a-z_]+)'\)", js))
    assert keys and keys <= set(schema.TAGS), keys - set(schema.TAGS)
    assert families and families <= set(schema.FAMILIES), families - set(schema.FAMILIES)
    # Record-type names the page branches on are the schema's.
    used_types = set(re.findall(r"recordsOf\(data, '([a-z_]+)'\)", js))
    assert used_types and used_types <= set(schema.RECORD_TYPES)


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


@pytest.mark.slow
def test_tensorboard_shows_alerts_and_the_fairness_table_in_chromium(logdir, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api")
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

        dialogs = []
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(base + "/#tfrs_diag")
            frame_el = page.wait_for_selector("iframe", timeout=60_000)
            frame = frame_el.content_frame()
            frame.wait_for_selector("#tfd-fairness table", timeout=60_000)
            frame.wait_for_selector("#tfd-alerts table", timeout=10_000)
            text = frame.locator("body").inner_text()
            page.screenshot(path=str(tmp_path / "tfrs_diag.png"), full_page=True)
            frame_el.screenshot(path=str(tmp_path / "tfrs_diag_frame.png"))
            # Alerts of the evaluation run, the fairness table with its gap, the Lorenz view.
            assert "fairness_gap" in text and "exposure_concentration" in text
            assert "by user_group" in text and "gap (max − min)" in text
            assert "Gini" in text
            # The hostile group name is text: shown verbatim, no <img> element, no alert().
            assert XSS_GROUP in text
            assert frame.locator("img").count() == 0 and not dialogs
            # Columns whose worst group gets under 0.8 of the best are flagged (gap, ratio, worst cell).
            table = summary.read_run(os.path.join(logdir, "validation")).records["tfrs_diag/fair/groups"][-1][1]
            rows = [r for r in table["user_groups"]["user_group"] if r["count"] > 0]
            ratios = [min(r[c] for r in rows) / max(r[c] for r in rows) for c in rows[0] if c not in ("group", "count")
                      if max(r[c] for r in rows) > 0]
            assert frame.locator("#tfd-fairness td.tfd-gap-flagged").count() == 3 * sum(x < 0.8 for x in ratios)
            # A view without data in any run says which callback writes it.
            assert "No overfitting curves yet" not in text  # the synthetic run has them
            assert "No data in train, validation." in frame.locator("#tfd-overfitting").inner_text()
            frame.get_by_label("synthetic").uncheck()  # leaves runs without overfitting curves
            frame.wait_for_selector("#tfd-overfitting .tfd-empty", timeout=30_000)
            assert "under tfrs_diag/overfit/" in frame.locator("#tfd-overfitting").inner_text()
            # The stand-alone page route shows the same dashboard.
            page.goto(base + "/data/plugin/tfrs_diag/page")
            page.wait_for_selector("#tfd-alerts table", timeout=30_000)
            assert "Recsys diagnostics" in page.locator("body").inner_text()
            browser.close()
        assert (tmp_path / "tfrs_diag.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

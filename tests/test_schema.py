"""The summary schema: one owner of the tag names, the metric families, the alert line and the decoder."""

from __future__ import annotations

import pathlib
import re

import pytest

from tfrs_diag import summary
from tfrs_diag.summary import alerts, events, schema
from tfrs_diag.callbacks import beyond_accuracy

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_docs_tag_table_is_the_schemas():
    docs = (REPO / "docs" / "plugin.md").read_text()
    assert schema.markdown_tag_table() in docs
    # ... and every tag the table names is one a reader can look up.
    for spec in schema.TAG_TABLE:
        assert spec.tag.startswith(schema.PREFIX) and schema.TAGS[spec.key] == spec.tag
        assert schema.family_of(spec.tag) in (*schema.FAMILIES, "alerts")


def test_summary_keeps_the_names_the_callbacks_import():
    for name in ("tag", "clean_name", "Alert", "AlertLog", "RunData", "read_run", "writer_for", "write_record",
                 "record_metadata", "expand_alert_records", "ALERT_TAG", "PREFIX", "PLUGIN_NAME", "FAMILIES",
                 "ALERT_KINDS", "SEVERITIES"):
        assert hasattr(summary, name), name
    assert summary.Alert is schema.Alert and summary.read_run is events.read_run


@pytest.mark.parametrize("metric", ["recall_at_10", "ndcg_at_100", "mrr_at_5", "hit_rate_at_10", "exposure_gini_at_10",
                                    "exposure_gap_at_10", "pop_rsp_at_10", "pop_reo_at_10", "user_group/ndcg_at_10_gap",
                                    "coverage_at_10", "novelty_at_10", "ild_at_10", "composite"])
def test_metric_family_is_what_beyond_accuracy_writes(metric):
    # BeyondAccuracy still has its own copy (callbacks are being rewritten): they must agree until it uses the schema's.
    family = schema.metric_family(metric)
    assert family in schema.FAMILIES
    if hasattr(beyond_accuracy, "_family"):
        assert beyond_accuracy._family(metric) == family


def test_one_alert_line_for_the_report_the_demo_and_str():
    alert = schema.Alert("fairness_gap", "warning", 12, 1, "user_group=new", "Reweight them.")
    line = schema.format_alert(alert.to_dict())
    assert str(alert) == "[tfrs_diag] " + line
    assert line == "WARNING fairness_gap (user_group=new, step 12, epoch 2): Reweight them."  # epochs from 1
    # The report and the demo print through the schema's formatter, not a copy of their own.
    for module in ("views/report.py", "cli.py", "recipes.py"):
        text = (REPO / "tfrs_diag" / module).read_text()
        assert "def format_alert" not in text and "severity\", \"\")).upper()" not in text


def test_no_module_but_the_schema_spells_a_tag():
    modules = [p for p in (REPO / "tfrs_diag").rglob("*.py") if p != REPO / "tfrs_diag" / "summary" / "schema.py"]
    assert len(modules) > 50
    for module in modules:
        lines = module.read_text().splitlines()
        code = [line for line in lines if not line.strip().startswith("'tfrs_diag/")]  # doctest output
        assert not [line for line in code if re.search(r"[\"'f]tfrs_diag/", line)], module


def test_decode_record_refuses_what_is_not_a_json_object():
    assert schema.decode_record(schema.encode_record("alert", {"a": float("nan")}))["a"] == "nan"
    for bad in (b"[1, 2]", b"\xff\xfe", b"", "null"):
        with pytest.raises(schema.RecordError):
            schema.decode_record(bad)


def test_read_run_lists_a_cut_short_file_and_keeps_its_whole_records(tmp_path):
    writer = summary.writer_for(str(tmp_path), "train")
    with writer.as_default():
        for step in range(5):
            summary.write_scalar(schema.TAGS["grad_global_norm"], float(step), step)
    summary.close_writer(str(tmp_path), "train")
    (path,) = (tmp_path / "train").glob("events.out.tfevents.*")
    whole = path.read_bytes()
    for cut in (1, 4, 13):  # inside the data CRC, the data, the header
        path.write_bytes(whole[:-cut])
        run = events.read_run(str(tmp_path / "train"))
        assert [s for s, _ in run.scalars[schema.TAGS["grad_global_norm"]]] == [0, 1, 2, 3]
        assert len(run.skipped) == 1 and "cut short" in run.skipped[0][1]
    path.write_bytes(whole)
    assert events.read_run(str(tmp_path / "train")).skipped == []


def test_every_alert_kind_links_to_a_view_and_charts_name_schema_tags():
    assert set(schema.ALERT_VIEWS) == set(schema.ALERT_KINDS)
    assert all(isinstance(v, str) and v for v in schema.ALERT_VIEWS.values())
    sent = schema.frontend_schema()
    assert sent["alert_views"] == schema.ALERT_VIEWS and sent["alert_kinds"] == list(schema.ALERT_KINDS)
    # Chart rules group tags the schema names; x units are what the writers count.
    for rule in schema.CHART_RULES:
        assert any(rule.prefix.startswith(s.tag) for s in schema.TAG_TABLE if s.is_prefix), rule.prefix
        # One chart per {name} under the prefix, or one chart for the prefix's own tags.
        assert rule.series and "{name}" in rule.quantity or rule.prefix in schema.TAGS.values()
    assert schema.x_unit(schema.TAGS["overfit_epoch"] + "loss/train") == "epoch"
    assert schema.x_unit(schema.TAGS["overfit_probe"] + "gap") == "step"
    assert {s["x"] for s in sent["tag_specs"]} == {"step", "epoch"}
    assert all(f["over"] for f in sent["families"])  # every family's figures say what a point stands for


def test_active_alerts_are_the_latest_record_per_kind_and_subject_unless_cleared():
    def alert(kind, subject, step, status="firing", severity="warning"):
        return {"kind": kind, "subject": subject, "step": step, "epoch": step // 10, "status": status,
                "severity": severity}

    history = [alert("a", "x", 1), alert("a", "x", 2, "cleared"), alert("a", "x", 5), alert("a", "x", 7),
               alert("b", "y", 3, severity="critical"), alert("c", "z", 4), alert("c", "z", 6, "cleared")]
    active = alerts.active_alerts(history)
    assert [(a["kind"], a["since_step"], a["step"]) for a in active] == [("b", 3, 3), ("a", 5, 7)]
    assert active[1]["since_epoch"] == 0 and alerts.active_alerts([]) == []

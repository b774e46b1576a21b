"""The labelled scenario suite: each planted problem fires its alert, the healthy run fires none.

The scenarios (tests/overfitting_scenarios.py) run once per session (about 35 s on two
cores); each test below asserts on one of them.
"""

import pathlib
import re

import numpy as np
import pytest

import overfitting_scenarios as sc
from tfrs_diag import summary

pytestmark = pytest.mark.slow
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return sc.run_all(str(tmp_path_factory.mktemp("scenarios")))


def test_healthy_run_fires_no_alert_of_any_kind(results):
    r = results["healthy"]
    assert r.alerts == []
    # It did train, and every diagnostic ran: probes, epoch gaps, both embedding tables.
    assert r.history["loss"][-1] < r.history["loss"][0]
    assert len(r.monitor.readings) > 10 and len(r.monitor.embedding_stats) == 2 * 4
    assert {s["table"] for s in r.monitor.embedding_stats} == {"user_model_embedding_probe/embeddings",
                                                              "item_model_embedding_probe/embeddings"}


def test_classic_overfitting_fires_after_the_best_epoch_and_restore_best_puts_its_weights_back(results):
    r = results["classic_overfitting"]
    alert = r.first("overfitting")
    assert alert is not None and alert.subject == "val_loss"
    best = r.monitor.best_epoch
    val = r.history["val_loss"]
    assert best == int(np.argmin(val[:alert.epoch + 1]))
    # Fired once the window of 5 epochs shows the rise, and fit stopped right there.
    assert best < alert.epoch <= best + 5
    assert len(val) == alert.epoch + 1 < 20
    assert all(b > a for a, b in zip(val[best:alert.epoch], val[best + 1:alert.epoch + 1]))
    # restore_best: the final weights are the best epoch's, not the last epoch's.
    assert r.monitor.restored_epoch == best
    final, epochs = r.extra["final_weights"], r.extra["epoch_weights"]
    for got, want in zip(final, epochs[best]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(got, last) for got, last in zip(final, epochs[-1]))
    assert r.fired("one_epoch_overfitting") == [] or r.first("one_epoch_overfitting").epoch >= 1


def test_one_epoch_overfitting_fires_early_in_the_second_epoch(results):
    r = results["one_epoch_overfitting"]
    alert = r.first("one_epoch_overfitting")
    assert alert is not None and alert.epoch == 1
    spe = r.extra["steps_per_epoch"]
    assert spe < alert.step <= spe + spe // 2  # within the first half of epoch 2
    ev = alert.evidence
    assert ev["heldout_after"] > 1.1 * ev["heldout_before"] and ev["seen_after"] < ev["seen_before"]
    # The jump is real: held-out loss at that reading is above every reading of epoch 1's second half.
    first_epoch = [x["heldout"] for x in r.monitor.readings if x["epoch"] == 0 and x["step"] > spe // 2]
    assert ev["heldout_after"] > max(first_epoch)
    assert r.fired("overfitting") == []  # no validation data: the epoch-level test was off


def _first_judged_step(monitor) -> int:
    """Step of the first reading with min_readings readings from the end of epoch 0 on.

    (Changed with the Underfitting detector: the loss at the trivial baseline for 3
    readings fires, where the old rule waited for 2 x 5 readings of plateau.)"""
    end_of_first = [x for x in monitor.readings if x["epoch"] == 0][-1]
    judged = [end_of_first] + [x for x in monitor.readings if x["epoch"] >= 1]
    return judged[monitor.detectors["underfitting"].min_readings - 1]["step"]


def test_underfitting_fires_on_a_plateau_near_the_trivial_baseline(results):
    r = results["underfitting"]
    alert = r.first("underfitting")
    # The loss is flat from the start: it fires at the first reading the test can judge.
    assert alert is not None and alert.step == _first_judged_step(r.monitor)
    assert alert.evidence["loss"] > 0.99 * alert.evidence["baseline"]
    assert {a.kind for a in r.fired()} == {"underfitting"}


@pytest.mark.parametrize("name", ["underfitting_rating", "underfitting_retrieval"])
def test_underfitting_at_lr_1e6_fires_in_the_second_epoch_at_the_default_cadence(results, name):
    r = results[name]
    alert = r.first("underfitting")
    assert alert is not None and alert.epoch == 1 and {a.kind for a in r.fired()} == {"underfitting"}
    per_epoch = sum(1 for x in r.monitor.readings if x["epoch"] == 0) - 1  # minus the reading before training
    assert per_epoch >= 8
    if name == "underfitting_rating":  # the TFRS Ranking task's label was found: a mean predictor baseline
        assert alert.evidence["baseline"] == r.monitor.baselines["mean_predictor"]
        assert alert.evidence["ratio_to_baseline"] > 5
    else:  # a TFRS retrieval loss is a sum: compared per example with log(probe size)
        assert r.monitor.baselines["uniform_softmax"] == pytest.approx(np.log(256))
        assert alert.evidence["loss"] == pytest.approx(np.log(256), rel=0.01)


def test_an_overfitting_run_with_only_a_held_out_probe_is_not_called_underfitting(results):
    r = results["overfitting_heldout_probe_only"]
    assert {a.kind for a in r.fired()} == {"overfitting"}


def test_one_epoch_overfitting_of_an_mse_hashed_cross_at_the_default_cadence(results):
    r = results["one_epoch_overfitting_mse_cross"]
    alert = r.first("one_epoch_overfitting")
    spe = r.extra["steps_per_epoch"]
    assert alert is not None and alert.epoch == 1 and spe < alert.step <= spe + spe // 2
    assert alert.evidence["seen_after"] < alert.evidence["seen_before"]


def test_a_diverging_run_reports_its_gradients_and_pauses_the_monitor(results):
    r = results["diverging_embeddings"]
    assert {a.kind for a in r.fired()} == {"exploding_gradients", "nonfinite_gradients"}
    assert sum("NaN/Inf since step" in n for n in r.monitor.notes) == 1


def test_collapse_fires_for_the_table_behind_a_one_unit_bottleneck(results):
    r = results["collapse"]
    alert = r.first("embedding_collapse")
    assert alert is not None and alert.subject == "item_embedding_probe/embeddings"
    assert alert.evidence["information_abundance"] < 0.1 * 32
    # The healthy two-tower's tables keep an abundance far above the threshold.
    healthy = results["healthy"].monitor.embedding_stats
    assert min(s["abundance_ratio"] for s in healthy) > 2 * r.monitor.detectors["embedding_collapse"].collapse_ratio


def test_memorization_fires_when_rare_rows_outgrow_popular_ones(results):
    r = results["memorization"]
    alert = r.first("embedding_memorization")
    assert alert is not None and alert.subject == "item_embedding_probe/embeddings"
    stats = [s for s in r.monitor.embedding_stats if s["epoch"] <= alert.epoch]
    # Fired at the first epoch where the least-used quarter's mean norm passed 2x the most-used one's.
    ratio = r.monitor.detectors["embedding_memorization"].memorization_ratio
    assert [s["tail_head_norm_ratio"] > ratio for s in stats] == \
        [False] * (len(stats) - 1) + [True]
    assert stats[-1]["bucket_norms"][0] > stats[-2]["bucket_norms"][0]
    # The healthy two-tower's rare rows stay below its popular rows' norm times the threshold.
    assert max(s["tail_head_norm_ratio"] for s in results["healthy"].monitor.embedding_stats) < 2.0


def test_exploding_gradients_fire_with_the_monitor_attached(results):
    r = results["exploding_gradients"]
    alert = r.first("exploding_gradients")
    assert alert is not None and 31 < alert.step <= 36 and alert.subject.startswith("linear/")
    assert r.fired("underfitting") == [] and r.fired("one_epoch_overfitting") == []


def test_vanishing_gradients_fire_and_feed_the_underfitting_detector(results):
    r = results["vanishing_gradients"]
    vanishing = {a.subject for a in r.fired("vanishing_gradients")}
    assert "d0" in vanishing and "out" not in vanishing
    under = r.first("underfitting")
    assert under is not None and under.step == _first_judged_step(r.monitor)
    assert "d0" in under.evidence["stalled_layers"]


def test_alerts_are_written_to_the_event_files(results, tmp_path):
    r = results["classic_overfitting"]
    run = summary.read_run(str(pathlib.Path(r.monitor.log_dir) / "train"))
    kinds = [a["kind"] for a in run.alerts()]
    assert kinds.count("overfitting") == 1
    assert any(t.startswith("tfrs_diag/overfit/epoch/trend/val_loss/") for t in run.scalars)
    assert "tfrs_diag/overfit/probe/gap" in run.scalars


def test_the_detection_table_in_the_docs_matches_what_fires(results):
    text = DOC.read_text()
    block = text[text.index(sc.TABLE_BEGIN):text.index(sc.TABLE_END)]
    rows = {line.split("|")[1].strip(): line.split("|") for line in block.splitlines()[3:] if line.startswith("|")}
    assert "Recall: " in block and "False alarms: " in block
    assert set(rows) == set(results)
    for name, r in results.items():
        documented = set(re.findall(r"`(\w+)`", rows[name][4]))
        assert documented == {a.kind for a in r.fired()}, name

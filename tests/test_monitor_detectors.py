"""The monitor's detectors on series recorded from real MovieLens-100k runs (tests/data/series).

Each recorded run (tests/data/series/record_monitor.py) probed every 4 steps; a cadence
is emulated by keeping the readings at multiples of it plus each epoch's last one, as
`OverfittingMonitor` takes them. Where a case was missed or misfired by the rules before
the detectors, the old rule is replayed beside the new one (``_old_*``) to show the
difference on the same numbers.
"""

import json
import math
import pathlib

import pytest

from tfrs_diag import detectors as D
from tfrs_diag.stats import trends as T

SERIES = pathlib.Path(__file__).parent / "data" / "series"


def _load(name):
    return json.loads((SERIES / f"monitor_{name}.json").read_text())


def _per_example(run, value):
    if value is None or run["loss_reduction"] != "sum":
        return value
    return value / run["probe_size"]


def _readings(run, every):
    """The recorded readings a monitor probing every ``every`` steps would have taken."""
    out = []
    for i, r in enumerate(run["readings"]):
        last_of_epoch = i + 1 == len(run["readings"]) or run["readings"][i + 1]["epoch"] != r["epoch"]
        if int(r["step"]) % every == 0 or last_of_epoch:
            out.append({"step": int(r["step"]), "epoch": int(r["epoch"]), "last": last_of_epoch,
                        "seen": _per_example(run, r["seen"]), "heldout": _per_example(run, r["heldout"])})
    return out


def _baseline(run):
    """The callback's trivial baseline per example: the lowest of untrained, mean predictor, uniform softmax."""
    first = _per_example(run, run["readings"][0]["seen"])
    candidates = [first] + [run[k] for k in ("mean_predictor_seen", "uniform_softmax_per_example") if k in run]
    return min(candidates)


def _underfitting(run, every, detector=None, seen=True):
    d = detector or D.Underfitting()
    findings = []
    for r in _readings(run, every):
        findings += [(r["step"], r["epoch"], f) for f in d.update(
            r["step"], r["epoch"], seen=r["seen"] if seen else None, heldout=r["heldout"], baseline=_baseline(run))]
    return findings


def _old_underfitting_steps(run, every, seen=True, window=5, tolerance=0.01, ratio=0.95):
    """Steps where the rule before the detectors fired: 2 x 5 readings from the end of epoch 0 on,
    a plateau (< 1% better on the window before) and the loss above 0.95 x the untrained baseline."""
    readings = _readings(run, every)
    key = "seen" if seen else "heldout"
    baseline = readings[0][key]
    out = []
    for n in range(1, len(readings) + 1):
        now = readings[:n]
        if now[-1]["epoch"] < 1:
            continue
        warmup = max(sum(1 for r in now if r["epoch"] < 1) - 1, 0)
        series = [r[key] for r in now[warmup:] if math.isfinite(r[key])]
        if len(series) >= 2 * window and T.relative_improvement(series, window) < tolerance \
                and series[-1] > ratio * baseline:
            out.append(now[-1]["step"])
    return out


# ---------------------------------------------------------------- underfitting


def test_underfitting_of_a_rating_model_at_lr_1e6_fires_against_the_mean_predictor():
    run = _load("rating_lr1e6")
    # The recorded numbers: the MSE stays ~11x a mean predictor's, all along.
    assert run["readings"][-1]["seen"] > 10 * run["mean_predictor_seen"]
    # At the new default cadence (79 steps per epoch -> every 9 steps; recorded every 4, so every 8 here)
    # it fires in the first half of epoch 2.
    (step, epoch, f), = [x for x in _underfitting(run, every=8) if x[2].action == "fire"]
    assert epoch == 1 and step <= 79 + 40  # within the first half of epoch 2
    assert f.evidence["baseline"] == pytest.approx(run["mean_predictor_seen"])
    assert f.evidence["ratio_to_baseline"] > 10 and "11.0x a trivial predictor" in f.message
    # The old rule never fired at the old default cadence (1 reading per epoch); at every 8 steps it
    # needed 10 readings after the first epoch, so it fired 4 readings later.
    assert _old_underfitting_steps(run, every=100) == []
    assert _old_underfitting_steps(run, every=8)[0] == 144


def test_underfitting_of_a_retrieval_model_at_lr_1e6_fires_at_the_uniform_softmax():
    run = _load("retrieval_lr1e6")
    uniform = math.log(run["probe_size"])
    assert run["uniform_softmax_per_example"] == pytest.approx(uniform)
    # The recorded per-example loss never leaves log(256): a uniform softmax.
    assert all(abs(r["seen"] / 256 - uniform) < 2e-3 for r in run["readings"])
    fired = [x for x in _underfitting(run, every=8) if x[2].action == "fire"]
    assert len(fired) == 1 and fired[0][1] == 1
    assert fired[0][2].evidence["baseline"] == pytest.approx(min(uniform, run["readings"][0]["seen"] / 256))
    assert _old_underfitting_steps(run, every=100) == []


def test_no_underfitting_on_an_overfitting_retrieval_run_from_either_probe():
    run = _load("retrieval_overfit")
    per_ex = [r["heldout"] / 256 for r in run["readings"] if r["epoch"] >= 1]
    assert min(per_ex) > math.log(256)  # the held-out loss of this overfitting model is above uniform...
    assert run["readings"][-1]["seen"] / 256 < 0.85 * math.log(256)  # ...while it fits its training data
    for seen in (True, False):  # no underfitting, with or without a training probe
        assert _underfitting(run, every=8, seen=seen) == []
    # The old rule fired on the held-out series (a plateau above 0.95 x the untrained loss).
    assert _old_underfitting_steps(run, every=8, seen=False) != []


def test_underfitting_is_vetoed_while_the_held_out_loss_falls_steadily_below_the_baseline():
    d = D.Underfitting(min_readings=2)
    for i in range(12):  # the training probe sits at the baseline, the held-out one falls well below it
        out = d.update(10 * i, i // 4, seen=1.0, heldout=0.9 - 0.02 * i, baseline=1.0)
        assert out == []


def test_stalled_gradients_count_only_with_a_plateau_and_clear_when_training_moves():
    d = D.Underfitting(plateau_window=2)
    series = [2.0, 1.5, 1.2, 1.19, 1.19, 1.19, 1.19]
    actions = [[f.action for f in d.update(i, 1, seen=v, baseline=3.0, stalled=["d0"])] for i, v in enumerate(series)]
    assert actions[:5] == [[]] * 5 and actions[5] == ["fire"]  # the first plateau of 2 x 2 readings
    assert [f.action for f in d.update(9, 1, seen=1.0, baseline=3.0, stalled=[])] == ["clear"]


# ---------------------------------------------------------------- one-epoch overfitting


def _one_epoch(run, every, detector):
    findings, start, last_step = [], 0, 0
    baseline = _baseline(run)
    for r in _readings(run, every):
        findings += [(r["step"], r["epoch"], f) for f in detector.update(
            r["step"], r["epoch"], r["heldout"], r["seen"], r["step"] - start, baseline)]
        if r["last"]:
            detector.end_epoch(r["epoch"], r["step"], r["heldout"], r["seen"], r["step"] - start)
            start = r["step"]
    return findings


def test_one_epoch_overfitting_of_an_mse_hashed_cross_is_seen_in_the_second_epoch():
    run = _load("rating_cross")
    fired = [x for x in _one_epoch(run, 8, D.OneEpochOverfitting()) if x[2].action == "fire"]
    step, epoch, f = fired[0]
    assert epoch == 1 and 79 < step <= 79 + 40  # within the first half of epoch 2
    ev = f.evidence
    # The rise is under 10% of the loss (an MSE floor of ~0.95) but loses over 25% of the gain on the
    # mean predictor, while the training probe's loss falls.
    assert ev["relative_rise"] < 0.1 and ev["share_of_gain_lost"] > 0.25 and ev["seen_after"] < ev["seen_before"]
    # The old rule (relative rise > 10% only) misses epoch 2 at this cadence and at the old default.
    old = D.OneEpochOverfitting(excess_threshold=float("inf"))
    assert [x for x in _one_epoch(run, 8, old) if x[2].action == "fire" and x[1] == 1] == []
    assert [x for x in _one_epoch(run, 100, D.OneEpochOverfitting(excess_threshold=float("inf")))
            if x[2].action == "fire"] == []


@pytest.mark.parametrize("name", ["rating_lr1e6", "retrieval_lr1e6"])
def test_one_epoch_overfitting_stays_quiet_on_runs_that_barely_move(name):
    assert _one_epoch(_load(name), 8, D.OneEpochOverfitting()) == []


# ---------------------------------------------------------------- non-finite pause


def test_a_diverging_run_pauses_the_other_detectors_instead_of_reporting_collapse():
    run = _load("diverging")
    nonfinite_step = min(a["step"] for a in run["gradient_alerts"] if a["kind"] == "nonfinite_gradients")
    # What the old rules raised in this run, at the callback's defaults: collapse of both tables.
    assert {a["kind"] for a in run["alerts_at_defaults"]} == {"embedding_collapse"}
    pause, notes, collapse, paused_collapse = D.NonFinitePause("OverfittingMonitor"), [], D.EmbeddingCollapse(), []
    readings = {r["step"]: r for r in _readings(run, 4)}
    for s in run["embedding_stats"]:
        r = readings[s["step"]]
        note = pause.update(D.all_finite([r["seen"], r["heldout"]]) and s["step"] < nonfinite_step, s["step"])
        notes += [note] if note else []
        found = collapse.update(s["table"], s["information_abundance"], 16, s["used_rows"])
        if not pause.paused:
            paused_collapse += found
    assert collapse.firing != set()  # unpaused, the rule fires on the exploded tables
    assert paused_collapse == []  # paused: nothing
    assert len(notes) == 1 and "NaN/Inf since step 237" in notes[0]


# ---------------------------------------------------------------- epoch trend, tables, fairness


def test_overfitting_trend_on_the_recorded_retrieval_run_fires_after_the_best_epoch():
    run = _load("retrieval_overfit")
    d = D.Overfitting()
    fired = [(e, f) for e, logs in enumerate(run["epoch_logs"]) for f in d.update(logs, best_epoch=1)
             if f.action == "fire"]
    val = run["history"]["val_loss"]
    assert int(min(range(len(val)), key=val.__getitem__)) == 1
    assert [e for e, _ in fired] == [5]  # epochs 1-5 rise but one: p = 0.043 at the first full window
    assert fired[0][1].evidence["p_worse"] < 0.05


def test_embedding_detectors_stay_quiet_on_the_healthy_tables_of_the_retrieval_run():
    run = _load("retrieval_overfit")
    collapse, dead, memo = D.EmbeddingCollapse(), D.DeadEmbeddingRows(), D.EmbeddingMemorization()
    fired = []
    for s in run["embedding_stats"]:
        fired += collapse.update(s["table"], s["information_abundance"], 64, s["used_rows"])
        fired += dead.update(s["table"], s["dead_row_fraction"])
        fired += memo.update(s["table"], s["bucket_norms"])
    # The user table's rare rows start at 2.26x the popular rows' norm, but shrink: no memorisation.
    assert run["embedding_stats"][0]["tail_head_norm_ratio"] > 2.0
    assert [f for f in fired if f.action == "fire"] == []


def _old_fairness(tables, ratio=0.8, metric="ndcg_at_10", firing=None):
    """The rule before the detectors: subject "<key>=<worst group>", cleared only when that group's gap closes."""
    firing = set() if firing is None else firing
    for key, rows in tables.items():
        present = [r for r in rows if r["count"] > 0 and metric in r]
        best, worst = max(present, key=lambda r: r[metric]), min(present, key=lambda r: r[metric])
        subject = f"{key}={worst['group']}"
        if worst[metric] / best[metric] < ratio:
            firing.add(subject)
        else:
            firing.discard(subject)
    return firing


def test_fairness_gap_keeps_one_alert_per_key_and_clears_it_when_the_gap_closes():
    run = _load("retrieval_overfit")
    d = D.FairnessGap("ndcg_at_10")
    old: set = set()
    history = []
    for e in run["evaluations"]:
        history += d.update(e["tables"])
        _old_fairness(e["tables"], firing=old)
        assert len(d.firing) <= len(e["tables"])  # at most one firing subject per user-group key
    fires = [f for f in history if f.action == "fire"]
    assert len({f.subject for f in fires if f.subject.startswith("user_age_bucket=")}) >= 3  # the worst group moves
    # The old rule left every age bucket that was once the worst firing.
    assert len([s for s in old if s.startswith("user_age_bucket=")]) >= 3
    even = {key: [dict(r, ndcg_at_10=0.01) for r in rows] for key, rows in run["evaluations"][-1]["tables"].items()}
    closing = d.update(even)
    assert d.firing == set() and {f.action for f in closing} == {"clear"}
    assert len(_old_fairness(even, firing=old)) > 0  # the old rule never clears the earlier groups


def test_exposure_concentration_fires_and_clears():
    d = D.ExposureConcentration(0.6)
    assert [f.action for f in d.update(10, 0.69)] == ["fire"] and d.update(10, 0.65) == []
    assert [f.action for f in d.update(10, 0.55)] == ["clear"]

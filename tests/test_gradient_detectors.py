"""The gradient detectors on recorded series (tests/data/series, from tests/data/record_gradient_series.py).

Each series is one real run recorded at every step: per-variable gradient norms,
weight norms and update ratios. A reading at cadence N is the step-N subsample. The
old rules (per-variable growth against its own median, 1e-5 of the largest layer)
are re-implemented here so that each case shows what they got wrong.
"""

import json
import math
import pathlib

import pytest

from tfrs_diag.detectors import (ExplodingGradients, NonFiniteGradients, NonFinitePause, VanishingGradients,
                                 apply_findings)
from tfrs_diag.detectors.gradients import layer_norms

SERIES = pathlib.Path(__file__).parent / "data" / "series"
CASES = ("deep_sigmoid", "healthy_ranking", "healthy_retrieval", "explode_nonfinite", "explode_finite")


def load(name):
    d = json.loads((SERIES / f"{name}.json").read_text())
    for s in d["steps"]:
        for k in ("grad_norm", "weight_norm", "update_ratio"):
            s[k] = [float(x) for x in s[k]]  # "nan" / "inf" strings
        s["global_norm"] = float(s["global_norm"])
    return d


@pytest.fixture(scope="module")
def series():
    return {name: load(name) for name in CASES}


def readings(d, every):
    return [s for s in d["steps"] if s["step"] % every == 0]


def run_vanishing(d, every, detector=None):
    det = detector or VanishingGradients()
    fired = {}
    for s in readings(d, every):
        g = layer_norms(s["grad_norm"], d["layers"])
        w = layer_norms(s["weight_norm"], d["layers"])
        for f in det.update(s["step"], g, w):
            if f.action == "fire":
                fired.setdefault(f.subject, s["step"])
    return fired


def run_exploding(d, detector=None):
    """subject -> the step it first fired at."""
    return {subject: steps[0][1] for subject, steps in exploding_lifecycle(d, detector).items()}


def exploding_lifecycle(d, detector=None):
    """subject -> [(action, step), ...] of the detector over a recorded run."""
    det = detector or ExplodingGradients()
    events = {}
    for s in d["steps"]:
        for f in det.observe(s["step"], dict(zip(d["variables"], s["grad_norm"]))):
            events.setdefault(f.subject, []).append((f.action, s["step"]))
    return events


def old_exploding(d, factor=100.0, window=25):
    """The old rule: a variable's norm above `factor` x the median of its own last `window` steps."""
    fired = {}
    for j, name in enumerate(d["variables"]):
        hist = []
        for s in d["steps"]:
            x = s["grad_norm"][j]
            if len(hist) >= window and math.isfinite(x):
                med = sorted(hist[-window:])[window // 2]
                if x > factor * med and name not in fired:
                    fired[name] = s["step"]
            hist.append(x if math.isfinite(x) else (sorted(hist[-window:])[window // 2] if hist else 0.0))
    return fired


def old_vanishing(d, every, ratio=1e-5, window=3):
    fired, streak = {}, {}
    for s in readings(d, every):
        norms = layer_norms(s["grad_norm"], d["layers"])
        top = max(v for v in norms.values() if math.isfinite(v))
        for layer, v in norms.items():
            if math.isfinite(v) and v < ratio * top:
                streak[layer] = streak.get(layer, 0) + 1
                if streak[layer] == window:
                    fired.setdefault(layer, s["step"])
            else:
                streak.pop(layer, None)
    return fired


def first_nonfinite(d):
    return next(s["step"] for s in d["steps"] if not s["finite"])


# ---------------------------------------------------------------- exploding


def test_deep_sigmoid_growth_is_not_an_explosion(series):
    d = series["deep_sigmoid"]
    # What the old rule did on this run: the embeddings' and first layers' gradients,
    # 1e-12..1e-8 at the start, grew ~200x their own median, so they "exploded" at step 26...
    old = old_exploding(d)
    assert old and min(old.values()) == 26
    assert {"sequential/embedding/embeddings", "sequential_2/sig0/kernel"} <= set(old)
    # ...while the global norm fell from 32 to about 2: its largest ratio to its running
    # median is below 4, far from the factor 100.
    assert run_exploding(d) == {}


def test_healthy_runs_never_explode(series):
    for name in ("healthy_ranking", "healthy_retrieval"):
        assert run_exploding(series[name]) == {}, name
        assert old_exploding(series[name]) == {}, name


def test_diverging_sgd_explodes_before_the_first_nan_and_names_the_carriers(series):
    d = series["explode_nonfinite"]
    fired = run_exploding(d)
    nan_step = first_nonfinite(d)
    # SGD 0.25 from step 41: the global norm goes 1.5, 6.7, 11, 24, 8.9, 51, 433 (step 48, 350x its median).
    assert set(fired.values()) == {48} and nan_step == 51
    step48 = next(s for s in d["steps"] if s["step"] == 48)
    shares = {n: g / step48["global_norm"] for n, g in zip(d["variables"], step48["grad_norm"])}
    # Named: the variables carrying >= 10% of that step's norm; the user table (7%) is not.
    assert set(fired) == {n for n, sh in shares.items() if sh >= 0.1}
    assert "sequential/embedding/embeddings" not in fired


def test_finite_explosion_is_reported_and_stays_finite(series):
    d = series["explode_finite"]
    assert all(s["finite"] for s in d["steps"])
    fired = run_exploding(d)
    # Labels x1000 at steps 51-53: the global norm jumps from ~2 to 33,000.
    assert set(fired.values()) == {51}
    assert "sequential_2/out/kernel" in fired


def test_an_explosion_whose_run_does_not_come_back_stays_active(series):
    # Labels x1000 at steps 51-53 blew the weights up: from step 55 on the global norm stays
    # 10-85x its level before (2.8); one step (54, 7x) within 10x (sqrt of the factor 100) is
    # not the 25 calm steps in a row that clear the alert.
    d = series["explode_finite"]
    steps = {s["step"]: s["global_norm"] for s in d["steps"]}
    level = sorted(steps[s] for s in range(26, 51))[12]
    assert steps[54] <= 10 * level and min(steps[s] for s in range(55, 95)) > 10 * level
    assert all([a for a, _ in e] == ["fire"] for e in exploding_lifecycle(d).values())
    # Nor does a run that goes from explosion to NaN.
    assert all([a for a, _ in e] == ["fire"] for e in exploding_lifecycle(series["explode_nonfinite"]).values())


def test_exploding_fires_again_after_it_cleared_and_flags_the_capture_to_rearm():
    det = ExplodingGradients(factor=10, window=5, clear_after=3)
    norms = [1.0] * 6 + [100.0] + [1.0] * 4 + [100.0]
    out = [(f.action, i + 1) for i, x in enumerate(norms) for f in det.observe(i + 1, {"w": x})]
    assert out == [("fire", 7), ("clear", 10), ("fire", 12)] and det.rearm
    with pytest.raises(ValueError, match="clear_after"):
        ExplodingGradients(clear_after=0)


def test_exploding_window_fills_before_detection_and_reset_forgets():
    det = ExplodingGradients(factor=10, window=5)
    norms = [1.0, 1.0, 50.0]  # step 3 is 50x, but only two steps are in the window
    assert [det.observe(i + 1, {"w": x}) for i, x in enumerate(norms)] == [[], [], []]
    assert [f.subject for f in det.observe(4, {"w": 50.0})] == []  # median of (1, 1, 50) slots: +inf still
    det.reset()
    for i in range(3):
        det.observe(i + 1, {"w": 1.0})
    assert [f.subject for f in det.observe(4, {"w": 50.0})] == ["w"]
    assert det.observe(5, {"w": 5000.0}) == []  # once per subject


# ---------------------------------------------------------------- vanishing


def test_deep_sigmoid_vanishing_is_seen_at_the_new_default_cadence_not_the_old(series):
    d = series["deep_sigmoid"]  # 94 steps per epoch, 2 epochs
    # The old default, every 100 steps: one reading in the run, never a streak of 3.
    assert old_vanishing(d, every=100) == {} and run_vanishing(d, every=100) == {}
    # The new default for 94 steps per epoch is every 11 steps (8 readings per epoch).
    fired = run_vanishing(d, every=11)
    # The embeddings and the first sigmoid layer: ||g||/||w|| 2.5-4 decades below the median layer.
    assert set(fired) == {"sequential/embedding", "sequential_1/embedding_1", "sequential_2/sig0"}
    assert max(fired.values()) < 94  # within the first epoch


def test_healthy_runs_never_vanish_at_any_cadence(series):
    for name in ("healthy_ranking", "healthy_retrieval", "explode_finite"):
        for every in (1, 5, 11):
            assert run_vanishing(series[name], every) == {}, (name, every)


def test_vanishing_is_scale_free_where_the_old_ratio_was_not(series):
    # The healthy ranking run with its first layer's weights and gradients both 1e-6
    # smaller (a layer on another scale, e.g. inputs in other units): nothing vanished.
    d = load("healthy_ranking")
    for s in d["steps"]:
        for j, layer in enumerate(d["layers"]):
            if layer.endswith("sequential_2/dense"):
                s["grad_norm"][j] *= 1e-6
                s["weight_norm"][j] *= 1e-6
    assert run_vanishing(d, every=5) == {}
    assert "private__ranking_model/sequential_2/dense" in old_vanishing(d, every=5)


def test_vanishing_clears_when_the_layer_recovers():
    det = VanishingGradients(decades=2, window=2)
    w = {k: 1.0 for k in ("a", "b", "c", "d")}
    low = {"a": 1e-7, "b": 0.1, "c": 0.2, "d": 0.3}
    ok = {"a": 0.05, "b": 0.1, "c": 0.2, "d": 0.3}
    actions = [[(f.action, f.subject) for f in det.update(i, g, w)] for i, g in enumerate([low, low, low, ok, low])]
    assert actions == [[], [("fire", "a")], [], [("clear", "a")], []]
    # Two towers of one table each: nothing to compare.
    assert VanishingGradients(window=1).update(1, {"u": 1e-9, "i": 1.0}, {"u": 1.0, "i": 1.0}) == []


# ---------------------------------------------------------------- non-finite and the pause


def test_after_nonfinite_the_other_detectors_pause_and_say_so_once(series, tmp_path):
    from tfrs_diag import summary as S

    d = series["explode_nonfinite"]
    nonfinite, exploding, vanishing = NonFiniteGradients(), ExplodingGradients(), VanishingGradients()
    pause = NonFinitePause("GradientStatistics")
    log = S.AlertLog(S.check_log_dir(str(tmp_path)), "train", echo=False)
    notes, first, events = [], {}, []
    every = 2
    previous = 0
    for s in d["steps"]:
        for j in s["nonfinite"]:
            first.setdefault(d["variables"][j], s["step"])
        events += exploding.observe(s["step"], dict(zip(d["variables"], s["grad_norm"])))
        if s["step"] % every:
            continue
        finite = all(t["finite"] for t in d["steps"] if previous < t["step"] <= s["step"])
        previous = s["step"]
        found = nonfinite.update(first, finite)
        apply_findings(log, found, nonfinite.first_step or s["step"], 0)
        note = pause.update(finite, s["step"] if finite else min(first.values()))
        if note:
            notes.append(note)
        if not pause.paused:
            for f in events:
                apply_findings(log, [f], f.evidence["step"], 0)
            apply_findings(log, vanishing.update(s["step"], layer_norms(s["grad_norm"], d["layers"]),
                                                 layer_norms(s["weight_norm"], d["layers"])), s["step"], 0)
        events = []
    kinds = [(a.kind, a.step) for a in log.history]
    # Exploding at 48 (finite values), then NaN/Inf from step 51 and nothing else: the
    # NaN/Inf norms of every later step are no evidence of anything.
    assert kinds[-1] == ("nonfinite_gradients", 51)
    assert {k for k, _ in kinds[:-1]} == {"exploding_gradients"} and all(step == 48 for _, step in kinds[:-1])
    assert len(notes) == 1 and "since step 51" in notes[0]

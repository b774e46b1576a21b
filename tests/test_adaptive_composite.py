"""`fit_composite` recovers the weights planted by `synthetic_feedback`, and says how sure it is."""

import numpy as np
import pytest

from tfrs_diag.datasets.feedback import synthetic_feedback
from tfrs_diag.metrics import CompositeScore
from tfrs_diag.metrics.adaptive import fit_composite

TERMS = ["ndcg_at_10", "coverage_at_10", "novelty_at_10", "1-gini_at_10"]
TRUTH = {"ndcg_at_10": 0.2, "coverage_at_10": 0.05}


def test_recovers_planted_weights_with_intervals_that_cover_them():
    covered, total = 0, 0
    for seed in range(8):
        offline, ctr = synthetic_feedback(TRUTH, num_runs=60, noise=0.002, seed=seed)
        fitted = fit_composite(offline, ctr, TERMS, bootstrap=60, seed=seed)
        for term in TERMS:
            true = TRUTH.get(term, 0.0)
            lo, hi = fitted.intervals[term]
            assert lo <= fitted.weights[term] <= hi
            if true:
                assert fitted.weights[term] == pytest.approx(true, rel=0.1)
                covered += lo <= true <= hi
                total += 1
            else:  # unplanted terms: a trace of the outcome's spread, below its noise (the fit is non-negative)
                spread = np.std([1 - r[term[2:]] if term.startswith("1-") else r[term] for r in offline])
                assert fitted.weights[term] * spread < 0.002
        # The cross-validated error is the noise's, far below the spread of the outcome.
        assert 0.6 * 0.002 < fitted.cv_rmse < 1.5 * 0.002 and fitted.cv_r2 > 0.9
    assert covered >= 0.75 * total  # 90% intervals: 16 chances, at least 12 hits


def test_an_outcome_the_metrics_do_not_explain_gets_no_confidence():
    offline, _ = synthetic_feedback({}, num_runs=60, seed=0)
    noise = np.random.default_rng(5).normal(0.02, 0.002, size=60)
    fitted = fit_composite(offline, noise, TERMS, bootstrap=0)
    assert fitted.cv_r2 < 0.1
    assert fitted.cv_rmse >= 0.95 * fitted.baseline_rmse


def test_the_fitted_score_is_a_composite_and_its_threshold_separates_the_target():
    offline, ctr = synthetic_feedback(TRUTH, num_runs=40, seed=2)
    fitted = fit_composite(offline, ctr, TERMS, bootstrap=0, name="ctr_score")
    assert isinstance(fitted, CompositeScore) and fitted.name == "ctr_score"
    r = offline[0]
    assert fitted(r) == pytest.approx(sum(fitted.weights[t] * (1 - r[t[2:]] if t.startswith("1-") else r[t])
                                          for t in TERMS))
    target = float(np.median(ctr))
    cut = fitted.threshold(target)
    for row in offline:
        assert (fitted.predict(row) >= target) == (fitted(row) >= cut)
    assert "cross-validated RMSE" in str(fitted)


def test_bad_feedback_names_the_fix():
    offline, ctr = synthetic_feedback(TRUTH, num_runs=40, seed=0)
    with pytest.raises(ValueError, match="one outcome per observation"):
        fit_composite(offline, ctr[:-1], TERMS)
    with pytest.raises(ValueError, match="at least max"):
        fit_composite(offline[:6], ctr[:6], TERMS)
    with pytest.raises(ValueError, match="no metric 'mrr_at_10'"):
        fit_composite(offline, ctr, ["mrr_at_10"])

"""Top-K stability between two evaluations: hand-computed values and a brute-force reference."""

import numpy as np
import pytest

from tfrs_diag.stats.stability import (
    exposure_rank_correlation,
    jaccard,
    rank_biased_overlap,
    stability_summary,
    top1_changed,
)


def _rbo_reference(a, b, p):
    """RBO_ext (Webber et al. 2010, eq. 32) term by term with Python sets."""
    k = len(a)
    total = sum(len(set(a[:d]) & set(b[:d])) / d * p ** d for d in range(1, k + 1))
    return len(set(a) & set(b)) / k * p ** k + (1 - p) / p * total


def test_rbo_hand_computed():
    # X = (1, 1, 3): 0.729 + (0.1 / 0.9) * (0.9 * 1 + 0.81 * 0.5 + 0.729 * 1) = 0.955
    assert rank_biased_overlap([[1, 2, 3]], [[1, 3, 2]], p=0.9)[0] == pytest.approx(0.955, abs=1e-12)
    # X = (0, 2): 0.25 * 1 + 1 * (0.5 * 0 + 0.25 * 1) = 0.5
    assert rank_biased_overlap([[1, 2]], [[2, 1]], p=0.5)[0] == pytest.approx(0.5, abs=1e-12)


def test_rbo_matches_reference_across_chunks():
    rng = np.random.default_rng(0)
    n, k, items = 2500, 7, 12  # more queries than one block of the vectorised overlap
    prev = np.stack([rng.choice(items, k, replace=False) for _ in range(n)])
    curr = np.stack([rng.choice(items, k, replace=False) for _ in range(n)])
    got = rank_biased_overlap(prev, curr, p=0.8)
    want = [_rbo_reference(list(a), list(b), 0.8) for a, b in zip(prev, curr)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    shared = [len(set(a) & set(b)) for a, b in zip(prev, curr)]
    np.testing.assert_allclose(jaccard(prev, curr), [s / (2 * k - s) for s in shared], atol=1e-12)


def test_rbo_weighs_the_top_more_than_the_tail():
    base = np.array([[0, 1, 2, 3, 4, 5]])
    swap_top = np.array([[1, 0, 2, 3, 4, 5]])
    swap_tail = np.array([[0, 1, 2, 3, 5, 4]])
    assert jaccard(base, swap_top)[0] == jaccard(base, swap_tail)[0] == 1.0
    assert rank_biased_overlap(base, swap_top)[0] < rank_biased_overlap(base, swap_tail)[0] < 1.0
    assert rank_biased_overlap(base, base)[0] == pytest.approx(1.0)


def test_top1_changed_and_summary_per_group():
    prev = [[1, 2], [3, 4], [5, 6], [7, 8]]
    curr = [[1, 2], [4, 3], [5, 9], [0, 10]]
    assert top1_changed(prev, curr).tolist() == [False, True, False, True]
    s = stability_summary(prev, curr, num_items=11, query_groups=["a", "a", "b", "b"])
    # jaccard per query: 1, 1, 1/3, 0
    assert s["jaccard"] == pytest.approx((1 + 1 + 1 / 3 + 0) / 4)
    assert s["jaccard/a"] == pytest.approx(1.0) and s["jaccard/b"] == pytest.approx(1 / 6)
    assert s["top1_changed/a"] == 0.5 and s["top1_changed/b"] == 0.5


def test_exposure_spearman_hand_computed():
    # counts before (2, 1, 1, 0), after (2, 0, 1, 1); average ranks (4, 2.5, 2.5, 1) and
    # (4, 1, 2.5, 2.5); centred dot 2.25 over sqrt(4.5 * 4.5) = 0.5
    rho = exposure_rank_correlation([[0, 1], [0, 2]], [[0, 3], [0, 2]], num_items=4)
    assert rho == pytest.approx(0.5, abs=1e-12)
    assert np.isnan(exposure_rank_correlation([[0, 1]], [[1, 0]], num_items=2))  # constant counts


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="same queries"):
        jaccard([[1, 2]], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="persistence"):
        rank_biased_overlap([[1]], [[1]], p=1.0)
    with pytest.raises(ValueError, match="num_items"):
        exposure_rank_correlation([[0, 5]], [[0, 1]], num_items=3)
    with pytest.raises(ValueError, match="query_groups"):
        stability_summary([[1], [2]], [[1], [2]], query_groups=["a"])

"""Metric edge cases where nothing was measured: defined values or left out, never a crash
and never a made-up extreme (docs/metrics.md, "Undefined cases").

Hand-made evaluations: a query tower that returns each user's scores over the catalog
directly (candidate embeddings are the identity), so every top-K list is known.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfrs_diag
from tfrs_diag.metrics import CompositeScore, ItemDiversity, ItemExposure, PopularityBias, UserGroupAccuracy

HAND = dict(abs=1e-6, rel=0)


def _evaluate(user_scores, data, k, **kwargs):
    """Evaluates users whose scores over the catalog are the rows of ``user_scores``."""
    scores = tf.constant(np.asarray(user_scores, np.float32))
    n = scores.shape[1]
    items = np.arange(100, 100 + n)

    def query_tower(user):
        return tf.gather(scores, user)

    return tfrs_diag.evaluate(query_tower, items, data, k=k, query_key="user", item_key="item",
                              candidate_embeddings=np.eye(n, dtype=np.float32), **kwargs)


# Three users over four items (ids 100..103); user u ranks the items by its row.
SCORES = [[4, 3, 2, 1],    # top: 100, 101, 102, 103
          [1, 4, 3, 2],    # top: 101, 102, 103, 100
          [4, 1, 2, 3]]    # top: 100, 103, 102, 101
DATA = {"user": np.array([0, 1, 2]), "item": np.array([100, 102, 103]), "group": np.array(["x", "x", "y"])}


# ---------------------------------------------------------------- ILD and entropy


def test_evaluate_with_k_1_leaves_ild_out_instead_of_crashing():
    # Before: TypeError from tf.gather(ild_sum, []) (an empty float index list).
    result = _evaluate(SCORES, DATA, k=(1,))
    assert "ild_at_1" not in result
    assert result["hit_rate_at_1"] == pytest.approx(1 / 3, **HAND)  # tops 100, 101, 100; only u0 wants 100
    assert result["coverage_at_1"] == pytest.approx(0.5, **HAND)    # {100, 101} of 4


def test_ild_is_reported_for_the_k_with_pairs_only():
    result = _evaluate(SCORES, DATA, k=(1, 2))
    assert "ild_at_1" not in result
    # one-hot embeddings: every pair of distinct items has cosine 0, so ILD@2 = 1
    assert result["ild_at_2"] == pytest.approx(1.0, **HAND)


def test_item_diversity_metric_with_only_k_1():
    m = ItemDiversity(num_items=3, ks=(1,), item_embeddings=np.eye(3))
    m.update_state(tf.constant([[0], [2]]))
    r = {k: float(v) for k, v in m.result().items()}
    assert "ild_at_1" not in r
    assert r["coverage_at_1"] == pytest.approx(2 / 3, **HAND)


def test_one_item_catalog_is_defined_throughout():
    # k=(1, 5) is clamped to 1 with a warning; Gini of one item is 0 (no inequality possible),
    # entropy 0, the normalised entropy (over log2 1 = 0) and ILD undefined: left out.
    data = {"user": np.array([0, 1]), "item": np.array([100, 100])}
    with pytest.warns(UserWarning, match="clamped"):
        result = _evaluate([[1.0], [2.0]], data, k=(1, 5), item_popularity=np.array([1.0]))
    assert result.ks == (1,)
    assert result["coverage_at_1"] == 1.0 and result["gini_at_1"] == 0.0 and result["entropy_at_1"] == 0.0
    assert result["hit_rate_at_1"] == 1.0 and result["exposure_gini_at_1"] == 0.0
    assert "entropy_norm_at_1" not in result and "ild_at_1" not in result
    assert all(np.isfinite(v) for v in result.values())


# ---------------------------------------------------------------- PopRSP and PopREO


def test_pop_rsp_and_reo_with_an_empty_tail_are_left_out_not_maximal():
    # Every item in the head: the tail has no candidate and no relevant item. Before: 1.0, 1.0.
    result = _evaluate(SCORES, DATA, k=(2,), item_popularity=np.full(4, 0.25), item_is_head=np.ones(4, bool))
    assert "pop_rsp_at_2" not in result and "pop_reo_at_2" not in result
    assert result["aplt_at_2"] == 0.0 and result["arp_at_2"] == pytest.approx(0.25, **HAND)


def test_pop_reo_without_a_relevant_tail_item_is_left_out_and_pop_rsp_stays():
    # head {100, 101}, tail {102, 103}; relevant items 100 (u0), 101 (u1): none in the tail.
    # RSP@2: head slots 100,101 | 101 | 100 = 4 of 3*2 available, tail 102 | 103 = 2 of 6
    #   p = (2/3, 1/3): std 1/6, mean 1/2 -> 1/3.   Before, REO was 1.0 (tail p = 0/0 read as 0).
    data = {"user": np.array([0, 1]), "item": np.array([100, 101])}
    head = np.array([True, True, False, False])
    result = _evaluate(SCORES, data, k=(2,), item_popularity=np.array([0.4, 0.3, 0.2, 0.1]), item_is_head=head)
    assert "pop_reo_at_2" not in result and "pop_rsp_at_2" in result
    m = PopularityBias((2,), [0.4, 0.3, 0.2, 0.1], item_is_head=head)
    m.update_state(tf.constant([[100, 101], [101, 102], [100, 103]]) - 100, tf.constant([[0], [1], [-1]]))
    r = {k: float(v) for k, v in m.result().items()}
    assert r["pop_rsp_at_2"] == pytest.approx(1 / 3, **HAND)
    assert np.isnan(r["pop_reo_at_2"])


def test_pop_reo_with_no_hit_in_either_group_is_parity_zero():
    # Both groups hold relevant items and neither gets a hit: P = (0, 0), equal -> 0 (defined).
    m = PopularityBias((1,), [0.4, 0.3, 0.2, 0.1], item_is_head=[True, True, False, False])
    m.update_state(tf.constant([[0], [1]]), tf.constant([[1], [2]]))
    assert float(m.result()["pop_reo_at_1"]) == 0.0


# ---------------------------------------------------------------- exposure and user groups


def test_exposure_disparity_of_a_group_without_relevant_items_is_undefined():
    # groups: a = {100, 101}, b = {102, 103}, empty = {} ; relevant 100 (u0), 101 (u1): all in a.
    # Before: disparity of b (exposed, nothing relevant) and of the empty group were 0 ("under-exposed"),
    # and the gap over one group 0.
    data = {"user": np.array([0, 1]), "item": np.array([100, 101])}
    result = _evaluate(SCORES[:2], data, k=(2,), item_groups=np.array([0, 0, 1, 1]),
                       item_group_names=("a", "b", "empty"))
    rows = {r["group"]: r for r in result.item_group_table}
    # exposure@2: u0 100 (1), 101 (d); u1 101 (1), 102 (d): a = 2 + d, b = d of 2 + 2d
    d = 1 / np.log2(3)
    assert rows["a"]["exposure_share_at_2"] == pytest.approx((2 + d) / (2 + 2 * d), **HAND)
    assert rows["a"]["exposure_disparity_at_2"] == pytest.approx((2 + d) / (2 + 2 * d), **HAND)  # R_a = 1
    assert rows["b"]["exposure_disparity_at_2"] is None
    assert rows["empty"]["exposure_disparity_at_2"] is None and rows["empty"]["exposure_share_at_2"] == 0.0
    assert "exposure_gap_at_2" not in result
    m = ItemExposure(4, (2,), [0, 0, 1, 1], ("a", "b", "empty"))
    m.update_state(tf.constant([[0, 1], [1, 2]]), tf.constant([[0], [1]]))
    r = {k: float(v) for k, v in m.result().items()}
    assert np.isnan(r["exposure_disparity_at_2/b"]) and np.isnan(r["exposure_gap_at_2"])


def test_exposure_gap_over_two_groups_with_relevant_items_is_unchanged():
    m = ItemExposure(4, (2,), [0, 0, 1, 1], ("a", "b"))
    m.update_state(tf.constant([[0, 1], [1, 2]]), tf.constant([[0], [2]]))
    r = {k: float(v) for k, v in m.result().items()}
    d = 1 / np.log2(3)
    share_a, share_b = (2 + d) / (2 + 2 * d), d / (2 + 2 * d)
    assert r["exposure_gap_at_2"] == pytest.approx(abs(share_a / 0.5 - share_b / 0.5), **HAND)


def test_user_group_gaps_with_one_non_empty_group_are_left_out():
    # Every query is in group x: nothing to compare. Before: gap 0, ratio 1, MAD 0 (parity).
    data = {"user": np.array([0, 1]), "item": np.array([100, 102]), "group": np.array(["x", "x"])}
    result = _evaluate(SCORES[:2], data, k=(2,), user_group_keys=("group",),
                       user_group_names={"group": ("x", "y")})
    assert not [k for k in result if k.startswith("group/")]
    (x, y) = result.tables["group"]
    assert (x["group"], x["count"], y["count"]) == ("x", 2, 0)
    assert x["hit_rate_at_2"] == pytest.approx(1.0, **HAND)
    m = UserGroupAccuracy((2,), ("x", "y"))
    m.update_state(tf.constant([[0, 1], [1, 2]]), tf.constant([[0], [2]]), tf.constant([0, 0]))
    r = {k: float(v) for k, v in m.result().items()}
    assert all(np.isnan(r[f"ndcg_at_2_{s}"]) for s in ("gap", "ratio", "user_mad"))


def test_user_group_gaps_with_two_groups_are_reported():
    result = _evaluate(SCORES, DATA, k=(2,), user_group_keys=("group",))
    # hit@2: x = {u0: 100 in [100, 101] -> 1, u1: 102 in [101, 102] -> 1}, y = {u2: 103 in [100, 103] -> 1}
    assert result["group/hit_rate_at_2_gap"] == 0.0 and result["group/hit_rate_at_2_ratio"] == 1.0


# ---------------------------------------------------------------- composite score


def test_composite_leaves_out_an_undefined_term_with_a_warning():
    score = CompositeScore({"ndcg_at_10": 0.5, "1-pop_reo_at_10": 0.5})
    with pytest.warns(RuntimeWarning, match="pop_reo_at_10 is undefined"):
        assert score({"ndcg_at_10": 0.4}) == pytest.approx(0.2)
    with pytest.raises(KeyError, match="ndcg_at_1O"):
        CompositeScore({"ndcg_at_1O": 1.0})({"ndcg_at_10": 0.4})  # a typo still raises


def test_beyond_accuracy_writes_a_table_with_undefined_values(tmp_path):
    # The item-group table holds None for an undefined disparity: the callback writes the
    # defined values and leaves the undefined ones out (no float(None)).
    from tfrs_diag import summary
    from tfrs_diag.callbacks import BeyondAccuracy

    data = {"user": np.array([0, 1]), "item": np.array([100, 101])}
    cb = BeyondAccuracy(str(tmp_path), data, np.arange(100, 104), k=(2,), item_groups=np.array([0, 0, 1, 1]),
                        item_group_names=("a", "b"), query_key="user", item_key="item",
                        composite={"ndcg_at_2": 1.0, "1-exposure_gap_at_2": 1.0}, verbose=0)
    result = cb.evaluator.run(lambda u: tf.gather(tf.constant(np.asarray(SCORES[:2], np.float32)), u),
                              candidate_embeddings=np.eye(4, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {**result.metrics, "composite": cb.composite(result.metrics)}
    cb._write(result, values, step=1, epoch=0)
    summary.close_writer(str(tmp_path), "validation")
    run = summary.read_run(str(tmp_path / "validation"))
    assert "tfrs_diag/fair/item_group/exposure_disparity_at_2/a" in run.scalars
    assert "tfrs_diag/fair/item_group/exposure_disparity_at_2/b" not in run.scalars
    (_, table), = run.records["tfrs_diag/fair/groups"]
    assert [r["exposure_disparity_at_2"] is None for r in table["item_groups"]] == [False, True]

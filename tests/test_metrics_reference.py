"""Independent verification of the streaming top-K metrics in `tfrs_diag.metrics`.

Three layers of evidence, all against docs/design.md section 5 (not against the TF code):

1. hand-computed cases, small enough to redo with pencil (arithmetic in the comments);
2. agreement with `metrics_reference` (plain numpy/Python loops, float64) on random
   top-K lists, several seeds, every key of every result dict;
3. invariances: streaming over uneven batches == one shot == MirroredStrategy over two
   logical CPUs; plus the edge cases (empty groups, no positives, K > catalog, bad args).

Tolerances: hand values use pytest.approx(abs=1e-6). Everything else uses
``assert_allclose(rtol=1e-6, atol=1e-6)``. The metrics keep float32 state; against the
float64 reference the largest deviation seen on the random cases is 4.2e-7 absolute
(novelty, values ~5-11: float32 rounding of sums of up to 500 self-informations), so a
relative-only 1e-6 bound would fail on values near 0 for float32 rounding alone.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf

import metrics_reference as ref
from tfrs_diag.evaluation.queries import in_search_order
from tfrs_diag.metrics import (ItemDiversity, ItemExposure, PopularityBias, RankingAccuracy, TopKBatch,
                               UserGroupAccuracy, metric_families)

D2 = 1.0 / math.log2(3)  # discount of rank 2 = 0.6309298
D3 = 1.0 / math.log2(4)  # discount of rank 3 = 0.5
LOG2_3 = math.log2(3)  # 1.5849625
HAND = dict(abs=1e-6, rel=0)


def _values(result) -> dict:
    return {key: float(np.asarray(value)) for key, value in result.items()}


def _assert_hand(result, expected: dict):
    got = _values(result)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, **HAND), key


def _assert_close(got: dict, want: dict, rtol: float, atol: float):
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    for key in sorted(want):
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)


# Results that are undefined (NaN) when nothing was measured (docs/metrics.md, "Undefined
# cases"); `tfrs_diag.evaluate` leaves them out. Everything else is always finite.
UNDEFINABLE = ("pop_rsp_at_", "pop_reo_at_", "exposure_disparity_at_", "exposure_gap_at_")
UNDEFINABLE_SUFFIXES = ("_gap", "_ratio", "_user_mad")


def _undefinable(key: str) -> bool:
    return key.startswith(UNDEFINABLE) or key.endswith(UNDEFINABLE_SUFFIXES)


def _assert_no_nan(result):
    """Every result is finite, except the undefinable ones, which are finite or NaN (never inf)."""
    values = _values(result)
    bad = {k: v for k, v in values.items() if not np.isfinite(v) and not (_undefinable(k) and np.isnan(v))}
    assert not bad, bad


# =============================================================================== 1. hand cases
def test_ranking_accuracy_hand_case():
    # q0 top [3,1,7] rel {1,9}: @3 recall 1/2, DCG = D2, IDCG = 1 + D2, MRR 1/2, hit 1; @1 all 0
    # q1 top [2,0,5] rel {2}:   @1 and @3 everything 1
    # q2 top [4,6,8] rel {8}, one -2 (missing): @3 recall 1, NDCG D3/1 = 0.5, MRR 1/3, hit 1; @1 0
    # q3 top [0,1,2] positives only -2: not evaluated, 1 missing
    # q4 top [5,6,7] no positives: not evaluated
    # q5 top [1,2,3] rel {1,2,3,4}: @3 recall 3/4, DCG = 1 + D2 + D3 = IDCG (3 = min(4, K)) -> 1,
    #    MRR 1, hit 1; @1 recall 1/4, NDCG 1/1, MRR 1, hit 1
    # evaluated = 4 (q0, q1, q2, q5), missing = 2
    top = tf.constant([[3, 1, 7], [2, 0, 5], [4, 6, 8], [0, 1, 2], [5, 6, 7], [1, 2, 3]])
    pos = tf.constant([[1, 9, -1, -1], [2, -1, -1, -1], [8, -2, -1, -1], [-2, -1, -1, -1], [-1, -1, -1, -1],
                       [1, 2, 3, 4]])
    m = RankingAccuracy(ks=(1, 3), num_items=10)
    m.update_state(top, pos)
    _assert_hand(m.result(), {
        "recall_at_1": (0 + 1 + 0 + 0.25) / 4,  # 0.3125
        "ndcg_at_1": (0 + 1 + 0 + 1) / 4,  # 0.5
        "mrr_at_1": (0 + 1 + 0 + 1) / 4,
        "hit_rate_at_1": (0 + 1 + 0 + 1) / 4,
        "recall_at_3": (0.5 + 1 + 1 + 0.75) / 4,  # 0.8125
        "ndcg_at_3": (D2 / (1 + D2) + 1 + 0.5 + 1) / 4,  # (0.3868528 + 2.5) / 4 = 0.7217132
        "mrr_at_3": (0.5 + 1 + 1 / 3 + 1) / 4,  # 0.7083333
        "hit_rate_at_3": 1.0,
        "evaluated_queries": 4.0,
        "missing_positives": 2.0,
    })
    assert _values(m.result())["ndcg_at_3"] == pytest.approx(0.7217132, abs=1e-6)


# Embeddings for the ILD hand case (not unit length: the metric must normalise them).
# cos(0,1)=0, cos(0,2)=1/sqrt2, cos(0,3)=-1, cos(1,2)=1/sqrt2, cos(1,3)=0, cos(2,3)=-1/sqrt2
HAND_EMB = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], np.float32)
# phi: item 2 never seen in training -> uses the smallest non-zero phi 0.125 -> 3 bits
# self-information: [1, log2(8/3) = 3 - log2 3 = 1.4150375, 3, 3]
HAND_PHI = np.array([0.5, 0.375, 0.0, 0.125])


def test_item_diversity_hand_case():
    top = tf.constant([[0, 1, 2], [0, 2, 3], [0, 1, 3]])
    m = ItemDiversity(num_items=4, ks=(2, 3), item_popularity=HAND_PHI, item_embeddings=HAND_EMB)
    m.update_state(top)
    r2 = math.sqrt(2.0)
    _assert_hand(m.result(), {
        # @2: lists [0,1] [0,2] [0,1]: c = [3, 2, 1, 0], N = 6
        "coverage_at_2": 3 / 4,
        # sorted [0,1,2,3], weights 2j-5 = [-3,-1,1,3]: (0 - 1 + 2 + 9) / (4 * 6) = 10/24
        "gini_at_2": 10 / 24,
        # p = [1/2, 1/3, 1/6]: 0.5*1 + (1/3) log2 3 + (1/6) log2 6 = 1.4591479
        "entropy_at_2": 0.5 + LOG2_3 / 3 + math.log2(6) / 6,
        "entropy_norm_at_2": (0.5 + LOG2_3 / 3 + math.log2(6) / 6) / 2,  # / log2 4
        # slots 0,1,0,2,0,1: (1 + 1.4150375 + 1 + 3 + 1 + 1.4150375) / 6 = 1.4716792
        "novelty_at_2": (3 * 1 + 2 * (3 - LOG2_3) + 3) / 6,
        # one pair per list: 1 - 0, 1 - 1/sqrt2, 1 - 0 -> mean (3 - 1/sqrt2)/3 = 0.7642977
        "ild_at_2": (3 - 1 / r2) / 3,
        # @3: c = [3, 2, 2, 2], N = 9
        "coverage_at_3": 1.0,
        # sorted [2,2,2,3]: (-6 - 2 + 2 + 9) / (4 * 9) = 3/36
        "gini_at_3": 3 / 36,
        # p = [1/3, 2/9, 2/9, 2/9]: (1/3) log2 3 + (2/3) log2 4.5 = 1.9749375
        "entropy_at_3": LOG2_3 / 3 + (2 / 3) * math.log2(4.5),
        "entropy_norm_at_3": (LOG2_3 / 3 + (2 / 3) * math.log2(4.5)) / 2,
        # L0: 1 + 1.4150375 + 3, L1: 1 + 3 + 3, L2: 1 + 1.4150375 + 3 -> 17.830075 / 9 = 1.9811194
        "novelty_at_3": (2 * (4 + 3 - LOG2_3) + 7) / 9,
        # L0 pairs (0,1)(0,2)(1,2): 0 + 2/sqrt2 -> 1 - sqrt2/3; L1 (0,2)(0,3)(2,3): -1 -> 1 + 1/3;
        # L2 (0,1)(0,3)(1,3): -1 -> 4/3. Mean (11 - sqrt2) / 9 = 1.0650873
        "ild_at_3": (11 - r2) / 9,
    })
    assert "ild_at_1" not in _values(m.result())


# phi [0.5, 0.3, 0.1, 0.1, 0.0]: 0.5 + 0.3 = 80% -> head {0, 1}, tail {2, 3, 4}
POP_PHI = np.array([0.5, 0.3, 0.1, 0.1, 0.0])
POP_TOP = [[0, 1], [0, 2], [3, 1], [0, 4]]
POP_POS = [[2, -1], [2, 0], [-1, -1], [4, -2]]


def test_popularity_bias_hand_case():
    m = PopularityBias(ks=(2,), item_popularity=POP_PHI)  # head/tail from the 80% rule
    m.update_state(tf.constant(POP_TOP), tf.constant(POP_POS))
    _assert_hand(m.result(), {
        # mean phi per list: 0.4, 0.3, 0.2, 0.25 -> 1.15 / 4
        "arp_at_2": 0.2875,
        # tail fraction per list: 0, 1/2, 1/2, 1/2 -> 1.5 / 4
        "aplt_at_2": 0.375,
        # RSP: head slots 2+1+1+1 = 5 of 4*2 = 8 available, tail 0+1+1+1 = 3 of 4*3 = 12
        # p = (0.625, 0.25): (|a-b|/2) / ((a+b)/2) = 0.375 / 0.875 = 3/7
        "pop_rsp_at_2": 3 / 7,
        # REO: relevant head {0 in q1} = 1, tail {2 in q0, 2 in q1, 4 in q3} = 3 (the -2 ignored)
        # hits: head item 0 in q1 -> 1/1; tail 2 in q1 and 4 in q3 -> 2/3
        # (1 - 2/3) / (1 + 2/3) = 0.2
        "pop_reo_at_2": 0.2,
    })


def test_popularity_bias_hand_case_with_excluded_items():
    # exclude: q0 {3} (tail), q1 {1 (head), 4 (tail)}, q3 {2} (tail); none of them is in a list
    # available: head 8 - 1 = 7, tail 12 - 3 = 9 -> p = (5/7, 3/9)
    # (5/7 - 1/3) / (5/7 + 1/3) = (15 - 7) / (15 + 7) = 8/22
    exclude = tf.constant([[3, -1], [1, 4], [-1, -1], [2, -1]])
    m = PopularityBias(ks=(2,), item_popularity=POP_PHI, item_is_head=[True, True, False, False, False])
    m.update_state(tf.constant(POP_TOP), tf.constant(POP_POS), exclude=exclude)
    _assert_hand(m.result(), {"pop_rsp_at_2": 8 / 22, "pop_reo_at_2": 0.2, "arp_at_2": 0.2875,
                              "aplt_at_2": 0.375})


def test_item_exposure_hand_case():
    # items 0,1 in group a, item 2 in b, item 3 in c; lists [0,2] [0,1] [3,0]; d = D2 = 0.6309298
    # Exp = [1 + 1 + d, d, d, 1] = [2.6309298, 0.6309298, 0.6309298, 1], sum = 3 + 3d = 4.8927893
    # shares: a = (2 + 2d)/(3 + 3d) = 2/3, b = d/(3 + 3d) = 0.1289509, c = 1/(3 + 3d) = 0.2043824
    # relevant: q0 {2} -> b, q1 {1} -> a, q2 only missing -> R = (1/2, 1/2, 0)
    # disparity: a = (2/3)/(1/2) = 4/3, b = 2d/(3 + 3d) = 0.2579019, c undefined (no relevant item): NaN
    # gap over groups with relevant items (a, b only): 4/3 - 0.2579019 = 1.0754315
    # Gini of Exp sorted [d, d, 1, 2 + d], weights [-3,-1,1,3]: (-4d + 1 + 6 + 3d) / (4 (3 + 3d))
    #   = (7 - d) / (12 + 12d) = 6.3690702 / 19.5711570 = 0.3254315
    d = D2
    m = ItemExposure(num_items=4, ks=(2,), item_groups=[0, 0, 1, 2], group_names=("a", "b", "c"))
    m.update_state(tf.constant([[0, 2], [0, 1], [3, 0]]), tf.constant([[2, -1], [1, -1], [-2, -1]]))
    _assert_hand(m.result(), {
        "relevant_share/a": 0.5, "relevant_share/b": 0.5, "relevant_share/c": 0.0,
        "exposure_share_at_2/a": 2 / 3, "exposure_share_at_2/b": d / (3 + 3 * d),
        "exposure_share_at_2/c": 1 / (3 + 3 * d),
        "exposure_disparity_at_2/a": 4 / 3, "exposure_disparity_at_2/b": 2 * d / (3 + 3 * d),
        "exposure_gap_at_2": 4 / 3 - 2 * d / (3 + 3 * d),
        "exposure_gini_at_2": (7 - d) / (12 + 12 * d),
    })
    assert _values(m.result())["exposure_gini_at_2"] == pytest.approx(0.3254315, abs=1e-6)
    assert np.isnan(_values(m.result())["exposure_disparity_at_2/c"])


def test_user_group_accuracy_hand_case():
    # K = 2. group a: q0 top [0,1] rel {1}: recall 1, NDCG d/1 = 0.6309298, MRR 1/2, hit 1
    #                 q1 top [2,3] rel {4}: all 0
    #        group b: q2 top [0,1] rel {0}: all 1
    #        group c: q3 top [1,2] rel {3}: all 0;  q4 top [3,0] rel {3,0}: all 1
    #        group d: q5 has no positives -> count 0;  group e: no query at all -> count 0
    # recall/hit: a 1/2, b 1, c 1/2 -> gap 1/2, ratio 1/2, MAD (1/2 + 0 + 1/2)/3 = 1/3
    # NDCG: a d/2 = 0.3154649, b 1, c 1/2 -> gap 1 - d/2, ratio d/2,
    #       MAD (|a-b| + |a-c| + |b-c|)/3 = ((1 - d/2) + (1/2 - d/2) + 1/2)/3 = (2 - d)/3
    # MRR: a 1/4, b 1, c 1/2 -> gap 3/4, ratio 1/4, MAD (3/4 + 1/4 + 1/2)/3 = 1/2
    d = D2
    m = UserGroupAccuracy(ks=(2,), group_names=("a", "b", "c", "d", "e"))
    m.update_state(tf.constant([[0, 1], [2, 3], [0, 1], [1, 2], [3, 0], [0, 1]]),
                   tf.constant([[1, -1], [4, -1], [0, -1], [3, -1], [3, 0], [-1, -1]]),
                   tf.constant([0, 0, 1, 2, 2, 3]))
    expected = {"count/a": 2, "count/b": 1, "count/c": 2, "count/d": 0, "count/e": 0}
    for name in ("recall", "hit_rate"):
        expected.update({f"{name}_at_2/a": 0.5, f"{name}_at_2/b": 1.0, f"{name}_at_2/c": 0.5,
                         f"{name}_at_2/d": 0.0, f"{name}_at_2/e": 0.0,
                         f"{name}_at_2_gap": 0.5, f"{name}_at_2_ratio": 0.5, f"{name}_at_2_user_mad": 1 / 3})
    expected.update({"ndcg_at_2/a": d / 2, "ndcg_at_2/b": 1.0, "ndcg_at_2/c": 0.5, "ndcg_at_2/d": 0.0,
                     "ndcg_at_2_gap": 1 - d / 2, "ndcg_at_2_ratio": d / 2, "ndcg_at_2_user_mad": (2 - d) / 3})
    expected.update({"mrr_at_2/a": 0.25, "mrr_at_2/b": 1.0, "mrr_at_2/c": 0.5, "mrr_at_2/e": 0.0,
                     "mrr_at_2_gap": 0.75, "mrr_at_2_ratio": 0.25, "mrr_at_2_user_mad": 0.5})
    _assert_hand(m.result(), expected)


def test_reference_gini_formulas_agree_and_match_hand_values():
    # the reference's two Gini forms (sorted sum from docs/design.md, pairwise mean difference)
    assert ref.gini_sorted([3, 2, 1, 0]) == pytest.approx(10 / 24, **HAND)
    assert ref.gini_sorted([0, 0, 0, 4]) == pytest.approx(0.75, **HAND)  # (|I| - 1)/|I|
    assert ref.gini_sorted([2, 2, 2, 2]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        c = rng.integers(0, 6, size=12)
        assert ref.gini_sorted(c) == pytest.approx(ref.gini_pairwise(c), abs=1e-12)
    assert ref.head_items(POP_PHI) == [True, True, False, False, False]
    assert ref.head_items([5, 50, 10, 30, 5]) == [False, True, False, True, False]


# =============================================================================== 2. random cases
N_ITEMS, N_QUERIES, K_MAX, P_MAX, S_MAX = 40, 50, 10, 5, 3
KS = (1, 5, 10)
USER_GROUPS = ("u0", "u1", "u2")
ITEM_GROUPS = ("g0", "g1", "g2", "g3")
SEEDS = (0, 1, 2)


@dataclass
class Case:
    top: np.ndarray  # [B, K_MAX] int32
    positives: np.ndarray  # [B, P_MAX] int32, -1 padding, some -2
    user_group: np.ndarray  # [B] int32
    exclude: np.ndarray  # [B, S_MAX] int32, -1 padding, disjoint from the query's list
    phi: np.ndarray  # [N] float64 shares, some zeros
    item_groups: np.ndarray  # [N] int
    embeddings: np.ndarray  # [N, 8] float32


def random_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    pop = rng.pareto(1.0, N_ITEMS) + 0.05
    pop[rng.choice(N_ITEMS, 6, replace=False)] = 0.0
    phi = pop / pop.sum()
    sample_p = 0.5 * phi + 0.5 / N_ITEMS  # popular items recommended more often
    top = np.stack([rng.choice(N_ITEMS, K_MAX, replace=False, p=sample_p) for _ in range(N_QUERIES)])
    positives = np.full((N_QUERIES, P_MAX), -1, np.int32)
    exclude = np.full((N_QUERIES, S_MAX), -1, np.int32)
    for u in range(N_QUERIES):
        n = int(rng.integers(0, P_MAX + 1))
        from_list = rng.choice(top[u], n, replace=False)
        anywhere = rng.choice(N_ITEMS, n, replace=False)
        chosen: list[int] = []
        for a, b in zip(from_list, anywhere):  # about half the positives are hits
            for item in ((a, b) if rng.random() < 0.5 else (b, a)):
                if item not in chosen:
                    chosen.append(int(item))
                    break
        row = [(-2 if rng.random() < 0.15 else i) for i in chosen]
        positives[u, :len(row)] = row
        outside = np.setdiff1d(np.arange(N_ITEMS), top[u])
        s = int(rng.integers(0, S_MAX + 1))
        exclude[u, :s] = rng.choice(outside, s, replace=False)
    positives[0] = -1  # a query with no positives at all
    positives[1, :2] = -2  # a query whose positives are all missing
    positives[1, 2:] = -1
    user_group = rng.integers(0, len(USER_GROUPS), N_QUERIES)
    if seed == 2:
        user_group[user_group == 2] = 0  # an empty user group
    return Case(top.astype(np.int32), positives, user_group.astype(np.int32), exclude, phi,
                rng.integers(0, len(ITEM_GROUPS), N_ITEMS), rng.normal(size=(N_ITEMS, 8)).astype(np.float32))


def make_metrics(case: Case) -> dict:
    return {
        "ranking": RankingAccuracy(ks=KS, num_items=N_ITEMS),
        "diversity": ItemDiversity(N_ITEMS, KS, item_popularity=case.phi, item_embeddings=case.embeddings),
        "popularity": PopularityBias(KS, case.phi),
        "exposure": ItemExposure(N_ITEMS, KS, case.item_groups, ITEM_GROUPS),
        "user_groups": UserGroupAccuracy(KS, USER_GROUPS),
    }


def reference(case: Case) -> dict:
    return {
        "ranking": ref.ranking_accuracy(case.top, case.positives, KS),
        "diversity": ref.item_diversity(case.top, N_ITEMS, KS, case.phi, case.embeddings),
        "popularity": ref.popularity_bias(case.top, case.positives, case.phi, KS, exclude=case.exclude),
        "exposure": ref.item_exposure(case.top, case.positives, N_ITEMS, case.item_groups, ITEM_GROUPS, KS),
        "user_groups": ref.user_group_accuracy(case.top, case.positives, case.user_group, USER_GROUPS, KS),
    }


def feed(metrics: dict, case: Case, sizes=(N_QUERIES,)) -> dict:
    start = 0
    for size in sizes:
        sl = slice(start, start + size)
        args = [tf.constant(a[sl]) for a in (case.top, case.positives, case.user_group, case.exclude)]
        for m in metrics.values():
            m.update_state(*args)
        start += size
    assert start == N_QUERIES
    return {name: _values(m.result()) for name, m in metrics.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_lists_agree_with_numpy_reference(seed):
    case = random_case(seed)
    # sanity of the generated case: the edge cases it is meant to contain are there
    assert (case.positives == -2).any() and (case.positives == -1).all(axis=1).any()
    assert (case.phi == 0).any()
    got = feed(make_metrics(case), case)
    want = reference(case)
    for family in want:
        _assert_close(got[family], want[family], rtol=1e-6, atol=1e-6)
    assert got["ranking"]["missing_positives"] == (case.positives == -2).sum()
    if seed == 2:
        assert got["user_groups"]["count/u2"] == 0.0


# =============================================================================== 3. streaming
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_streaming_uneven_batches_equals_one_shot(seed):
    case = random_case(seed)
    one_shot = feed(make_metrics(case), case, (N_QUERIES,))
    tf.keras.backend.clear_session()
    batched = feed(make_metrics(case), case, (7, 20, 23))
    for family in one_shot:
        _assert_close(batched[family], one_shot[family], rtol=1e-6, atol=1e-6)


def test_reset_state_then_refeed_equals_fresh_metric():
    case = random_case(0)
    metrics = make_metrics(case)
    first = feed(metrics, case, (25, 25))
    for m in metrics.values():
        m.reset_state()
    again = feed(metrics, case)
    for family in first:
        _assert_close(again[family], first[family], rtol=1e-6, atol=1e-6)


# =============================================================================== 4. MirroredStrategy
def test_mirrored_strategy_equals_one_device(mirrored_strategy):
    strategy = mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    case = random_case(1)
    single = feed(make_metrics(case), case)
    with strategy.scope():
        metrics = make_metrics(case)
    # global batch 12: 4 batches of 6 per replica, then a last batch of 2 (1 per replica)
    ds = tf.data.Dataset.from_tensor_slices((case.top, case.positives, case.user_group, case.exclude)).batch(12)

    def step(top, pos, group, exclude):
        for m in metrics.values():
            m.update_state(top, pos, group, exclude)

    for batch in strategy.experimental_distribute_dataset(ds):
        strategy.run(step, args=batch)
    mirrored = {name: _values(m.result()) for name, m in metrics.items()}
    for family in single:
        _assert_close(mirrored[family], single[family], rtol=1e-6, atol=1e-6)
    want = reference(case)
    for family in want:
        _assert_close(mirrored[family], want[family], rtol=1e-6, atol=1e-6)


# =============================================================================== 5. edge cases
def test_empty_user_group_reports_zero_and_is_left_out_of_gaps():
    m = UserGroupAccuracy(ks=(2,), group_names=("a", "b", "empty"))
    m.update_state(tf.constant([[0, 1], [2, 3]]), tf.constant([[0, -1], [0, -1]]), tf.constant([0, 1]))
    r = _values(m.result())
    _assert_no_nan(m.result())
    assert r["count/empty"] == 0.0
    for name in ref.ACCURACY:
        assert r[f"{name}_at_2/empty"] == 0.0
        # a = 1, b = 0: had "empty" (0.0) counted, gap and MAD would differ (MAD 2/3, not 1)
        assert r[f"{name}_at_2_gap"] == pytest.approx(1.0, **HAND)
        assert r[f"{name}_at_2_ratio"] == pytest.approx(0.0, **HAND)
        assert r[f"{name}_at_2_user_mad"] == pytest.approx(1.0, **HAND)
    # only b present with a positive-free query in a: one group, nothing compared -> undefined (NaN)
    m2 = UserGroupAccuracy(ks=(2,), group_names=("a", "b", "empty"))
    m2.update_state(tf.constant([[0, 1], [2, 3]]), tf.constant([[-1, -1], [3, -1]]), tf.constant([0, 1]))
    r2 = _values(m2.result())
    assert r2["count/a"] == 0.0 and r2["count/b"] == 1.0
    assert all(np.isnan(r2[f"recall_at_2_{stat}"]) for stat in ("gap", "ratio", "user_mad"))


@pytest.mark.parametrize("fill", [-1, -2], ids=["no_positives", "all_missing"])
@pytest.mark.parametrize("partial", [False, True], ids=["every_query", "some_queries"])
def test_no_nan_when_queries_lack_positives(fill, partial):
    case = random_case(0)
    pos = case.positives.copy()
    rows = slice(0, 10) if partial else slice(None)
    pos[rows] = fill
    case.positives = pos
    results = feed(make_metrics(case), case)
    for family, result in results.items():
        bad = {k: v for k, v in result.items() if not np.isfinite(v) and not (_undefinable(k) and np.isnan(v))}
        assert not bad, (family, bad)
    undefined = {k for r in results.values() for k, v in r.items() if np.isnan(v)}
    if partial:
        assert not undefined
    else:  # no relevant item anywhere: PopREO, exposure disparity and the gaps were not measured
        assert {k for k in undefined if k.startswith("pop_")} == {f"pop_reo_at_{k}" for k in KS}
        assert {k for k in undefined if k.startswith("exposure_disparity")} == {
            f"exposure_disparity_at_{k}/{g}" for k in KS for g in ITEM_GROUPS}
        assert {f"exposure_gap_at_{k}" for k in KS} <= undefined
        assert all(k in undefined for k in results["user_groups"] if k.endswith(UNDEFINABLE_SUFFIXES))
    assert results["ranking"]["missing_positives"] == float((pos == -2).sum())
    if not partial:
        assert results["ranking"]["evaluated_queries"] == 0.0
        assert all(v == 0.0 for k, v in results["ranking"].items() if "_at_" in k)
        assert all(results["user_groups"][f"count/{g}"] == 0.0 for g in USER_GROUPS)
    # the reference agrees in these degenerate cases too, where both are defined (the
    # reference reports placeholders, 0 or 1, where the metrics report undefined)
    want = reference(case)
    for family in want:
        assert set(results[family]) == set(want[family])
        defined = {k: v for k, v in results[family].items() if not np.isnan(v)}
        _assert_close(defined, {k: want[family][k] for k in defined}, rtol=1e-6, atol=1e-6)


def test_no_nan_before_any_update():
    case = random_case(0)
    for m in make_metrics(case).values():
        _assert_no_nan(m.result())


def test_missing_positives_counts_minus_two_entries():
    m = RankingAccuracy(ks=(2,))
    m.update_state(tf.constant([[0, 1], [1, 2], [2, 3]]),
                   tf.constant([[-2, 0, -1], [-2, -2, -1], [3, -1, -1]]))
    m.update_state(tf.constant([[0, 1]]), tf.constant([[-2, -1, -2]]))
    r = _values(m.result())
    assert r["missing_positives"] == 5.0
    assert r["evaluated_queries"] == 2.0  # rows 1 and 4 have only missing positives
    assert r["recall_at_2"] == pytest.approx(1.0, **HAND)  # the -2 entries are not in the denominators


@pytest.mark.parametrize("build", [
    lambda: RankingAccuracy(ks=(3, 8), num_items=5),
    lambda: UserGroupAccuracy(ks=(8,), group_names=("a",), num_items=5),
    lambda: ItemDiversity(num_items=5, ks=(8,)),
    lambda: ItemExposure(num_items=5, ks=(8,)),
    lambda: PopularityBias(ks=(8,), item_popularity=[0.4, 0.3, 0.2, 0.1, 0.0]),
], ids=["ranking", "user_groups", "diversity", "exposure", "popularity"])
def test_k_larger_than_catalog_raises(build):
    with pytest.raises(ValueError, match=r"catalog \(5 items\)"):
        build()


def test_bad_argument_lengths_raise_naming_the_argument():
    with pytest.raises(ValueError, match="item_popularity"):
        ItemDiversity(num_items=5, ks=(2,), item_popularity=[0.5, 0.5])
    with pytest.raises(ValueError, match="item_popularity"):
        PopularityBias(ks=(2,), item_popularity=np.full((5, 2), 0.1))
    with pytest.raises(ValueError, match="item_is_head"):
        PopularityBias(ks=(2,), item_popularity=[0.4, 0.3, 0.2, 0.1], item_is_head=[True, False])
    with pytest.raises(ValueError, match="item_groups"):
        ItemExposure(num_items=5, ks=(2,), item_groups=[0, 1], group_names=("a", "b"))
    with pytest.raises(ValueError, match="item_embeddings"):
        ItemDiversity(num_items=5, ks=(2,), item_embeddings=np.ones((4, 3)))
    for family in (ItemDiversity(num_items=5, ks=(2,)), ItemExposure(num_items=5, ks=(2,))):
        with pytest.raises(ValueError, match="top_indices holds negative entries"):
            family.update_state(tf.constant([[0, -1]]), tf.constant([[0]]))


# A zero row (padding / OOV item) has cosine 0 with everything: the O(Kd) identity must
# subtract the rows' actual squared norms, not K (this was a bug, found by this test).
def test_ild_with_a_zero_embedding_row_matches_pairwise_cosines_of_the_normalised_rows():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    m = ItemDiversity(num_items=3, ks=(2, 3), item_embeddings=emb)
    m.update_state(tf.constant([[0, 2, 1]]))
    r = _values(m.result())
    # pairwise, with the zero row's cosine taken as 0 (what its normalised vector gives):
    # @2 pair (0, zero): cos 0 -> ILD 1;  @3 pairs (0,zero) (0,1) (zero,1): all 0 -> ILD 1
    assert r["ild_at_2"] == pytest.approx(1.0, **HAND)
    assert r["ild_at_3"] == pytest.approx(1.0, **HAND)


# =============================================================================== 6. one batch per step
# What the families of a step share is computed on its TopKBatch and nowhere else: no
# memo keyed on tensor identity, no trace-time context. The old memos' bug class: two
# batches of one graph with the same tensors or same shapes picking up each other's
# intermediates, or a "positives in search order" promise leaking to unsorted positives.
FAMILY_OF_REFERENCE = {"accuracy": "ranking", "diversity": "diversity", "popularity": "popularity",
                       "exposure": "exposure", "group:user_group": "user_groups"}


def factory_families(case: Case) -> dict:
    return metric_families(KS, N_ITEMS, item_popularity=case.phi, item_groups=case.item_groups,
                           item_group_names=ITEM_GROUPS, user_group_names={"user_group": USER_GROUPS},
                           item_embeddings=case.embeddings)


def test_two_family_sets_in_one_trace_each_see_only_their_own_batch():
    case_a = random_case(0)
    case_a.positives = np.stack([in_search_order(row) for row in case_a.positives])
    # The same top-K tensor and same-shaped positives and groups: only the batch tells them apart.
    case_b = dataclasses.replace(case_a, positives=random_case(0).positives[::-1].copy(),
                                 user_group=case_a.user_group[::-1].copy())
    assert not (np.sort(case_a.positives, axis=1) == np.sort(case_b.positives, axis=1)).all()
    families_a, families_b = factory_families(case_a), factory_families(case_b)

    @tf.function
    def step(top, pos_a, group_a, pos_b, group_b, exclude):
        batch_a = TopKBatch(top, pos_a, user_groups={"user_group": group_a}, exclude=exclude,
                            positives_in_search_order=True)
        batch_b = TopKBatch(top, pos_b, user_groups={"user_group": group_b}, exclude=exclude)  # unsorted
        for key in families_a:  # interleaved: a, b, a, b, ...
            families_a[key].update_state(batch_a)
            families_b[key].update_state(batch_b)

    step(*(tf.constant(x) for x in (case_a.top, case_a.positives, case_a.user_group, case_b.positives,
                                    case_b.user_group, case_a.exclude)))
    for case, families in ((case_a, families_a), (case_b, families_b)):
        want = reference(case)
        for key, family in families.items():
            _assert_close(_values(family.result()), want[FAMILY_OF_REFERENCE[key]], rtol=1e-6, atol=1e-6)


def test_families_of_one_step_compute_the_shared_intermediates_once_per_batch():
    case = random_case(0)
    families = factory_families(case)
    args = [tf.constant(a) for a in (case.top, case.positives, case.user_group, case.exclude)]

    def op_counts(batches: int, in_order: bool) -> collections.Counter:
        @tf.function
        def step(top, pos, group, exclude):
            for _ in range(batches):
                batch = TopKBatch(top, pos, user_groups={"user_group": group}, exclude=exclude,
                                  positives_in_search_order=in_order)
                for family in families.values():
                    family.update_state(batch)

        graph = step.get_concrete_function(*args).graph
        return collections.Counter(op.type for op in graph.get_operations())

    one, two, ordered = op_counts(1, False), op_counts(2, False), op_counts(1, True)
    # One sort of the positives (tf.sort is a TopKV2) and two binary searches (hits, valid
    # count) per batch, however many families read them; none shared across batches.
    assert (one["TopKV2"], one["LowerBound"]) == (1, 2)
    assert (two["TopKV2"], two["LowerBound"]) == (2, 4)
    assert (ordered["TopKV2"], ordered["LowerBound"]) == (0, 2)
    # Per-K item counts (diversity, popularity bias) once, exposure's per K, relevant-item
    # counts once, exposure's relevant shares and popularity bias' exclusions once each.
    assert one["DenseBincount"] == 2 * len(KS) + 3

"""Plain-numpy reference of the streaming top-K metrics, written from docs/design.md section 5.

This module is deliberately naive and independent of ``tfrs_diag.metrics``: explicit
Python loops over queries, ranks and item pairs, float64 throughout, no shared helpers.
It is only used by ``tests/test_metrics_reference.py``.

Input conventions (the ones ``tfrs_diag.metrics`` documents):

- ``top`` [B, K] candidate indices 0..N-1, best first (rank r = column + 1);
- ``positives`` [B, P] held-out relevant items, padded with -1; -2 marks a positive that
  is not in the candidate set: it cannot be retrieved, so it is left out of every
  denominator and only counted (``missing_positives``);
- ``user_group`` [B] user-group index; ``exclude`` [B, S] items left out of the search
  for that query, padded with -1.

Conventions chosen where docs/design.md is silent (each stated where it is used):

- accuracy means are over *evaluated* queries (>= 1 positive in the candidate set);
- 0/0 -> 0 for means and probabilities with an empty denominator (never NaN);
- min/max ratio is 1 when fewer than two groups are present or all values are 0;
- head = the fewest most popular items (ties: lower index first) whose popularity sums
  to at least 80% of the total; tail = the rest.
"""

from __future__ import annotations

import math

import numpy as np

ACCURACY = ("recall", "ndcg", "mrr", "hit_rate")
HEAD_SHARE = 0.8


# --------------------------------------------------------------------------- helpers
def _relevant(row) -> list[int]:
    """The in-catalog relevant items of one query (a set, in input order)."""
    out = []
    for p in row:
        p = int(p)
        if p >= 0 and p not in out:
            out.append(p)
    return out


def _missing(row) -> int:
    return sum(1 for p in row if int(p) == -2)


def _discount(rank: int) -> float:
    """1/log2(r+1) for a rank r counted from 1."""
    return 1.0 / math.log2(rank + 1)


def _safe_div(a: float, b: float) -> float:
    return a / b if b != 0 else 0.0


def per_query_accuracy(top_row, relevant: list[int], k: int) -> dict:
    """Recall, NDCG, MRR and hit of one list's top-k against a non-empty relevant set."""
    rel = set(relevant)
    n_hits = 0
    dcg = 0.0
    rr = 0.0
    for r in range(1, k + 1):
        item = int(top_row[r - 1])
        if item in rel:
            n_hits += 1
            dcg += _discount(r)
            if rr == 0.0:
                rr = 1.0 / r
    idcg = 0.0
    for r in range(1, min(len(rel), k) + 1):
        idcg += _discount(r)
    return {
        "recall": n_hits / len(rel),
        "ndcg": dcg / idcg,
        "mrr": rr,
        "hit_rate": 1.0 if n_hits > 0 else 0.0,
    }


# --------------------------------------------------------------------------- accuracy
def ranking_accuracy(top, positives, ks) -> dict:
    """RankingAccuracy.result(): means over queries with >= 1 in-catalog positive."""
    top = np.asarray(top)
    positives = np.asarray(positives)
    sums = {(name, k): 0.0 for name in ACCURACY for k in ks}
    evaluated = 0
    missing = 0
    for u in range(len(top)):
        missing += _missing(positives[u])
        rel = _relevant(positives[u])
        if not rel:
            continue
        evaluated += 1
        for k in ks:
            for name, value in per_query_accuracy(top[u], rel, k).items():
                sums[(name, k)] += value
    out = {f"{name}_at_{k}": _safe_div(sums[(name, k)], evaluated) for name in ACCURACY for k in ks}
    out["evaluated_queries"] = float(evaluated)
    out["missing_positives"] = float(missing)
    return out


def group_statistics(values: list[float], present: list[bool]) -> tuple[float, float, float]:
    """(max - min, min / max, UserMAD) over the present groups, by explicit loops."""
    vals = [v for v, p in zip(values, present) if p]
    if len(vals) < 2:
        return 0.0, 1.0, 0.0
    hi = max(vals)
    lo = min(vals)
    ratio = lo / hi if hi > 0 else 1.0
    diffs = []
    for a in range(len(vals)):
        for b in range(a + 1, len(vals)):
            diffs.append(abs(vals[a] - vals[b]))
    return hi - lo, ratio, sum(diffs) / len(diffs)


def user_group_accuracy(top, positives, user_group, group_names, ks) -> dict:
    """UserGroupAccuracy.result(): per-group means, gap, ratio, UserMAD, counts."""
    top = np.asarray(top)
    positives = np.asarray(positives)
    user_group = np.asarray(user_group)
    n_groups = len(group_names)
    sums = {(g, name, k): 0.0 for g in range(n_groups) for name in ACCURACY for k in ks}
    counts = [0] * n_groups
    for u in range(len(top)):
        rel = _relevant(positives[u])
        if not rel:
            continue
        g = int(user_group[u])
        counts[g] += 1
        for k in ks:
            for name, value in per_query_accuracy(top[u], rel, k).items():
                sums[(g, name, k)] += value
    out = {f"count/{gname}": float(counts[g]) for g, gname in enumerate(group_names)}
    for k in ks:
        for name in ACCURACY:
            values = [_safe_div(sums[(g, name, k)], counts[g]) for g in range(n_groups)]
            for g, gname in enumerate(group_names):
                out[f"{name}_at_{k}/{gname}"] = values[g]
            gap, ratio, mad = group_statistics(values, [c > 0 for c in counts])
            out[f"{name}_at_{k}_gap"] = gap
            out[f"{name}_at_{k}_ratio"] = ratio
            out[f"{name}_at_{k}_user_mad"] = mad
    return out


# --------------------------------------------------------------------------- catalog side
def item_counts(top, num_items: int, k: int) -> list[int]:
    """c(i): how often item i appears over all top-k lists."""
    c = [0] * num_items
    for row in np.asarray(top):
        for r in range(k):
            c[int(row[r])] += 1
    return c


def gini_sorted(values) -> float:
    """docs/design.md: sum_j (2j - |I| - 1) c_(j) / (|I| N), c sorted ascending, j from 1."""
    c = sorted(float(v) for v in values)
    n = len(c)
    total = sum(c)
    if total == 0:
        return 0.0
    acc = 0.0
    for j in range(1, n + 1):
        acc += (2 * j - n - 1) * c[j - 1]
    return acc / (n * total)


def gini_pairwise(values) -> float:
    """The same index as half the relative mean absolute difference (a cross-check)."""
    c = [float(v) for v in values]
    n = len(c)
    total = sum(c)
    if total == 0:
        return 0.0
    acc = 0.0
    for a in range(n):
        for b in range(n):
            acc += abs(c[a] - c[b])
    return acc / (2.0 * n * total)


def entropy_bits(counts) -> float:
    """-sum p_i log2 p_i with p_i = c(i)/N (0 log 0 = 0)."""
    total = float(sum(counts))
    h = 0.0
    for c in counts:
        if c > 0:
            p = c / total
            h -= p * math.log2(p)
    return h


def self_information(popularity) -> list[float]:
    """-log2 phi(i); phi = 0 replaced by the smallest non-zero phi."""
    phi = [float(x) for x in popularity]
    smallest = min(x for x in phi if x > 0)
    return [-math.log2(x if x > 0 else smallest) for x in phi]


def cosine(a, b) -> float:
    a = [float(x) for x in a]
    b = [float(x) for x in b]
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def item_diversity(top, num_items: int, ks, popularity=None, embeddings=None) -> dict:
    """ItemDiversity.result(): coverage, Gini, entropy (+norm), novelty, ILD (k > 1)."""
    top = np.asarray(top)
    n_queries = len(top)
    info = self_information(popularity) if popularity is not None else None
    out = {}
    for k in ks:
        c = item_counts(top, num_items, k)
        out[f"coverage_at_{k}"] = len({int(i) for row in top for i in row[:k]}) / num_items
        out[f"gini_at_{k}"] = gini_sorted(c)
        h = entropy_bits(c)
        out[f"entropy_at_{k}"] = h
        out[f"entropy_norm_at_{k}"] = h / math.log2(num_items) if num_items > 1 else h
        if info is not None:
            slots = [info[int(i)] for row in top for i in row[:k]]
            out[f"novelty_at_{k}"] = _safe_div(sum(slots), len(slots))
        if embeddings is not None and k > 1:
            ild_sum = 0.0
            for row in top:
                sims = []
                for a in range(k):
                    for b in range(a + 1, k):
                        sims.append(cosine(embeddings[int(row[a])], embeddings[int(row[b])]))
                ild_sum += 1.0 - sum(sims) / len(sims)
            out[f"ild_at_{k}"] = _safe_div(ild_sum, n_queries)
    return out


def head_items(popularity, share: float = HEAD_SHARE) -> list[bool]:
    """Head: the fewest most-popular items whose popularity reaches ``share`` of the total."""
    phi = [float(x) for x in popularity]
    total = sum(phi)
    order = sorted(range(len(phi)), key=lambda i: (-phi[i], i))
    head = [False] * len(phi)
    if total <= 0:
        return head
    acc = 0.0
    for i in order:
        # (1 - 1e-12): an exact 80% such as 0.5 + 0.3 must count as reached despite rounding
        if acc >= share * total * (1 - 1e-12):
            break
        head[i] = True
        acc += phi[i]
    return head


def _std_over_mean(a: float, b: float) -> float:
    """Population std over mean of two numbers = (|a - b| / 2) / ((a + b) / 2)."""
    mean = (a + b) / 2.0
    std = math.sqrt(((a - mean) ** 2 + (b - mean) ** 2) / 2.0)
    return _safe_div(std, mean)


def popularity_bias(top, positives, popularity, ks, is_head=None, exclude=None) -> dict:
    """PopularityBias.result(): ARP, APLT, PopRSP, PopREO over {head, tail}."""
    top = np.asarray(top)
    n_queries = len(top)
    phi = [float(x) for x in popularity]
    head = list(is_head) if is_head is not None else head_items(phi)
    group = [0 if h else 1 for h in head]  # 0 head, 1 tail
    size = [group.count(0), group.count(1)]
    # available candidates per group: |g| per query minus that query's excluded items of g
    available = [n_queries * size[0], n_queries * size[1]]
    if exclude is not None:
        for row in np.asarray(exclude):
            for i in set(int(x) for x in row if int(x) >= 0):
                available[group[i]] -= 1
    relevant = [0, 0]
    rel_sets = []
    for u in range(n_queries):
        rel = _relevant(positives[u]) if positives is not None else []
        rel_sets.append(set(rel))
        for i in rel:
            relevant[group[i]] += 1
    out = {}
    for k in ks:
        arp = aplt = 0.0
        recommended = [0, 0]
        hits = [0, 0]
        for u in range(n_queries):
            items = [int(i) for i in top[u, :k]]
            arp += sum(phi[i] for i in items) / k
            aplt += sum(1 for i in items if group[i] == 1) / k
            for i in items:
                recommended[group[i]] += 1
                if i in rel_sets[u]:
                    hits[group[i]] += 1
        out[f"arp_at_{k}"] = _safe_div(arp, n_queries)
        out[f"aplt_at_{k}"] = _safe_div(aplt, n_queries)
        rsp = [_safe_div(recommended[g], available[g]) for g in (0, 1)]
        reo = [_safe_div(hits[g], relevant[g]) for g in (0, 1)]
        out[f"pop_rsp_at_{k}"] = _std_over_mean(*rsp)
        out[f"pop_reo_at_{k}"] = _std_over_mean(*reo)
    return out


# --------------------------------------------------------------------------- exposure
def item_exposure(top, positives, num_items: int, item_groups, group_names, ks) -> dict:
    """ItemExposure.result(): exposure Gini, shares, relevant shares, disparity, gap."""
    top = np.asarray(top)
    n_groups = len(group_names)
    relevant = [0] * n_groups
    if positives is not None:
        for row in np.asarray(positives):
            for i in _relevant(row):
                relevant[int(item_groups[i])] += 1
    total_rel = sum(relevant)
    rel_share = [_safe_div(r, total_rel) for r in relevant]
    out = {f"relevant_share/{gname}": rel_share[g] for g, gname in enumerate(group_names)}
    for k in ks:
        exp = [0.0] * num_items
        for row in top:
            for r in range(1, k + 1):
                exp[int(row[r - 1])] += _discount(r)
        total = sum(exp)
        out[f"exposure_gini_at_{k}"] = gini_sorted(exp)
        share = [0.0] * n_groups
        for i in range(num_items):
            share[int(item_groups[i])] += _safe_div(exp[i], total)
        disparity = [share[g] / rel_share[g] if rel_share[g] > 0 else 0.0 for g in range(n_groups)]
        for g, gname in enumerate(group_names):
            out[f"exposure_share_at_{k}/{gname}"] = share[g]
            out[f"exposure_disparity_at_{k}/{gname}"] = disparity[g]
        out[f"exposure_gap_at_{k}"] = group_statistics(disparity, [r > 0 for r in relevant])[0]
    return out

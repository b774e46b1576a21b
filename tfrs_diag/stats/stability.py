"""Stability of top-K lists between two evaluations (numpy only, no Keras).

Inputs are the top-K item ids of the same queries at two evaluations (two epochs or two
checkpoints), integer arrays of shape ``[num_queries, K]`` with distinct ids per row, best
first. Ids, not scores, are compared, so a model that only rescales its scores is stable.

- `jaccard` -- ``|A & B| / |A | B|`` of the two top-K sets, per query;
- `rank_biased_overlap` -- RBO_ext of Webber, Moffat and Zobel (2010), eq. 32, for two
  lists of equal depth K with persistence ``p``: ``X_K/K * p**K + (1-p)/p *
  sum_{d=1..K} X_d/d * p**d`` where ``X_d`` is the overlap of the two depth-d prefixes.
  It is 1 for identical lists and weighs the top ranks most (``p=0.9``: the first 10 ranks
  carry about 86% of the weight);
- `top1_changed` -- whether the first item differs, per query;
- `exposure_rank_correlation` -- Spearman's rho (average ranks for ties) between the
  items' exposure counts (how many top-K lists hold the item) at the two evaluations.

>>> before = np.array([[1, 2, 3]])
>>> after = np.array([[1, 3, 2]])
>>> round(float(rank_biased_overlap(before, after, p=0.9)[0]), 4)
0.955
>>> float(jaccard(before, after)[0]), bool(top1_changed(before, after)[0])
(1.0, False)
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1024  # queries per block: the match tensor is [chunk, K, K] booleans


def _pair(previous_top_k, current_top_k) -> tuple[np.ndarray, np.ndarray]:
    prev = np.asarray(previous_top_k)
    curr = np.asarray(current_top_k)
    if prev.ndim != 2 or curr.ndim != 2:
        raise ValueError(
            "previous_top_k and current_top_k must be [num_queries, K] arrays of item ids, "
            f"got shapes {prev.shape} and {curr.shape}"
        )
    if prev.shape != curr.shape:
        raise ValueError(
            "previous_top_k and current_top_k must hold the same queries at the same K, "
            f"got shapes {prev.shape} and {curr.shape}: evaluate both on the same query set"
        )
    if prev.shape[1] == 0:
        raise ValueError("previous_top_k and current_top_k need K >= 1 columns")
    return prev, curr


def _prefix_overlaps(prev: np.ndarray, curr: np.ndarray) -> np.ndarray:
    """``X[q, d-1]`` = size of the intersection of the depth-d prefixes, d = 1..K."""
    n, k = prev.shape
    out = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        p, c = prev[start:start + _CHUNK], curr[start:start + _CHUNK]
        match = p[:, :, None] == c[:, None, :]  # [q, i, j]: prev rank i holds curr rank j's item
        # Overlap at depth d counts matches with i < d and j < d: a 2-D prefix sum's diagonal.
        cum = match.cumsum(axis=1).cumsum(axis=2)
        out[start:start + _CHUNK] = cum[:, np.arange(k), np.arange(k)]
    return out


def jaccard(previous_top_k, current_top_k) -> np.ndarray:
    """Per query, ``|A & B| / |A | B|`` of the two top-K id sets (1 = same set).

    >>> jaccard([[1, 2, 3, 4]], [[4, 5, 1, 6]]).tolist()   # 2 shared of 6 distinct
    [0.3333333333333333]
    """
    prev, curr = _pair(previous_top_k, current_top_k)
    k = prev.shape[1]
    shared = _prefix_overlaps(prev, curr)[:, -1]
    return shared / (2 * k - shared)


def rank_biased_overlap(previous_top_k, current_top_k, p: float = 0.9) -> np.ndarray:
    """Per query, extrapolated rank-biased overlap RBO_ext at persistence ``p`` (0 < p < 1).

    >>> rank_biased_overlap([[1, 2]], [[1, 2]], p=0.5).tolist()
    [1.0]
    >>> rank_biased_overlap([[1, 2]], [[3, 4]], p=0.5).tolist()
    [0.0]
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p (the RBO persistence) must lie in (0, 1), got {p}; 0.9 is usual")
    prev, curr = _pair(previous_top_k, current_top_k)
    k = prev.shape[1]
    overlaps = _prefix_overlaps(prev, curr)
    depth = np.arange(1, k + 1, dtype=np.float64)
    agreement = overlaps / depth  # A_d = X_d / d
    weighted = (agreement * p ** depth).sum(axis=1)
    return agreement[:, -1] * p ** k + (1.0 - p) / p * weighted


def top1_changed(previous_top_k, current_top_k) -> np.ndarray:
    """Per query, True where the first-ranked item differs."""
    prev, curr = _pair(previous_top_k, current_top_k)
    return prev[:, 0] != curr[:, 0]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Runs of equal values share the mean of the ranks they span (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def exposure_rank_correlation(previous_top_k, current_top_k, num_items: int | None = None) -> float:
    """Spearman's rho between item exposure counts at the two evaluations.

    Items are ``0 .. num_items - 1`` (default: up to the largest id seen); an item in no
    list at either evaluation counts as exposure 0 at both. NaN when either count vector is
    constant (rho is undefined there).

    >>> exposure_rank_correlation([[0, 1], [0, 2]], [[0, 1], [0, 2]], num_items=4)
    1.0
    """
    prev, curr = _pair(previous_top_k, current_top_k)
    if num_items is None:
        num_items = int(max(prev.max(), curr.max())) + 1
    if prev.min() < 0 or curr.min() < 0 or max(prev.max(), curr.max()) >= num_items:
        raise ValueError(f"item ids must lie in [0, num_items={num_items}); pass the catalog size as num_items")
    a = _average_ranks(np.bincount(prev.ravel(), minlength=num_items).astype(np.float64))
    b = _average_ranks(np.bincount(curr.ravel(), minlength=num_items).astype(np.float64))
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def stability_summary(previous_top_k, current_top_k, p: float = 0.9, num_items: int | None = None,
                      query_groups=None) -> dict[str, float]:
    """Means over queries, keyed ``jaccard``, ``rbo``, ``top1_changed``, ``exposure_spearman``.

    With ``query_groups`` (one label per query), the per-query means are also given per
    group as ``"<metric>/<group>"``.

    >>> s = stability_summary([[1, 2], [3, 4]], [[1, 2], [4, 3]], num_items=5)
    >>> s["jaccard"], s["top1_changed"]
    (1.0, 0.5)
    """
    prev, curr = _pair(previous_top_k, current_top_k)
    per_query = {
        "jaccard": jaccard(prev, curr),
        "rbo": rank_biased_overlap(prev, curr, p=p),
        "top1_changed": top1_changed(prev, curr).astype(np.float64),
    }
    out = {name: float(v.mean()) for name, v in per_query.items()}
    out["exposure_spearman"] = exposure_rank_correlation(prev, curr, num_items=num_items)
    if query_groups is not None:
        groups = np.asarray(query_groups)
        if groups.shape != (prev.shape[0],):
            raise ValueError(f"query_groups needs one label per query ({prev.shape[0]}), got shape {groups.shape}")
        for g in np.unique(groups):
            mask = groups == g
            for name, v in per_query.items():
                out[f"{name}/{g}"] = float(v[mask].mean())
    return out

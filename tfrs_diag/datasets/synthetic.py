"""A synthetic recommendation data set with planted popularity and fairness effects.

>>> from tfrs_diag.datasets import synthetic
>>> ds = synthetic(num_users=60, num_items=90, num_interactions=900, seed=3)
>>> ds.user_group_names, ds.item_group_names[:2]
(('majority', 'minority'), ('cat0', 'cat1'))
>>> ds.num_interactions, bool(abs(ds.item_popularity.sum() - 1.0) < 1e-12)
(900, True)
"""

from __future__ import annotations

import numbers

import numpy as np

from tfrs_diag.datasets._types import (
    RecDataset,
    denormalise,
    per_user_test_counts,
    split_rows,
)

USER_GROUP_NAMES: tuple[str, str] = ("majority", "minority")

# Planted signal strengths, on the logit scale of the item-sampling softmax.
CATEGORY_AFFINITY = 2.5  # exp(2.5) ~ 12x more likely to pick an item of a preferred category
TASTE_DIM = 8
TASTE_SCALE = 1.5  # std of the per-user latent taste term
RATING_NOISE = 0.6
ACTIVITY_SPREAD = 0.5  # sigma of the log-normal per-user activity within a group
# Bounds the [users, items] logit block so big catalogs stay within a few tens of MB.
_MAX_BLOCK = 4_000_000


def synthetic(
    num_users: int = 1000,
    num_items: int = 1500,
    num_interactions: int = 40000,
    *,
    num_categories: int = 6,
    zipf_exponent: float = 1.0,
    minority_fraction: float = 0.3,
    minority_activity: float = 0.3,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> RecDataset:
    """Generates a deterministic synthetic data set (same ``seed``, same arrays).

    Planted effects, which tests across the project rely on:

    * **Popularity skew.** Item ``i`` has base weight ``1 / rank_i ** zipf_exponent``, the
      ranks in random order over items. At the defaults the top 10% of items hold about
      half of the training interactions (``zipf_exponent=0`` removes the skew).
    * **Two user groups.** ``"majority"`` (``1 - minority_fraction`` of users) and
      ``"minority"``. A minority user's expected interaction count is
      ``minority_activity`` times a majority user's (log-normal spread within a group,
      every user at least one interaction).
    * **Group taste.** Categories are split in two halves at random; each group prefers its
      own half (logit bonus ``CATEGORY_AFFINITY`` = 2.5, so about 90% of a group's
      interactions fall in its half). Every category gets an equal share of each
      popularity tier, so it is only because the majority dominates the interaction log
      that the most popular items lean to the majority's categories, and a popularity
      recommender serves the minority worse (recall@20 about 0.6x the majority's).
    * **Personal taste.** Each user and item has a latent ``TASTE_DIM``-d vector; their dot
      product (std ``TASTE_SCALE``) adds to the logit, so a learned model can beat
      popularity, even within a group.
    * Items for a user are drawn without replacement from
      ``softmax(log base_weight + category bonus + taste)`` (Gumbel top-k): no user-item
      pair repeats.
    * **Ratings** 1..5 are the rounded, standardised affinity (category bonus + taste, not
      popularity) plus Gaussian noise: mean about 3.5.
    * **Features.** Users: ``user_age_bucket`` (int32 0..6) and ``user_gender``
      (``"F"``/``"M"``), independent of group. Items: ``item_category`` (``"cat0"``..,
      near-equal counts) and ``item_year`` (int32 1950..2020, newer items slightly more
      popular: correlation with log train count about 0.2).
    * **Split.** Per user, ``round(test_fraction * n)`` random interactions go to test,
      capped so every user keeps at least one in train. Rows are shuffled.

    Sampling scores every user-item pair, so the cost grows as ``num_users * num_items``
    (about 0.2 s at the defaults, 20 s for 10k users x 20k items).

    >>> ds = synthetic(num_users=40, num_items=50, num_interactions=400, seed=7)
    >>> len(ds.train["item_id"]) + len(ds.test["item_id"])
    400
    >>> ds.train["user_id"].dtype.kind, ds.train["item_index"].dtype.name
    ('U', 'int32')
    """
    _check_positive_int("num_users", num_users, minimum=2, why="(one user per group at least)")
    _check_positive_int("num_items", num_items)
    _check_positive_int("num_interactions", num_interactions)
    _check_positive_int("num_categories", num_categories, minimum=2, why="(each group needs its own categories)")
    _check_positive_int("seed", seed, minimum=0)
    if not isinstance(zipf_exponent, numbers.Real) or not zipf_exponent >= 0:
        raise ValueError(f"zipf_exponent must be a number >= 0 (0 = no skew), got {zipf_exponent!r}")
    _check_fraction("minority_fraction", minority_fraction)
    _check_fraction("minority_activity", minority_activity)
    _check_fraction("test_fraction", test_fraction)
    if num_interactions < num_users:
        raise ValueError(
            f"num_interactions must be >= num_users ({num_users}) so every user has one, got {num_interactions}"
        )
    if num_interactions > num_users * num_items:
        raise ValueError(
            f"num_interactions must be <= num_users * num_items ({num_users * num_items}) because a user "
            f"rates an item at most once, got {num_interactions}"
        )

    rng = np.random.default_rng(seed)

    rank = rng.permutation(num_items) + 1
    log_base = -float(zipf_exponent) * np.log(rank)
    # Categories dealt out in blocks of consecutive ranks, so every category gets an equal share
    # of the head; otherwise a seed that happens to put the top items in the minority's
    # categories would reverse the planted group effect.
    blocks = -(-num_items // num_categories)
    dealt = rng.permuted(np.tile(np.arange(num_categories), (blocks, 1)), axis=1).ravel()[:num_items]
    item_category = dealt[rank - 1].astype(np.int32)
    recency = 0.3 * (1.0 - (rank - 1) / max(num_items - 1, 1)) + 0.7 * rng.random(num_items)
    item_year = (1950 + np.rint(70 * recency)).astype(np.int32)
    item_taste = rng.normal(size=(num_items, TASTE_DIM)) / TASTE_DIM**0.25

    n_minority = min(max(int(round(minority_fraction * num_users)), 1), num_users - 1)
    user_group = np.zeros(num_users, dtype=np.int32)
    user_group[rng.choice(num_users, size=n_minority, replace=False)] = 1
    user_age_bucket = rng.choice(7, size=num_users, p=[0.05, 0.18, 0.34, 0.19, 0.08, 0.08, 0.08]).astype(np.int32)
    user_gender = np.where(rng.random(num_users) < 0.4, "F", "M")
    user_taste = TASTE_SCALE * rng.normal(size=(num_users, TASTE_DIM)) / TASTE_DIM**0.25

    category_order = rng.permutation(num_categories)
    prefers = np.zeros((2, num_categories), dtype=bool)
    prefers[0, category_order[: num_categories // 2]] = True
    prefers[1, category_order[num_categories // 2 :]] = True

    per_user = _interactions_per_user(rng, user_group, num_interactions, num_items, minority_activity)

    user_index, item_index, affinity = _sample_items(
        rng, per_user, log_base, user_group, prefers, item_category, user_taste, item_taste
    )
    latent = affinity + RATING_NOISE * rng.normal(size=affinity.shape)
    z = (latent - latent.mean()) / max(float(latent.std()), 1e-12)
    rating = np.clip(np.rint(3.5 + 1.1 * z), 1, 5).astype(np.float32)

    users = {
        "user_id": np.array([f"u{u}" for u in range(num_users)]),
        "user_index": np.arange(num_users, dtype=np.int32),
        "user_group": user_group,
        "user_age_bucket": user_age_bucket,
        "user_gender": user_gender,
    }
    items = {
        "item_id": np.array([f"i{i}" for i in range(num_items)]),
        "item_index": np.arange(num_items, dtype=np.int32),
        "item_category": item_category,
        "item_year": item_year,
    }
    rows = denormalise(user_index, item_index, rating, users, items)

    key = rng.random(len(user_index))
    by_user = np.lexsort((key, user_index))
    starts = np.concatenate(([0], np.cumsum(per_user)[:-1]))
    rank_in_user = np.empty(len(user_index), dtype=np.int64)
    rank_in_user[by_user] = np.arange(len(user_index)) - np.repeat(starts, per_user)
    is_test = rank_in_user < per_user_test_counts(per_user, test_fraction)[user_index]
    # Shuffled rows: sampled rows come grouped by user, which would make unshuffled batches single-user.
    train, test = split_rows(rows, is_test, rng.permutation(len(user_index)))

    return RecDataset.from_splits(
        train,
        test,
        users,
        items,
        user_group_names=USER_GROUP_NAMES,
        item_group_names=tuple(f"cat{c}" for c in range(num_categories)),
        name=f"synthetic(seed={seed})",
    )


def _interactions_per_user(
    rng: np.random.Generator,
    user_group: np.ndarray,
    num_interactions: int,
    num_items: int,
    minority_activity: float,
) -> np.ndarray:
    """Interaction count per user: >= 1 each, group means in ratio ``minority_activity``, sum exact."""
    num_users = len(user_group)
    relative = np.where(user_group == 1, minority_activity, 1.0)
    group_mean = num_interactions * relative / relative.sum()
    spread = rng.lognormal(0.0, ACTIVITY_SPREAD, size=num_users)
    for g in (0, 1):
        spread[user_group == g] /= spread[user_group == g].mean()
    # Everyone gets one interaction for free; the extras are weighted so each group's expected
    # total still matches its mean (exactly, unless a group mean falls below one).
    extra_weight = np.maximum(group_mean - 1.0, 0.0) * spread
    if extra_weight.sum() <= 0:  # only when there are no extras to hand out
        extra_weight = np.ones(num_users)
    counts = 1 + rng.multinomial(num_interactions - num_users, extra_weight / extra_weight.sum())
    # Nobody can rate more items than exist; hand any overflow to users with room left.
    while (counts > num_items).any():
        overflow = int((counts - num_items).clip(min=0).sum())
        counts = counts.clip(max=num_items)
        room = (num_items - counts).astype(np.float64)
        counts += rng.multinomial(overflow, room / room.sum())
    return counts.astype(np.int64)


def _sample_items(
    rng: np.random.Generator,
    per_user: np.ndarray,
    log_base: np.ndarray,
    user_group: np.ndarray,
    prefers: np.ndarray,
    item_category: np.ndarray,
    user_taste: np.ndarray,
    item_taste: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gumbel top-k per user: items without replacement, with softmax(logit) probabilities."""
    num_users, num_items = len(per_user), len(log_base)
    block = max(1, _MAX_BLOCK // num_items)
    user_parts, item_parts, affinity_parts = [], [], []
    for lo in range(0, num_users, block):
        hi = min(lo + block, num_users)
        k = per_user[lo:hi]
        affinity = CATEGORY_AFFINITY * prefers[user_group[lo:hi]][:, item_category] + user_taste[lo:hi] @ item_taste.T
        perturbed = log_base + affinity + rng.gumbel(size=affinity.shape)
        k_max = int(k.max())
        # Only the k_max best per row need ordering; argpartition avoids sorting whole rows.
        if k_max < num_items:
            top = np.argpartition(-perturbed, k_max - 1, axis=1)[:, :k_max]
        else:
            top = np.broadcast_to(np.arange(num_items), perturbed.shape)
        top_scores = np.take_along_axis(perturbed, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
        keep = np.arange(k_max) < k[:, None]
        rows = np.broadcast_to(np.arange(lo, hi)[:, None], top.shape)
        user_parts.append(rows[keep])
        item_parts.append(top[keep])
        affinity_parts.append(np.take_along_axis(affinity, top, axis=1)[keep])
    return np.concatenate(user_parts), np.concatenate(item_parts), np.concatenate(affinity_parts)


def _check_positive_int(name: str, value: object, minimum: int = 1, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' ' + why if why else ''}, got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")

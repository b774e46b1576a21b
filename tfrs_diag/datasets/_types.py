"""The `RecDataset` container and the popularity helpers every loader shares.

>>> head_tail_split([50, 30, 10, 5, 5]).tolist()
[True, True, False, False, False]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Keys every interaction dict (``train`` and ``test``) carries.
INTERACTION_KEYS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "user_index",
    "item_index",
    "rating",
    "user_group",
    "item_category",
)
#: Keys the ``users`` table carries.
USER_KEYS: tuple[str, ...] = ("user_id", "user_index", "user_group")
#: Keys the ``items`` table carries.
ITEM_KEYS: tuple[str, ...] = ("item_id", "item_index", "item_category")

#: Share of training interactions the head items cover together.
HEAD_COVERAGE = 0.8


def head_tail_split(counts: Sequence[float] | np.ndarray, coverage: float = HEAD_COVERAGE) -> np.ndarray:
    """Marks the head: the fewest most-popular items covering ``coverage`` of all interactions.

    Items are sorted by count, descending (ties keep index order), and taken until their
    cumulative share reaches ``coverage``; the rest is the tail.

    >>> head_tail_split([5, 50, 10, 30, 5]).tolist()   # 50 + 30 = 80% of 100
    [False, True, False, True, False]
    >>> int(head_tail_split([1, 1, 1, 1, 1]).sum())     # 4 of 5 equal items reach 80%
    4
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {counts.shape}")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if counts.size and (counts < 0).any():
        raise ValueError("counts must be non-negative")
    total = counts.sum()
    mask = np.zeros(counts.shape, dtype=bool)
    if total <= 0:
        return mask
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order])
    # The tolerance keeps exact shares such as 80/100 from losing to float rounding of 0.8 * 100.
    n_head = int(np.searchsorted(cumulative, coverage * total * (1.0 - 1e-12), side="left")) + 1
    mask[order[: min(n_head, counts.size)]] = True
    return mask


def item_counts(item_index: np.ndarray, num_items: int) -> np.ndarray:
    """Interactions per item, aligned with the items table.

    >>> item_counts(np.array([0, 2, 2]), 4).tolist()
    [1, 0, 2, 0]
    """
    return np.bincount(np.asarray(item_index, dtype=np.int64), minlength=num_items)[:num_items]


@dataclass(frozen=True, eq=False)  # eq=False: comparing dicts of arrays has no single truth value
class RecDataset:
    """A recommendation data set split into train/test, with its user and item tables.

    ``train`` and ``test`` hold one row per interaction, denormalised (user and item
    features included), so ``tf.data.Dataset.from_tensor_slices(ds.train)`` feeds a
    ranking or retrieval model directly. ``items`` is the candidate catalog;
    ``item_popularity`` and ``item_is_head`` are aligned with it and computed on train.

    >>> ds = RecDataset(
    ...     train={"user_id": np.array(["a", "b"]), "item_id": np.array(["x", "x"]),
    ...            "user_index": np.array([0, 1], np.int32), "item_index": np.array([0, 0], np.int32),
    ...            "rating": np.array([4.0, 5.0], np.float32), "user_group": np.array([0, 1], np.int32),
    ...            "item_category": np.array([0, 0], np.int32)},
    ...     test={"user_id": np.array([], "<U1"), "item_id": np.array([], "<U1"),
    ...           "user_index": np.array([], np.int32), "item_index": np.array([], np.int32),
    ...           "rating": np.array([], np.float32), "user_group": np.array([], np.int32),
    ...           "item_category": np.array([], np.int32)},
    ...     users={"user_id": np.array(["a", "b"]), "user_index": np.array([0, 1], np.int32),
    ...            "user_group": np.array([0, 1], np.int32)},
    ...     items={"item_id": np.array(["x", "y"]), "item_index": np.array([0, 1], np.int32),
    ...            "item_category": np.array([0, 0], np.int32)},
    ...     item_popularity=np.array([1.0, 0.0]), item_is_head=np.array([True, False]),
    ...     user_group_names=("g0", "g1"), item_group_names=("c0",), name="tiny")
    >>> ds.num_users, ds.num_items, ds.num_interactions
    (2, 2, 2)
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    item_popularity: np.ndarray
    item_is_head: np.ndarray
    user_group_names: tuple[str, ...]
    item_group_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        # Cheap structural checks only: a wrong table here would surface much later as a
        # confusing shape error inside a model or metric.
        n_train = _check_table("train", self.train, INTERACTION_KEYS)
        _check_table("test", self.test, INTERACTION_KEYS)
        if set(self.train) != set(self.test):
            raise ValueError(
                f"train and test must have the same keys; only in train: {sorted(set(self.train) - set(self.test))}, "
                f"only in test: {sorted(set(self.test) - set(self.train))}"
            )
        _check_table("users", self.users, USER_KEYS)
        num_items = _check_table("items", self.items, ITEM_KEYS)
        if self.item_popularity.shape != (num_items,) or self.item_is_head.shape != (num_items,):
            raise ValueError(
                f"item_popularity and item_is_head must have shape ({num_items},) to match items, got "
                f"{self.item_popularity.shape} and {self.item_is_head.shape}"
            )
        if n_train == 0:
            raise ValueError("train must hold at least one interaction")

    @property
    def num_users(self) -> int:
        """Number of rows of ``users``."""
        return len(self.users["user_id"])

    @property
    def num_items(self) -> int:
        """Number of rows of ``items`` (the candidate catalog)."""
        return len(self.items["item_id"])

    @property
    def num_interactions(self) -> int:
        """Train plus test interactions."""
        return len(self.train["user_id"]) + len(self.test["user_id"])

    @classmethod
    def from_splits(cls, train: dict, test: dict, users: dict, items: dict, *,
                    user_group_names: tuple[str, ...], item_group_names: tuple[str, ...],
                    name: str) -> "RecDataset":
        """Builds a data set whose popularity and head/tail split derive from ``train``."""
        popularity, is_head = popularity_and_head(train["item_index"], len(items["item_id"]))
        return cls(train=train, test=test, users=users, items=items, item_popularity=popularity,
                   item_is_head=is_head, user_group_names=user_group_names, item_group_names=item_group_names,
                   name=name)

    def describe(self) -> str:
        """A few lines: sizes, sparsity, groups, categories and popularity skew."""
        n_train, n_test = len(self.train["user_id"]), len(self.test["user_id"])
        counts = item_counts(self.train["item_index"], self.num_items)
        n_top = max(1, math.ceil(0.1 * self.num_items))
        top_share = np.sort(counts)[::-1][:n_top].sum() / max(n_train, 1)
        n_head = int(self.item_is_head.sum())
        sparsity = 1.0 - self.num_interactions / (self.num_users * self.num_items)
        user_groups = self.users["user_group"]
        train_groups = self.train["user_group"]
        group_parts = []
        for g, gname in enumerate(self.user_group_names):
            n_users_g = int((user_groups == g).sum())
            n_int_g = int((train_groups == g).sum())
            group_parts.append(
                f"{gname} {n_users_g} users ({n_users_g / self.num_users:.0%}), "
                f"{n_int_g / max(n_train, 1):.0%} of train, {n_int_g / max(n_users_g, 1):.1f} per user"
            )
        cat_counts = np.bincount(self.items["item_category"], minlength=len(self.item_group_names))
        cat_parts = [f"{c}:{int(k)}" for c, k in zip(self.item_group_names, cat_counts) if k]
        ratings = self.train["rating"]
        return "\n".join(
            [
                f"{self.name}: {self.num_users} users, {self.num_items} items, {self.num_interactions} interactions "
                f"({n_train} train / {n_test} test)",
                f"sparsity: {sparsity:.2%} of user-item pairs unobserved",
                "user groups: " + "; ".join(group_parts),
                "items per category: " + " ".join(cat_parts),
                f"popularity: top 10% of items ({n_top}) hold {top_share:.1%} of train interactions; "
                f"head = {n_head} items ({n_head / self.num_items:.1%}) covering >= {HEAD_COVERAGE:.0%}; "
                f"{int((counts == 0).sum())} items unseen in train",
                f"ratings (train): mean {float(ratings.mean()):.2f}, "
                + " ".join(f"{r}:{float(np.mean(ratings == r)):.0%}" for r in range(1, 6)),
            ]
        )


def _check_table(table_name: str, table: Mapping[str, np.ndarray], required: tuple[str, ...]) -> int:
    missing = [k for k in required if k not in table]
    if missing:
        raise ValueError(f"{table_name} is missing required keys {missing}")
    lengths = {k: len(v) for k, v in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all arrays of {table_name} must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def per_user_test_counts(interactions_per_user: np.ndarray, test_fraction: float) -> np.ndarray:
    """How many of each user's interactions go to test: rounded share, at least one kept for train.

    >>> per_user_test_counts(np.array([1, 2, 3, 10]), 0.2).tolist()
    [0, 0, 1, 2]
    """
    n = np.asarray(interactions_per_user, dtype=np.int64)
    return np.minimum(np.rint(test_fraction * n).astype(np.int64), np.maximum(n - 1, 0))


def split_rows(table: Mapping[str, np.ndarray], is_test: np.ndarray, order: np.ndarray) -> tuple[dict, dict]:
    """Splits every array of ``table`` by ``is_test``; rows come out in ``order``."""
    # One gather per array and side: the denormalised string columns are the bulk of the data.
    order = np.asarray(order)
    train_rows, test_rows = order[~is_test[order]], order[is_test[order]]
    return {k: v[train_rows] for k, v in table.items()}, {k: v[test_rows] for k, v in table.items()}


def denormalise(
    user_index: np.ndarray,
    item_index: np.ndarray,
    rating: np.ndarray,
    users: Mapping[str, np.ndarray],
    items: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """One interaction row per (user, item, rating), with every user and item column copied in."""
    rows: dict[str, np.ndarray] = {
        "user_id": users["user_id"][user_index],
        "item_id": items["item_id"][item_index],
        "user_index": np.asarray(user_index, dtype=np.int32),
        "item_index": np.asarray(item_index, dtype=np.int32),
        "rating": np.asarray(rating, dtype=np.float32),
    }
    for k, v in users.items():
        rows.setdefault(k, v[user_index])
    for k, v in items.items():
        rows.setdefault(k, v[item_index])
    return rows


def popularity_and_head(train_item_index: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``item_popularity`` (share of train interactions) and ``item_is_head`` from train rows."""
    counts = item_counts(train_item_index, num_items)
    total = counts.sum()
    popularity = counts / total if total else np.zeros(num_items)
    return popularity.astype(np.float64), head_tail_split(counts)

"""Tests for tfrs_diag.datasets: planted effects of `synthetic`, the MovieLens loader, the schema."""

from __future__ import annotations

import ast
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tfrs_diag.datasets  # noqa: F401  (registers the submodules in sys.modules)
from tfrs_diag.datasets import RecDataset, head_tail_split, movielens_100k, synthetic

# `tfrs_diag.datasets.synthetic` is the function; the modules are reached through sys.modules.
TYPES_MOD = sys.modules["tfrs_diag.datasets._types"]
SYNTHETIC_MOD = sys.modules["tfrs_diag.datasets.synthetic"]
MOVIELENS_MOD = sys.modules["tfrs_diag.datasets.movielens"]
DATASETS_DIR = Path(tfrs_diag.datasets.__file__).parent

INTERACTION_KEYS = {"user_id", "item_id", "user_index", "item_index", "rating", "user_group", "item_category"}


def _movielens_dir() -> Path:
    env = os.environ.get("TFRS_DIAG_MOVIELENS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k"


ML_DIR = _movielens_dir()
needs_movielens = pytest.mark.skipif(
    not all((ML_DIR / f).is_file() for f in ("u.data", "u.item", "u.user")),
    reason=f"MovieLens-100k files not found in {ML_DIR} (set TFRS_DIAG_MOVIELENS_DIR to an unzipped ml-100k)",
)


@pytest.fixture(scope="module")
def ds() -> RecDataset:
    return synthetic()


@pytest.fixture(scope="module")
def ml() -> RecDataset:
    return movielens_100k(ML_DIR)


def _train_counts(d: RecDataset) -> np.ndarray:
    return np.bincount(d.train["item_index"], minlength=d.num_items)


def _all_rows(d: RecDataset, key: str) -> np.ndarray:
    return np.concatenate([d.train[key], d.test[key]])


def _check_schema(d: RecDataset) -> None:
    """Keys, lengths, dtypes and denormalisation of a RecDataset."""
    assert set(d.train) == set(d.test)
    assert INTERACTION_KEYS <= set(d.train)
    assert {"user_id", "user_index", "user_group"} <= set(d.users)
    assert {"item_id", "item_index", "item_category"} <= set(d.items)
    for table in (d.train, d.test, d.users, d.items):
        assert len({len(v) for v in table.values()}) == 1
    for table in (d.train, d.test):
        assert table["user_id"].dtype.kind == "U" and table["item_id"].dtype.kind == "U"
        for key in ("user_index", "item_index", "user_group", "item_category"):
            assert table[key].dtype == np.int32, key
        assert table["rating"].dtype == np.float32
        ui, ii = table["user_index"], table["item_index"]
        # Every user and item column is copied in, consistently with the tables.
        for key, column in d.users.items():
            np.testing.assert_array_equal(table[key], column[ui], err_msg=key)
        for key, column in d.items.items():
            np.testing.assert_array_equal(table[key], column[ii], err_msg=key)
    np.testing.assert_array_equal(d.users["user_index"], np.arange(d.num_users))
    np.testing.assert_array_equal(d.items["item_index"], np.arange(d.num_items))
    assert len(set(d.users["user_id"].tolist())) == d.num_users
    assert len(set(d.items["item_id"].tolist())) == d.num_items
    assert d.users["user_group"].max() < len(d.user_group_names)
    assert d.items["item_category"].max() < len(d.item_group_names)
    assert d.item_popularity.dtype == np.float64 and d.item_is_head.dtype == bool


def _popularity_recall(d: RecDataset, scores_by_group: np.ndarray, k: int = 20) -> np.ndarray:
    """Mean per-user recall@k of a per-group item ranking (train items excluded), per user group."""
    seen = np.zeros((d.num_users, d.num_items), dtype=bool)
    seen[d.train["user_index"], d.train["item_index"]] = True
    group = d.users["user_group"]
    scores = np.where(seen, -np.inf, scores_by_group[group].astype(float))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = np.zeros_like(seen)
    hit[np.arange(d.num_users)[:, None], top] = True
    tu = d.test["user_index"]
    n_test = np.bincount(tu, minlength=d.num_users)
    n_hit = np.bincount(tu, weights=hit[tu, d.test["item_index"]], minlength=d.num_users)
    has_test = n_test > 0
    recall = n_hit[has_test] / n_test[has_test]
    return np.array([recall[group[has_test] == g].mean() for g in range(len(d.user_group_names))])


# --- synthetic: determinism, schema, speed --------------------------------------------------


def test_same_seed_gives_identical_arrays() -> None:
    a, b = synthetic(seed=5), synthetic(seed=5)
    for part in ("train", "test", "users", "items"):
        for key in getattr(a, part):
            np.testing.assert_array_equal(getattr(a, part)[key], getattr(b, part)[key], err_msg=f"{part}.{key}")
    np.testing.assert_array_equal(a.item_popularity, b.item_popularity)


def test_different_seed_gives_different_data() -> None:
    a, b = synthetic(seed=5), synthetic(seed=6)
    assert not np.array_equal(a.item_popularity, b.item_popularity)
    assert not np.array_equal(a.users["user_group"], b.users["user_group"])
    assert not np.array_equal(a.train["rating"][:100], b.train["rating"][:100])


def test_synthetic_schema(ds: RecDataset) -> None:
    _check_schema(ds)
    assert {"user_age_bucket", "user_gender", "item_year"} <= set(ds.train)
    assert ds.user_group_names == ("majority", "minority")
    assert ds.item_group_names == tuple(f"cat{c}" for c in range(6))
    assert ds.train["user_id"][0].startswith("u") and ds.train["item_id"][0].startswith("i")
    assert set(np.unique(ds.users["user_gender"]).tolist()) == {"F", "M"}
    assert ds.users["user_age_bucket"].min() >= 0 and ds.users["user_age_bucket"].max() <= 6
    assert ds.items["item_year"].min() >= 1950 and ds.items["item_year"].max() <= 2020
    # Balanced categories: 1500 items / 6.
    np.testing.assert_array_equal(np.bincount(ds.items["item_category"]), [250] * 6)


def test_synthetic_is_fast() -> None:
    synthetic(seed=1)  # warm-up: first call pays for numpy's lazy imports
    best = min(_timed(lambda: synthetic(seed=2)) for _ in range(2))
    assert best < 1.0, f"synthetic() at default size took {best:.2f} s"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_no_user_item_pair_repeats(ds: RecDataset) -> None:
    pairs = _all_rows(ds, "user_index").astype(np.int64) * ds.num_items + _all_rows(ds, "item_index")
    assert len(np.unique(pairs)) == ds.num_interactions


# --- synthetic: planted effects --------------------------------------------------------------


def test_zipf_skew_and_popularity_matches_train_counts(ds: RecDataset) -> None:
    counts = _train_counts(ds)
    np.testing.assert_allclose(ds.item_popularity, counts / counts.sum(), rtol=0, atol=1e-15)
    assert math.isclose(ds.item_popularity.sum(), 1.0, abs_tol=1e-12)
    top_share = np.sort(counts)[::-1][: ds.num_items // 10].sum() / counts.sum()
    assert top_share > 0.4, top_share
    flat = synthetic(zipf_exponent=0.0)
    flat_counts = _train_counts(flat)
    flat_share = np.sort(flat_counts)[::-1][: flat.num_items // 10].sum() / flat_counts.sum()
    assert flat_share < 0.3 < top_share, (flat_share, top_share)


def test_head_tail_split_hand_computed() -> None:
    # 50/100 = 0.5 < 0.8, (50+30)/100 = 0.8 >= 0.8: head = the first two.
    assert head_tail_split([50, 30, 10, 5, 5]).tolist() == [True, True, False, False, False]
    assert head_tail_split([5, 10, 30, 5, 50]).tolist() == [False, False, True, False, True]
    # 50+29 = 79 < 80, so a third item is needed.
    assert head_tail_split([50, 29, 11, 5, 5]).tolist() == [True, True, True, False, False]
    assert head_tail_split([0, 0, 7]).tolist() == [False, False, True]
    assert head_tail_split(np.array([3, 3, 3, 3, 3])).sum() == 4  # 4 x 20% = 80%
    assert head_tail_split([0, 0]).tolist() == [False, False]


def test_item_is_head_is_smallest_popular_prefix(ds: RecDataset) -> None:
    counts = _train_counts(ds)
    head = ds.item_is_head
    assert counts[head].min() >= counts[~head].max()
    assert counts[head].sum() >= 0.8 * counts.sum()
    assert counts[head].sum() - counts[head].min() < 0.8 * counts.sum()


def test_minority_users_are_less_active(ds: RecDataset) -> None:
    per_user = np.bincount(_all_rows(ds, "user_index"), minlength=ds.num_users)
    group = ds.users["user_group"]
    assert (group == 1).sum() == 300
    ratio = per_user[group == 1].mean() / per_user[group == 0].mean()
    assert 0.25 < ratio < 0.35, ratio
    assert per_user.min() >= 1 and per_user.sum() == 40000
    other = synthetic(minority_fraction=0.5, minority_activity=0.8, seed=3)
    per_user = np.bincount(_all_rows(other, "user_index"), minlength=other.num_users)
    group = other.users["user_group"]
    assert (group == 1).sum() == 500
    assert 0.72 < per_user[group == 1].mean() / per_user[group == 0].mean() < 0.88


def test_groups_prefer_complementary_halves_of_categories(ds: RecDataset) -> None:
    group, cat = ds.train["user_group"], ds.train["item_category"]
    shares = np.stack([np.bincount(cat[group == g], minlength=6) / (group == g).sum() for g in (0, 1)])
    majority_side = shares[0] > shares[1]
    assert majority_side.sum() == 3  # each group over-indexes on half of the 6 categories
    assert shares[0, majority_side].sum() > 0.8
    assert shares[1, ~majority_side].sum() > 0.8


def test_popularity_serves_minority_worse_and_group_signal_is_learnable(ds: RecDataset) -> None:
    counts = _train_counts(ds)
    global_recall = _popularity_recall(ds, np.stack([counts, counts]))
    assert global_recall[1] < 0.8 * global_recall[0], global_recall
    by_group = np.stack(
        [np.bincount(ds.train["item_index"][ds.train["user_group"] == g], minlength=ds.num_items) for g in (0, 1)]
    )
    group_recall = _popularity_recall(ds, by_group)
    assert group_recall[1] > 1.5 * global_recall[1], (group_recall, global_recall)


def test_ratings_carry_affinity_signal(ds: RecDataset) -> None:
    r = ds.train["rating"]
    np.testing.assert_array_equal(r, np.rint(r))
    assert set(np.unique(r).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.0 < r.mean() < 4.0
    group, cat = ds.train["user_group"], ds.train["item_category"]
    shares = np.stack([np.bincount(cat[group == g], minlength=6) / (group == g).sum() for g in (0, 1)])
    preferred = shares[group, cat] > shares[1 - group, cat]
    assert r[preferred].mean() > r[~preferred].mean() + 1.0


def test_newer_items_are_slightly_more_popular(ds: RecDataset) -> None:
    corr = np.corrcoef(ds.items["item_year"], np.log1p(_train_counts(ds)))[0, 1]
    assert 0.05 < corr < 0.6, corr


# --- synthetic: split, describe, arguments ---------------------------------------------------


def test_split_loses_nothing_and_keeps_every_user_in_train(ds: RecDataset) -> None:
    assert len(ds.train["user_id"]) + len(ds.test["user_id"]) == 40000
    train_per_user = np.bincount(ds.train["user_index"], minlength=ds.num_users)
    test_per_user = np.bincount(ds.test["user_index"], minlength=ds.num_users)
    total = train_per_user + test_per_user
    assert train_per_user.min() >= 1
    np.testing.assert_array_equal(test_per_user, np.minimum(np.rint(0.2 * total), total - 1))
    assert 0.19 < len(ds.test["user_id"]) / 40000 < 0.21


def test_tiny_and_full_extremes() -> None:
    one_each = synthetic(num_users=5, num_items=4, num_interactions=5)
    assert len(one_each.train["user_id"]) == 5 and len(one_each.test["user_id"]) == 0
    _check_schema(one_each)
    full = synthetic(num_users=6, num_items=5, num_interactions=30, minority_fraction=0.5)
    np.testing.assert_array_equal(np.bincount(_all_rows(full, "user_index")), [5] * 6)
    _check_schema(full)


def test_describe_reports_counts_groups_and_skew(ds: RecDataset) -> None:
    text = ds.describe()
    counts = _train_counts(ds)
    top_share = np.sort(counts)[::-1][:150].sum() / counts.sum()
    assert "1000 users, 1500 items, 40000 interactions" in text
    assert f"{top_share:.1%}" in text
    assert "majority 700 users" in text and "minority 300 users" in text
    assert f"{1 - 40000 / 1500000:.2%}" in text  # sparsity
    assert f"head = {int(ds.item_is_head.sum())} items" in text


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_users": 0}, "num_users"),
        ({"num_users": 1}, "num_users"),
        ({"num_users": 2.5}, "num_users"),
        ({"num_items": -3}, "num_items"),
        ({"num_interactions": 0}, "num_interactions"),
        ({"num_interactions": 999}, "num_interactions"),  # fewer than users
        ({"num_users": 10, "num_items": 10, "num_interactions": 101}, "num_interactions"),  # more than pairs
        ({"num_categories": 1}, "num_categories"),
        ({"zipf_exponent": -1.0}, "zipf_exponent"),
        ({"minority_fraction": 0.0}, "minority_fraction"),
        ({"minority_fraction": 1.0}, "minority_fraction"),
        ({"minority_activity": 1.5}, "minority_activity"),
        ({"test_fraction": 0}, "test_fraction"),
        ({"test_fraction": True}, "test_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_synthetic_arguments_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        synthetic(**kwargs)


def test_recdataset_rejects_inconsistent_tables(ds: RecDataset) -> None:
    short = dict(ds.train, rating=ds.train["rating"][:-1])
    with pytest.raises(ValueError, match="same length"):
        RecDataset(short, ds.test, ds.users, ds.items, ds.item_popularity, ds.item_is_head, ("a", "b"), ("c",), "x")
    no_rating = {k: v for k, v in ds.test.items() if k != "rating"}
    with pytest.raises(ValueError, match="rating"):
        RecDataset(ds.train, no_rating, ds.users, ds.items, ds.item_popularity, ds.item_is_head, ("a", "b"), ("c",), "")


# --- module hygiene ---------------------------------------------------------------------------


def test_modules_import_only_numpy_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "tfrs_diag"}
    for path in DATASETS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
                if roots[0] == "tfrs_diag":
                    assert (node.module or "").startswith("tfrs_diag.datasets"), (path.name, node.module)
            else:
                continue
            assert set(roots) <= allowed, (path.name, roots)


# --- MovieLens loader on small hand-made files (always runs) ---------------------------------


def _flags(*on: int) -> str:
    return "|".join("1" if g in on else "0" for g in range(19))


def _write_fake_movielens(directory: Path, *, genre_file: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.user").write_text("2|17|F|student|11111\n1|56|M|writer|22222\n10|25|M|other|33333\n")
    (directory / "u.item").write_bytes(
        "\n".join(
            [
                f"1|Toy Story (1995)|01-Jan-1995||http://x|{_flags(3, 4, 5)}",
                f"3|Misérables, Les (1995)|15-Dec-1995||http://y|{_flags(8)}",
                f"2|unknown||||{_flags(0)}",
                f"4|No Genre (1990)|01-Jan-1990||http://z|{_flags()}",
            ]
        ).encode("latin-1")
        + b"\n"
    )
    rows = [  # user, item, rating, timestamp
        (1, 1, 5, 100), (1, 2, 3, 400), (1, 3, 4, 500), (1, 4, 1, 300),
        (2, 1, 4, 50), (2, 4, 2, 60),
        (10, 2, 5, 10),
    ]  # fmt: skip
    (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    if genre_file:
        names = [f"G{g}" for g in range(19)]
        (directory / "u.genre").write_text("".join(f"{n}|{g}\n" for g, n in enumerate(names)) + "\n")


def test_movielens_loader_on_hand_made_files(tmp_path: Path) -> None:
    _write_fake_movielens(tmp_path)
    d = movielens_100k(tmp_path, test_fraction=0.4)
    _check_schema(d)
    assert d.users["user_id"].tolist() == ["1", "2", "10"]  # numeric order, raw ids
    assert d.items["item_id"].tolist() == ["1", "2", "3", "4"]
    assert d.users["user_age_bucket"].tolist() == [6, 0, 2]
    assert d.users["user_group"].tolist() == [1, 0, 1] and d.user_group_names == ("F", "M")
    assert d.items["item_title"][2] == "Misérables, Les (1995)"  # latin-1 byte 0xE9
    assert d.items["item_year"].tolist() == [1995, 0, 1995, 1990]
    assert d.items["item_genres"].shape == (4, 19) and d.items["item_genres"][0].sum() == 3
    assert d.items["item_category"].tolist() == [3, 0, 8, 0]
    assert d.item_group_names[:2] == ("G0", "G1")
    assert d.train["item_genres"].shape == (len(d.train["item_id"]), 19)
    # User 1: round(0.4 * 4) = 2 latest (t=500, 400) to test; user 2: round(0.8) = 1; user 10 keeps its only one.
    test_pairs = sorted(zip(d.test["user_id"].tolist(), d.test["timestamp"].tolist()))
    assert test_pairs == [("1", 400), ("1", 500), ("2", 60)]
    assert sorted(d.train["timestamp"].tolist()) == [10, 50, 100, 300]
    np.testing.assert_allclose(d.item_popularity, [2 / 4, 1 / 4, 0, 1 / 4])
    assert d.item_is_head.tolist() == [True, True, False, True]  # 2 + 1 = 75% < 80%: a third item is needed
    np.testing.assert_array_equal(d.train["item_title"], d.items["item_title"][d.train["item_index"]])


def test_movielens_min_rating_keeps_the_time_split(tmp_path: Path) -> None:
    _write_fake_movielens(tmp_path)
    full = movielens_100k(tmp_path, test_fraction=0.4)
    liked = movielens_100k(tmp_path, test_fraction=0.4, min_rating=4)
    assert liked.train["rating"].tolist() and liked.test["rating"].tolist()
    assert liked.train["rating"].min() >= 4 and liked.test["rating"].min() >= 4
    for part in ("train", "test"):
        kept = getattr(full, part)["rating"] >= 4
        np.testing.assert_array_equal(getattr(liked, part)["timestamp"], getattr(full, part)["timestamp"][kept])
    counts = np.bincount(liked.train["item_index"], minlength=4)
    np.testing.assert_allclose(liked.item_popularity, counts / counts.sum())
    assert liked.num_users == 3 and liked.num_items == 4  # tables are not filtered


def test_movielens_default_genre_names_without_u_genre(tmp_path: Path) -> None:
    _write_fake_movielens(tmp_path, genre_file=False)
    d = movielens_100k(tmp_path)
    assert len(d.item_group_names) == 19
    assert d.item_group_names[0] == "unknown" and d.item_group_names[-1] == "Western"


def test_movielens_missing_files_are_named(tmp_path: Path) -> None:
    _write_fake_movielens(tmp_path)
    (tmp_path / "u.item").unlink()
    (tmp_path / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match="grouplens.org/datasets/movielens/100k") as err:
        movielens_100k(tmp_path)
    message = str(err.value)
    assert "u.item" in message and "u.user" in message and "u.data" not in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        movielens_100k(tmp_path / "nowhere")


def test_movielens_unknown_ids_and_bad_arguments(tmp_path: Path) -> None:
    _write_fake_movielens(tmp_path)
    with pytest.raises(ValueError, match="^test_fraction"):
        movielens_100k(tmp_path, test_fraction=1.0)
    with pytest.raises(ValueError, match="^min_rating"):
        movielens_100k(tmp_path, min_rating=6)
    with pytest.raises(ValueError, match="^seed"):
        movielens_100k(tmp_path, seed=-2)
    with (tmp_path / "u.data").open("a") as f:
        f.write("99\t1\t3\t7\n")
    with pytest.raises(ValueError, match="user id 99"):
        movielens_100k(tmp_path)


# --- MovieLens-100k, the real files ----------------------------------------------------------


@pytest.mark.movielens
@needs_movielens
def test_movielens_sizes_and_schema(ml: RecDataset) -> None:
    _check_schema(ml)
    assert (ml.num_users, ml.num_items, ml.num_interactions) == (943, 1682, 100000)
    assert ml.user_group_names == ("F", "M")
    assert len(ml.item_group_names) == 19 and ml.item_group_names[1] == "Action"
    assert ml.items["item_title"][0] == "Toy Story (1995)" and ml.items["item_id"][0] == "1"
    assert ml.items["item_year"][0] == 1995
    assert {"user_occupation", "item_title", "item_year", "item_genres", "timestamp"} <= set(ml.train)
    counts = _train_counts(ml)
    np.testing.assert_allclose(ml.item_popularity, counts / counts.sum())
    np.testing.assert_array_equal(ml.item_is_head, head_tail_split(counts))


@pytest.mark.movielens
@needs_movielens
def test_movielens_users_parsed_independently(ml: RecDataset) -> None:
    lines = (ML_DIR / "u.user").read_text(encoding="latin-1").splitlines()
    edges = [(18, 0), (25, 1), (35, 2), (45, 3), (50, 4), (56, 5)]
    for line in lines[:5] + lines[-3:]:
        uid, age, gender, occupation, _ = line.split("|")
        expected = next((b for edge, b in edges if int(age) < edge), 6)
        row = ml.users["user_id"].tolist().index(uid)
        assert ml.users["user_age_bucket"][row] == expected, (uid, age)
        assert ml.users["user_gender"][row] == gender
        assert ml.users["user_occupation"][row] == occupation
        assert ml.users["user_group"][row] == ("F", "M").index(gender)


@pytest.mark.movielens
@needs_movielens
def test_movielens_titles_decoded_as_latin1(ml: RecDataset) -> None:
    raw = (ML_DIR / "u.item").read_bytes().decode("latin-1").splitlines()
    titles = {line.split("|")[0]: line.split("|")[1] for line in raw if line}
    assert [titles[i] for i in ml.items["item_id"].tolist()] == ml.items["item_title"].tolist()


@pytest.mark.movielens
@needs_movielens
def test_movielens_test_set_is_each_users_latest(ml: RecDataset) -> None:
    n_users = ml.num_users
    train_last = np.full(n_users, -1)
    np.maximum.at(train_last, ml.train["user_index"], ml.train["timestamp"])
    test_first = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(test_first, ml.test["user_index"], ml.test["timestamp"])
    assert (train_last <= test_first).all()
    test_per_user = np.bincount(ml.test["user_index"], minlength=n_users)
    per_user = np.bincount(ml.train["user_index"], minlength=n_users) + test_per_user
    np.testing.assert_array_equal(test_per_user, np.minimum(np.rint(0.2 * per_user), per_user - 1))


@pytest.mark.movielens
@needs_movielens
def test_movielens_min_rating_filter() -> None:
    ratings = np.loadtxt(ML_DIR / "u.data", dtype=np.int64)[:, 2]
    liked = movielens_100k(ML_DIR, min_rating=4)
    assert liked.num_interactions == int((ratings >= 4).sum())
    assert liked.train["rating"].min() == 4 and liked.test["rating"].min() == 4
    counts = _train_counts(liked)
    np.testing.assert_allclose(liked.item_popularity, counts / counts.sum())


@pytest.mark.movielens
def test_dicts_feed_tf_data_directly(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    _write_fake_movielens(tmp_path)
    for d in (synthetic(num_users=20, num_items=30, num_interactions=200), movielens_100k(tmp_path)):
        spec = tf.data.Dataset.from_tensor_slices(d.train).element_spec
        assert spec["user_id"].dtype == tf.string and spec["item_id"].dtype == tf.string
        assert spec["rating"].dtype == tf.float32 and spec["item_index"].dtype == tf.int32
    assert spec["item_genres"].shape == (19,)
    first = next(iter(tf.data.Dataset.from_tensor_slices(d.train).batch(2)))
    assert first["item_title"].dtype == tf.string and first["item_genres"].shape == (2, 19)

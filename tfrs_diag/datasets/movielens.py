"""Loader for the GroupLens MovieLens-100k files (``u.data``, ``u.item``, ``u.user``).

The files are not shipped (their licence forbids redistribution); download ml-100k from
https://grouplens.org/datasets/movielens/100k/ and pass its directory.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

from tfrs_diag.datasets._types import (
    RecDataset,
    denormalise,
    per_user_test_counts,
    split_rows,
)

DOWNLOAD_URL = "https://grouplens.org/datasets/movielens/100k/"
REQUIRED_FILES: tuple[str, ...] = ("u.data", "u.item", "u.user")
# Used when u.genre is absent; the order of the 19 genre flags in u.item.
DEFAULT_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
#: Lower edges of age buckets 1..6 (bucket 0 is under 18), the MovieLens-1M convention.
AGE_BUCKET_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
GENDERS: tuple[str, str] = ("F", "M")


def age_bucket(age: np.ndarray | int) -> np.ndarray:
    """Maps ages to buckets <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ as 0..6.

    >>> age_bucket(np.array([7, 18, 24, 25, 49, 50, 55, 56, 73])).tolist()
    [0, 1, 1, 2, 4, 5, 5, 6, 6]
    """
    return np.digitize(np.asarray(age), AGE_BUCKET_EDGES).astype(np.int32)


def movielens_100k(
    path: str | os.PathLike[str],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_rating: float | None = None,
) -> RecDataset:
    """Loads ml-100k from directory ``path`` as a `RecDataset`.

    IDs are the raw MovieLens ids as strings (``"1"``, ``"242"``), as in the TFRS
    tutorials. ``users`` is ordered by user id, ``items`` by movie id.

    * User features: ``user_gender`` (str), ``user_age_bucket`` (int32, see `age_bucket`),
      ``user_occupation`` (str); ``user_group`` is the gender, ``user_group_names`` ``("F", "M")``.
    * Item features: ``item_title`` (str, decoded as latin-1), ``item_year`` (int32 from the
      release date, 0 when unknown), ``item_genres`` (int32 multi-hot ``[n, 19]``) and
      ``item_category``, the first genre flag set (0, ``"unknown"``, when none is);
      ``item_group_names`` are the genre names.
    * Interactions also carry ``timestamp`` (int64, Unix seconds).
    * Split: for each user the latest ``round(test_fraction * n)`` ratings (at least one
      kept for train) go to test; ``seed`` only breaks timestamp ties.
    * ``min_rating``: after the split, ratings below it are dropped from train and test
      (the retrieval convention: only liked movies count as positives), so the time split
      stays the same with or without the filter. Popularity and head/tail are computed on
      the train set returned.

    Raises FileNotFoundError naming any missing file, ValueError on bad arguments or
    malformed files.

    >>> import os
    >>> ds = movielens_100k(os.environ["TFRS_DIAG_MOVIELENS_DIR"])  # a directory with u.data, u.item, u.user
    >>> ds.num_users, ds.num_items, ds.num_interactions
    (943, 1682, 100000)
    >>> ds.user_group_names, ds.train["item_genres"].shape[1], str(ds.items["item_title"][0])
    (('F', 'M'), 19, 'Toy Story (1995)')
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if min_rating is not None and (
        isinstance(min_rating, bool) or not isinstance(min_rating, numbers.Real) or not 1 <= min_rating <= 5
    ):
        raise ValueError(f"min_rating must be None or a number between 1 and 5 (e.g. 4), got {min_rating!r}")

    directory = Path(path)
    _check_files(directory)

    users = _read_users(directory / "u.user")
    genre_names = _read_genre_names(directory / "u.genre")
    items = _read_items(directory / "u.item", len(genre_names))
    ratings = _read_ratings(directory / "u.data")

    user_pos = _positions(users["user_id"].astype(np.int64), ratings[:, 0], "u.data", "user id", "u.user")
    item_pos = _positions(items["item_id"].astype(np.int64), ratings[:, 1], "u.data", "item id", "u.item")
    timestamp = ratings[:, 3]
    rows = denormalise(user_pos, item_pos, ratings[:, 2], users, items)
    rows["timestamp"] = timestamp

    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(timestamp))
    newest_first = np.lexsort((tiebreak, -timestamp, user_pos))
    per_user = np.bincount(user_pos, minlength=len(users["user_id"]))
    starts = np.concatenate(([0], np.cumsum(per_user)[:-1]))
    rank_in_user = np.empty(len(timestamp), dtype=np.int64)
    rank_in_user[newest_first] = np.arange(len(timestamp)) - np.repeat(starts, per_user)
    is_test = rank_in_user < per_user_test_counts(per_user, test_fraction)[user_pos]

    keep = np.ones(len(timestamp), dtype=bool) if min_rating is None else ratings[:, 2] >= min_rating
    # Rows keep file order within train and test; only the filtered-out ones disappear.
    train, test = split_rows(rows, is_test, np.flatnonzero(keep))
    if len(train["user_id"]) == 0:
        raise ValueError(f"min_rating={min_rating} leaves no training interactions")

    return RecDataset.from_splits(
        train,
        test,
        users,
        items,
        user_group_names=GENDERS,
        item_group_names=genre_names,
        name="movielens-100k" if min_rating is None else f"movielens-100k(rating>={min_rating:g})",
    )


def _check_files(directory: Path) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MovieLens-100k directory {str(directory)!r} does not exist; it must hold "
            f"{', '.join(REQUIRED_FILES)}. Download ml-100k from {DOWNLOAD_URL} and unzip it."
        )
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"MovieLens-100k file(s) missing in {str(directory)!r}: {', '.join(missing)}. "
            f"Download ml-100k from {DOWNLOAD_URL} and unzip it there."
        )


def _read_lines(path: Path) -> list[str]:
    # GroupLens wrote the files in latin-1, which also decodes any byte, so one odd byte cannot abort loading.
    return [line for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]


def _read_ratings(path: Path) -> np.ndarray:
    """u.data as an int64 array [n, 4]: user id, item id, rating, timestamp."""
    fields = path.read_bytes().split()
    if len(fields) % 4:
        raise ValueError(f"{path}: expected 4 tab-separated fields per line (user, item, rating, timestamp)")
    try:
        table = np.array(fields, dtype=np.int64).reshape(-1, 4)
    except ValueError as err:
        raise ValueError(f"{path}: non-integer field ({err})") from None
    if len(table) == 0:
        raise ValueError(f"{path} holds no ratings")
    if ((table[:, 2] < 1) | (table[:, 2] > 5)).any():
        raise ValueError(f"{path}: ratings must be in 1..5")
    return table


def _read_users(path: Path) -> dict[str, np.ndarray]:
    parts = [line.split("|") for line in _read_lines(path)]
    bad = [i + 1 for i, p in enumerate(parts) if len(p) < 5]
    if bad:
        raise ValueError(f"{path}: line {bad[0]} has fewer than 5 '|'-separated fields")
    parts.sort(key=lambda p: int(p[0]))
    gender = np.array([p[2].strip() for p in parts])
    unknown = sorted(set(gender.tolist()) - set(GENDERS))
    if unknown:
        raise ValueError(f"{path}: unknown gender value(s) {unknown}, expected F or M")
    return {
        "user_id": np.array([p[0].strip() for p in parts]),
        "user_index": np.arange(len(parts), dtype=np.int32),
        "user_group": (gender == "M").astype(np.int32),
        "user_gender": gender,
        "user_age_bucket": age_bucket(np.array([int(p[1]) for p in parts])),
        "user_occupation": np.array([p[3].strip() for p in parts]),
    }


def _read_genre_names(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return DEFAULT_GENRES
    pairs = [line.split("|") for line in _read_lines(path)]
    names = {int(index): name for name, index in pairs}
    return tuple(names[i] for i in range(len(names)))


def _read_items(path: Path, num_genres: int) -> dict[str, np.ndarray]:
    parts = [line.split("|") for line in _read_lines(path)]
    bad = [i + 1 for i, p in enumerate(parts) if len(p) != 5 + num_genres]
    if bad:
        raise ValueError(f"{path}: line {bad[0]} should have {5 + num_genres} '|'-separated fields")
    parts.sort(key=lambda p: int(p[0]))
    genres = np.array([p[5:] for p in parts], dtype=np.int32).reshape(len(parts), num_genres)
    # argmax of an all-zero row is 0, the "unknown" genre: the right fallback.
    first_genre = genres.argmax(axis=1).astype(np.int32)
    return {
        "item_id": np.array([p[0].strip() for p in parts]),
        "item_index": np.arange(len(parts), dtype=np.int32),
        "item_category": first_genre,
        "item_title": np.array([p[1] for p in parts]),
        "item_year": np.array([_year(p[2]) for p in parts], dtype=np.int32),
        "item_genres": genres,
    }


def _year(release_date: str) -> int:
    """'01-Jan-1995' -> 1995; empty or malformed -> 0."""
    tail = release_date.strip().rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) == 4 else 0


def _positions(table_ids: np.ndarray, ids: np.ndarray, file: str, what: str, table_file: str) -> np.ndarray:
    """Row of each id in the sorted id table; unknown ids are an error, not a silent drop."""
    pos = np.searchsorted(table_ids, ids)
    pos_clipped = np.minimum(pos, len(table_ids) - 1)
    unknown = table_ids[pos_clipped] != ids
    if unknown.any():
        raise ValueError(f"{file} references {what} {int(ids[unknown][0])}, which is not in {table_file}")
    return pos_clipped.astype(np.int64)

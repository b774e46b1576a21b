"""Embedding-table health: spectrum (collapse), dead rows, row norms by popularity bucket.

Pure numpy over arrays the caller reads from the table (a row sample, the row norms,
the usage counts), so a table of millions of rows costs one norm pass and one small SVD.

- **Information abundance** (Guo et al., ICML 2024): ``IA = sum_i sigma_i / max_i sigma_i``
  of the table's singular values. A table whose rows span all ``d`` directions evenly has
  IA near ``d``; a collapsed one, whose rows lie near a few directions, near 1.
- **Effective rank** (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_i = sigma_i / sum sigma``.
- Singular values come from a uniform row sample (``max_rows``, seeded): for ``n >> d``
  the sample's spectrum, scaled, estimates the table's (IA and effective rank are
  scale-free, so the scale does not matter).

>>> x = np.outer(np.arange(1.0, 5.0), [1.0, 2.0, 0.0])    # rank one
>>> round(information_abundance(singular_values(x)), 6)
1.0
>>> information_abundance(np.array([3.0, 3.0, 3.0]))        # perfectly spread
3.0
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def sample_rows(num_rows: int, max_rows: int, *, candidates: np.ndarray | None = None,
                seed: int = 0) -> np.ndarray:
    """Sorted row indices: all ``candidates`` (default all rows) or a uniform sample of ``max_rows``.

    >>> sample_rows(5, 10).tolist(), len(sample_rows(1000, 10))
    ([0, 1, 2, 3, 4], 10)
    """
    pool = np.arange(num_rows) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if len(pool) <= max_rows:
        return np.sort(pool)
    return np.sort(np.random.default_rng(seed).choice(pool, size=max_rows, replace=False))


def singular_values(rows: np.ndarray) -> np.ndarray:
    """Singular values (descending) of a ``[n, d]`` block of rows, in float64.

    For ``n > d`` they are the square roots of the eigenvalues of the ``d x d`` Gram
    matrix ``X^T X`` (one ``n d^2`` product, about 10x cheaper than an SVD of ``X``);
    float64 keeps the small ones accurate enough for sums and ratios.

    >>> singular_values(np.array([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])).tolist()
    [4.0, 3.0]
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be a [n, d] matrix, got shape {rows.shape}")
    if rows.size == 0:
        return np.zeros(0)
    n, d = rows.shape
    if n <= d:
        return np.linalg.svd(rows, compute_uv=False)
    eig = np.linalg.eigvalsh(rows.T @ rows)[::-1]
    return np.sqrt(np.clip(eig, 0.0, None))


def table_statistics(table, rows):
    """Row norms of the whole ``table`` and singular values of ``table[rows]``, in TF.

    Returns ``(norms [n] float32, sigma [d] float64 descending, finite bool)``; the
    spectrum is that of the ``d x d`` Gram matrix of the gathered rows (its eigenvalues
    are the squared singular values), so the cost is one norm pass over the table plus
    ``len(rows) * d^2``. Non-finite rows are zeroed and ``finite`` is False. Meant to be
    wrapped in one `tf.function` per table (TensorFlow's thread pool is busy during
    `fit`; numpy's BLAS threads competing with it made the same SVD 10-50x slower).
    """
    from tfrs_diag._keras import tf

    norms = tf.norm(tf.cast(table, tf.float32), axis=1)
    block = tf.cast(tf.gather(table, rows), tf.float64)
    finite = tf.reduce_all(tf.math.is_finite(block))
    block = tf.where(tf.math.is_finite(block), block, tf.zeros_like(block))
    eig = tf.linalg.eigvalsh(tf.matmul(block, block, transpose_a=True))
    return norms, tf.sqrt(tf.maximum(tf.reverse(eig, [0]), 0.0)), finite


def information_abundance(sigma: Sequence[float]) -> float:
    """``sum(sigma) / max(sigma)`` (0 for an all-zero or empty spectrum).

    >>> information_abundance([4.0, 2.0, 2.0, 0.0])
    2.0
    """
    sigma = np.abs(np.asarray(sigma, dtype=np.float64))
    top = sigma.max() if sigma.size else 0.0
    return float(sigma.sum() / top) if top > 0 else 0.0


def effective_rank(sigma: Sequence[float]) -> float:
    """``exp(-sum p_i log p_i)`` with ``p = sigma / sum(sigma)`` (Roy & Vetterli 2007).

    >>> round(effective_rank([1.0, 1.0, 1.0, 1.0]), 6), effective_rank([5.0, 0.0])
    (4.0, 1.0)
    """
    sigma = np.abs(np.asarray(sigma, dtype=np.float64))
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma[sigma > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def dead_row_fraction(counts: Sequence[float]) -> float:
    """Share of rows never looked up (usage count 0).

    >>> dead_row_fraction([0, 3, 0, 1])
    0.5
    """
    counts = np.asarray(counts)
    return float(np.mean(counts <= 0)) if counts.size else 0.0


def popularity_buckets(counts: Sequence[float], num_buckets: int) -> list[np.ndarray]:
    """Row indices of used rows (count > 0) in ``num_buckets`` groups of equal size by usage.

    Bucket 0 holds the least used rows (the tail), the last bucket the most used (the
    head). Ties are broken by row index, so the split is deterministic. Fewer used rows
    than buckets give fewer (non-empty) buckets.

    >>> [b.tolist() for b in popularity_buckets([5, 0, 1, 9, 2, 7], 2)]
    [[2, 4, 0], [5, 3]]
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    counts = np.asarray(counts)
    used = np.flatnonzero(counts > 0)
    order = used[np.argsort(counts[used], kind="stable")]
    return [b for b in np.array_split(order, min(num_buckets, len(order))) if len(b)] if len(order) else []


def bucket_mean_norms(norms: Sequence[float], buckets: Sequence[np.ndarray]) -> np.ndarray:
    """Mean row norm per bucket (as returned by `popularity_buckets`).

    >>> bucket_mean_norms([1.0, 9.0, 3.0, 5.0], [np.array([0, 2]), np.array([1, 3])]).tolist()
    [2.0, 7.0]
    """
    norms = np.asarray(norms, dtype=np.float64)
    return np.array([norms[b].mean() for b in buckets], dtype=np.float64)


def table_health(norms: Sequence[float], sigma: Sequence[float], finite: bool, counts: Sequence[float],
                 dim: int, num_buckets: int) -> dict:
    """Every number the embedding detectors read, from one table's row norms, sampled spectrum and usage.

    ``information_abundance``/``effective_rank`` are NaN when the sampled rows were not
    finite (a diverged table); ``tail_head_norm_ratio`` is the least-used bucket's mean
    row norm over the most-used one's (NaN with fewer than two buckets).

    >>> h = table_health([1.0, 1.0, 3.0, 3.0], [2.0, 2.0], True, [1, 1, 9, 9], dim=2, num_buckets=2)
    >>> h["information_abundance"], h["abundance_ratio"], h["tail_head_norm_ratio"], h["dead_row_fraction"]
    (2.0, 1.0, 0.3333333333333333, 0.0)
    """
    if finite and len(sigma):
        ia, erank = information_abundance(sigma), effective_rank(sigma)
    else:
        ia = erank = float("nan")
    buckets = popularity_buckets(counts, num_buckets)
    bucket_norms = bucket_mean_norms(norms, buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail_head = float(bucket_norms[0] / bucket_norms[-1]) if len(buckets) >= 2 and bucket_norms[-1] > 0 \
            else float("nan")
    return {"information_abundance": ia, "abundance_ratio": ia / dim, "effective_rank": erank,
            "dead_row_fraction": dead_row_fraction(counts), "bucket_norms": bucket_norms.tolist(),
            "tail_head_norm_ratio": tail_head, "used_rows": int(np.sum(np.asarray(counts) > 0))}

"""The one top-K search every beyond-accuracy metric reads from.

`tfrs.metrics.FactorizedTopK` computes top-K ids and throws them away, and every extra
factorized metric searches again. Here the search runs once per query batch against
candidate embeddings computed once, and its `TopK` result feeds every metric family.

Items are identified by their **candidate index** (row of the candidate embedding
matrix, 0..N-1); ids are mapped to indices once, outside the hot path.

>>> import tensorflow as tf
>>> q = tf.constant([[1.0, 0.0]])
>>> c = tf.constant([[0.0, 1.0], [2.0, 0.0], [1.0, 0.5]])
>>> top = top_k(q, c, k=2)
>>> top.indices.numpy().tolist()
[[1, 2]]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfrs_diag._keras import tf

PAD = -1  # padding in positives / seen lists
MISSING = -2  # a positive whose id is not in the candidate set


class TopK(NamedTuple):
    """Top-K candidates of a query batch, best first."""

    indices: tf.Tensor  # [B, K] int32 candidate indices
    scores: tf.Tensor  # [B, K] float32


def top_k(query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor, k: int,
          exclude: tf.Tensor | None = None) -> TopK:
    """Dot-product top-``k`` over all candidates.

    Args:
      query_embeddings: [B, d].
      candidate_embeddings: [N, d], computed once per evaluation.
      k: list length; must be <= N (callers clamp with a warning).
      exclude: optional [B, S] candidate indices per query to leave out (e.g. items the
        user interacted with in training), padded with -1.
    """
    scores = tf.matmul(tf.cast(query_embeddings, tf.float32), tf.cast(candidate_embeddings, tf.float32),
                       transpose_b=True)
    if exclude is not None:
        exclude = tf.cast(exclude, tf.int32)
        rows = tf.broadcast_to(tf.range(tf.shape(exclude)[0])[:, None], tf.shape(exclude))
        keep = exclude >= 0
        coords = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(exclude, keep)], axis=1)
        neg_inf = tf.fill([tf.shape(coords)[0]], tf.constant(-np.inf, scores.dtype))
        scores = tf.tensor_scatter_nd_update(scores, coords, neg_inf)
    values, indices = tf.math.top_k(scores, k=k)
    return TopK(tf.cast(indices, tf.int32), values)


class IdMapper:
    """Maps item ids (strings or ints) to candidate indices; unknown ids map to `MISSING`.

    >>> m = IdMapper(["a", "b", "c"])
    >>> m(["c", "zz", "a"]).tolist()
    [2, -2, 0]
    """

    def __init__(self, candidate_ids):
        ids = np.asarray(candidate_ids)
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError(f"candidate ids must be a non-empty 1-D array, got shape {ids.shape}")
        self._kind = ids.dtype.kind
        keys = ids.astype(str) if self._kind in "USO" else ids.astype(np.int64)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("candidate ids must be unique; found duplicates")
        self._lookup = {k: i for i, k in enumerate(keys.tolist())}
        self.size = len(keys)

    def __call__(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8")
        keys = arr.astype(str) if self._kind in "USO" else arr.astype(np.int64)
        flat = np.fromiter((self._lookup.get(k, MISSING) for k in keys.reshape(-1).tolist()), np.int32,
                           count=keys.size)
        return flat.reshape(arr.shape)

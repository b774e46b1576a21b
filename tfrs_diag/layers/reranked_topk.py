"""`ReRankedTopK`: a TFRS top-K index whose lists a `ReRanker` picks from a larger pool."""

from __future__ import annotations

from typing import Dict, Optional, Text, Tuple, Union

import numpy as np
from tfrs_diag._keras import tf

import tensorflow_recommenders as tfrs  # noqa: E402  (after the Keras check)
from tfrs_diag.layers.rerank import ReRanker


class ReRankedTopK(tfrs.layers.factorized_top_k.TopK):
    """Retrieves ``pool`` candidates with ``index`` (a TFRS `BruteForce`, `Streaming`, ...),
    then lets ``reranker`` pick the returned ``k``, in its order.

    A drop-in `tfrs.layers.factorized_top_k.TopK`: ``layer(queries, k)`` returns
    ``(scores, identifiers)`` as TFRS's layers do (the scores are the retrieval scores of
    the picked items). `index` stores the candidate embeddings, identifiers and, if
    given, item groups and the long-tail mask in non-trainable weights, and indexes the
    wrapped layer with row numbers, so the pool's embeddings and groups are gathered in
    the graph; the whole thing saves and reloads as a SavedModel like TFRS's layers.

    Args:
      index: the TFRS top-K layer that retrieves the pool (its ``query_model`` applies).
      reranker: a `tfrs_diag.layers.ReRanker` (`MMR`, `DPP`, `Calibrated`, `EpsilonGreedy`,
        `Boltzmann`).
      k: default list length.
      pool: how many candidates the index retrieves per query for the re-ranker.

    >>> import tensorflow_recommenders as tfrs
    >>> from tfrs_diag.layers import MMR
    >>> layer = ReRankedTopK(tfrs.layers.factorized_top_k.BruteForce(), MMR(lambda_=0.5), k=2, pool=3)
    >>> layer = layer.index(tf.constant([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]), tf.constant(["a", "b", "c"]))
    >>> scores, ids = layer(tf.constant([[0.9, 0.5]]))
    >>> ids.numpy().tolist()
    [[b'b', b'c']]
    """

    def __init__(self, index: tfrs.layers.factorized_top_k.TopK, reranker: ReRanker, k: int = 10,
                 pool: int = 100, name: Optional[Text] = None):
        if not isinstance(index, tfrs.layers.factorized_top_k.TopK):
            raise TypeError(f"index must be a tfrs.layers.factorized_top_k layer (BruteForce, Streaming, ...), "
                            f"got {type(index).__name__}")
        if not isinstance(reranker, ReRanker):
            raise TypeError(f"reranker must be a tfrs_diag.layers.ReRanker (MMR, DPP, Calibrated, EpsilonGreedy, "
                            f"Boltzmann), got {type(reranker).__name__}")
        if int(pool) < int(k):
            raise ValueError(f"pool ({pool}) must be at least k ({k}): the re-ranker picks k of the pool")
        super().__init__(k=k, name=name)
        self._index, self.reranker, self.pool = index, reranker, int(pool)
        self._embeddings = self._groups = self._is_tail = self._identifiers = None

    def index(self, candidates: tf.Tensor, identifiers: Optional[tf.Tensor] = None, *,
              item_groups=None, item_is_tail=None) -> "ReRankedTopK":
        """Indexes ``candidates`` [N, d]; ``item_groups`` [N] ints and ``item_is_tail`` [N]
        bools are what `MMR(similarity="category")`/`Calibrated` and `EpsilonGreedy` read."""
        candidates = tf.convert_to_tensor(candidates)
        if candidates.shape.rank != 2:
            raise ValueError(f"candidates must be a [num candidates, d] matrix, got shape {candidates.shape}")
        n = int(candidates.shape[0])
        if identifiers is None:
            identifiers = tf.range(n)
        identifiers = tf.convert_to_tensor(identifiers)
        if int(identifiers.shape[0]) != n:
            raise ValueError(f"identifiers has {identifiers.shape[0]} rows, candidates {n}: one identifier per row")
        rows = tf.range(n)
        if isinstance(self._index, tfrs.layers.factorized_top_k.Streaming):
            self._index.index_from_dataset(tf.data.Dataset.from_tensor_slices((rows, candidates)).batch(4096))
        else:
            self._index.index(candidates, rows)
        self._embeddings = self._weight("candidates", candidates)
        self._identifiers = self._weight("identifiers", identifiers)
        for attr, key, values, dtype in (("_groups", "item_groups", item_groups, tf.int32),
                                         ("_is_tail", "item_is_tail", item_is_tail, tf.bool)):
            if values is None:
                setattr(self, attr, None)
                continue
            values = np.asarray(values)
            if values.shape != (n,):
                raise ValueError(f"{key} must have one entry per candidate ({n}), got shape {values.shape}")
            setattr(self, attr, self._weight(key, tf.constant(values.astype(dtype.as_numpy_dtype))))
        self._reset_tf_function_cache()
        return self

    def _weight(self, name, value):
        w = self.add_weight(name=name, dtype=value.dtype, shape=value.shape, trainable=False,
                            initializer=tf.keras.initializers.Constant(tf.zeros((), value.dtype).numpy()))
        w.assign(value)
        return w

    def call(self, queries: Union[tf.Tensor, Dict[Text, tf.Tensor]],
             k: Optional[int] = None) -> Tuple[tf.Tensor, tf.Tensor]:
        k = k if k is not None else self._k
        if self._embeddings is None:
            raise ValueError("The `index` method must be called first to create the retrieval index.")
        scores, rows = self._index(queries, k=max(self.pool, k))
        rows = tf.cast(rows, tf.int32)
        inputs = {"scores": scores}
        if "embeddings" in self.reranker.requires:
            inputs["embeddings"] = tf.gather(self._embeddings, rows)
        for key, table, arg in (("groups", self._groups, "item_groups"), ("is_tail", self._is_tail, "item_is_tail")):
            if key in self.reranker.requires:
                if table is None:
                    raise ValueError(f"{type(self.reranker).__name__} reads {arg}: pass {arg}= to index()")
                inputs[key] = tf.gather(table, rows)
        picks = self.reranker(inputs, k=k)
        picked_rows = tf.gather(rows, picks, batch_dims=1)
        return tf.gather(scores, picks, batch_dims=1), tf.gather(self._identifiers, picked_rows)

    def is_exact(self) -> bool:
        return False

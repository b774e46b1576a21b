"""`evaluate` and `evaluate_ranking`: the one-call post-hoc evaluations."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.evaluation.evaluator import TopKEvaluator, collect_results
from tfrs_diag.evaluation.result import EvaluationResult
from tfrs_diag.metrics._base import check_ks
from tfrs_diag.metrics.batch import TopKBatch
from tfrs_diag.metrics.factory import USER_GROUP_PREFIX, metric_families
from tfrs_diag.metrics.topk import PAD


def evaluate(model_or_query_tower, candidates, data, k: Sequence[int] | int = (10, 100),
             *, user_group_keys: Sequence[str] = (), item_groups=None, item_popularity=None, item_is_head=None,
             exclude_seen=None, query_key: str | None = None, item_key: str | None = None,
             query_features: str | Sequence[str] | None = None, query_model=None, candidate_model=None,
             candidate_embeddings=None, batch_size: int = 1024, verbose: int = 1, reranker=None,
             rerank_pool: int = 100, sweep: Sequence[float] | None = None, **kwargs) -> EvaluationResult:
    """Top-K accuracy, diversity, popularity bias, exposure and user-group fairness in one pass.

    Every metric is a mean over queries (``result.averaged_over`` says what a query is).

    Args:
      model_or_query_tower: a TFRS retrieval model with a query and a candidate tower, or a
        query tower (then pass ``candidate_model`` or ``candidate_embeddings``).
      candidates: the catalog: a 1-D array of candidate item ids, or a `tf.data.Dataset` of
        ids, batched or not (e.g. the tutorials' ``movies = ...map(lambda x: x["movie_title"])``);
        aligned with ``item_groups``, ``item_popularity`` and ``candidate_embeddings``.
      data: evaluation interactions, one row per (query, relevant item): a feature dict of
        arrays (e.g. ``dataset.test``) or a `tf.data.Dataset` of feature dicts, batched (with
        or without ``drop_remainder``) or not. Converted to numpy once.
      k: one K or several; all come from one search of the largest K (clamped to the
        catalog size with a warning).
      user_group_keys: features of ``data`` whose values define user groups (e.g.
        ``("user_group", "user_gender")``); accuracy is reported per group with gaps.
      item_groups: group label per candidate (e.g. category) for exposure shares.
      item_popularity: phi(i) per candidate, share of training interactions (novelty,
        ARP, APLT, PopRSP, PopREO); ``item_is_head`` overrides the 80% head rule.
      exclude_seen: training interactions (feature dict or dataset with the query and item
        keys): each query's seen items are left out of its top-K. Needs ``query_key``.
      query_key: the 1-D id queries are grouped by: rows with the same value form one query
        whose positives are their items, and the query tower sees the first row's features.
        Default: the model's ``user_key``/``query_key`` attribute, unless ``query_features``
        is given; then, without ``query_key``, every row is its own query (e.g. a sequence
        of watched items and the next item).
      item_key: the feature holding each row's relevant item id (default: the model's
        ``item_key``/``candidate_key`` attribute).
      query_features: what the query tower takes: one feature name (the tower gets that
        tensor, which may be multi-dimensional, e.g. ``"context_movie_id"`` of shape
        [n, 5]) or a sequence of names (the tower gets a dict of tensors, e.g.
        ``("user_id", "timestamp")``). Default: ``query_key``.
      query_model: the query tower, or the name (dotted path) of the model's attribute
        that holds it. Default: the first of `QUERY_TOWERS` the model has (``query_model``,
        ``user_model``, ``_query_model``, ``query_tower``, ``user_tower``, ...), else
        ``model_or_query_tower`` itself unless it is a `tfrs.Model`.
      candidate_model: the candidate tower or its attribute name. Default: the first of
        `CANDIDATE_TOWERS` (``candidate_model``, ``item_model``, ``movie_model``,
        ``_candidate_model``, ``candidate_tower``, ``item_tower``, ...). A model without
        a known tower raises a ValueError listing its Keras layer attributes.
      candidate_embeddings: [num candidates, d] embeddings to use instead of the
        candidate tower.
      batch_size: queries per top-K step.
      verbose: 1 shows a progress bar when there are many query batches; 0 is silent.
      reranker: a `tfrs_diag.layers.ReRanker` (`MMR`, `DPP`, `Calibrated`, `EpsilonGreedy`,
        `Boltzmann`) that picks each query's top-K from its ``rerank_pool`` best candidates;
        every metric reads the re-ranked lists. `Calibrated`/`MMR(similarity="category")`
        read ``item_groups``, `EpsilonGreedy` the tail of ``item_popularity``/``item_is_head``.
      sweep: knob values of ``reranker`` (e.g. MMR's lambda ``[0.2, 0.5, 0.8, 1.0]``): one
        more pass per value, in ``result.trade_off`` (docs/explore_exploit.md).
      **kwargs: more `TopKEvaluator` arguments (``user_group_names``,
        ``item_group_names``, ``diversity_embeddings``).

    Towers get copies of the feature dicts, so a tower that pops features changes
    nothing. Inside a `tf.distribute` strategy scope the evaluation runs once (not per
    replica) and gives the one-device values.

    Returns:
      an `EvaluationResult`: a mapping of metric names (``ndcg_at_10``,
      ``coverage_at_100``, ``user_group/ndcg_at_10_gap``, ...) to floats, with per-group
      tables; ``print(result)`` shows a table.

    The TFRS README quickstart's model (towers ``user_model`` and ``movie_model``, found by
    name) on a dataset of ratings and a dataset of titles:

    >>> import numpy as np, tensorflow as tf, tensorflow_recommenders as tfrs
    >>> users, titles = np.array(["u1", "u2", "u3"]), np.array(["a", "b", "c", "d"])
    >>> class MovieLensModel(tfrs.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.user_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=users),
    ...                                                tf.keras.layers.Embedding(4, 8)])
    ...         self.movie_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=titles),
    ...                                                 tf.keras.layers.Embedding(5, 8)])
    ...         self.task = tfrs.tasks.Retrieval()
    >>> ratings = tf.data.Dataset.from_tensor_slices({"user_id": ["u1", "u1", "u2", "u3"],
    ...                                               "movie_title": ["a", "c", "b", "d"]})
    >>> movies = tf.data.Dataset.from_tensor_slices(titles)
    >>> result = evaluate(MovieLensModel(), movies, ratings, k=2, query_key="user_id", item_key="movie_title")
    >>> result.queries, 0.0 <= result["recall_at_2"] <= 1.0
    (3, True)
    """
    if sweep is not None and reranker is None:
        raise ValueError("sweep: needs reranker=, the layer whose knob it sweeps (e.g. tfrs_diag.layers.MMR())")
    evaluator = TopKEvaluator(candidates, data, k, query_key=query_key, item_key=item_key,
                              query_features=query_features, query_model=query_model,
                              candidate_model=candidate_model, user_group_keys=user_group_keys,
                              item_groups=item_groups, item_popularity=item_popularity, item_is_head=item_is_head,
                              exclude_seen=exclude_seen, batch_size=batch_size, reranker=reranker,
                              rerank_pool=rerank_pool, **kwargs)
    result = evaluator.run(model_or_query_tower, candidate_embeddings=candidate_embeddings, verbose=verbose)
    if sweep is not None:
        result.trade_off = evaluator.sweep(model_or_query_tower, sweep, candidate_embeddings=candidate_embeddings)
    return result


def evaluate_ranking(scores, candidates, labels, k: Sequence[int] | int = (5, 10), *, num_items: int,
                     relevance_threshold: float | None = None, user_groups=None,
                     user_group_names: Sequence[str] | None = None, item_groups=None,
                     item_group_names: Sequence[str] = (), item_popularity=None) -> EvaluationResult:
    """NDCG, exposure and the other families for a ranking model's order of candidate lists.

    A ranking model scores a list of candidates per query; its order is the ranking.

    Args:
      scores: [Q, L] model scores of each query's candidates (NaN pads short lists).
      candidates: [Q, L] candidate indices (0..num_items-1; -1 pads).
      labels: [Q, L] relevance: bool, or graded values with ``relevance_threshold``
        (e.g. ratings >= 4 are relevant); gain is binary, as everywhere.
      k: list lengths (clamped to L with a warning).
      user_groups: optional [Q] group index per query for per-group accuracy.

    >>> import numpy as np
    >>> r = evaluate_ranking(np.array([[0.9, 0.1, 0.5]]), np.array([[4, 7, 2]]),
    ...                      np.array([[0, 1, 0]]), k=3, num_items=10)
    >>> round(r["ndcg_at_3"], 4), r["mrr_at_3"]      # the relevant item is ranked last
    (0.5, 0.3333333432674408)
    """
    scores = np.asarray(scores, np.float64)
    cands = np.asarray(candidates, np.int64)
    labels = np.asarray(labels)
    if not (scores.shape == cands.shape == labels.shape) or scores.ndim != 2:
        raise ValueError(f"scores, candidates and labels must all be [queries, list] arrays of one shape; got "
                         f"{scores.shape}, {cands.shape}, {labels.shape}")
    if cands.max(initial=-1) >= num_items:
        raise ValueError(f"candidates holds index {cands.max()} >= num_items={num_items}")
    relevant = labels >= relevance_threshold if relevance_threshold is not None else labels.astype(bool)
    ks = check_ks(k)
    width = scores.shape[1]
    if max(ks) > width:
        warnings.warn(f"k={max(ks)} is longer than the candidate lists ({width}); clamped to {width}", stacklevel=2)
        ks = tuple(sorted({min(x, width) for x in ks}))
    pad = (cands < 0) | np.isnan(scores)
    order = np.argsort(np.where(pad, np.inf, -scores), axis=1, kind="stable")
    ranked = np.take_along_axis(cands, order, axis=1)[:, : max(ks)]
    # Pads at the end of a short list point at no item: give them an index past the
    # catalog so they never count as a hit, and leave them out of exposure below.
    positives = np.where(relevant & ~pad, cands, PAD).astype(np.int32)
    n_pad = (ranked < 0).sum()
    if n_pad:
        raise ValueError("every query needs at least max(k) real candidates; pad fewer or lower k")
    names = {}
    if user_groups is not None:
        names["user_group"] = tuple(user_group_names or (str(g) for g in range(int(np.max(user_groups)) + 1)))
    metrics = metric_families(ks, num_items, item_popularity=item_popularity, item_groups=item_groups,
                              item_group_names=item_group_names, user_group_names=names)
    groups = {"user_group": tf.constant(np.asarray(user_groups, np.int32))} if user_groups is not None else None
    batch = TopKBatch(tf.constant(ranked.astype(np.int32)), tf.constant(positives), user_groups=groups)
    for m in metrics.values():
        m.update_state(batch)
    return collect_results(metrics, ks, {key: metrics[USER_GROUP_PREFIX + key].group_names for key in names})

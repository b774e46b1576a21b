"""`PermutationImportance`: global importance as the drop in a metric when a group is shuffled.

For each group, its embedding columns are permuted across the evaluation rows (all
features of a group with the same permutation, so the group's own joint distribution is
kept and only its link to the rest and to the label is broken), the metric is
recomputed, and the importance is the loss in quality: ``RMSE_shuffled - RMSE`` for
``"rmse"``, ``AUC - AUC_shuffled`` for ``"auc"``, ``Recall@K - Recall@K_shuffled`` for
``"recall@K"``. Repeated ``repeats`` times: ``values`` is the mean, ``stderr`` the
standard error and ``extras["std"]`` the standard deviation over repeats. A group the
model ignores scores 0.

Ranking (``"rmse"``, ``"auc"``): the examples hold the features and the ``target``
column (ratings; 0/1 labels for AUC, which ranks by the model's score).
Retrieval (``"recall@K"``, needs a `RetrievalAdapter` and ``candidates``): each example
is a (query, positive item) pair; it is a hit when fewer than K catalog items score
above the positive. Query-side groups are shuffled across the examples, candidate-side
groups across the catalog (the positive keeps its catalog position).

>>> pi = PermutationImportance(model, metric="rmse", target="rating", repeats=5)  # doctest: +SKIP
>>> print(pi.attribute(data.test))                                               # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.attribution import Attribution
from tfrs_diag.explain.discovery import NeedsRows


def rmse(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sqrt(np.mean((scores - labels) ** 2)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    labels = labels.astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        raise ValueError("AUC needs both positive and negative labels in target")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


class PermutationImportance(Explainer):
    """Global permutation importance of feature groups (see the module docstring).

    Args:
      model: as in `tfrs_diag.explain.Explainer`. A model split by calling it (no
        ``embed``/``score`` methods) is split on ``background`` when given, else on the
        rows of the first `attribute` call.
      metric: ``"rmse"``, ``"auc"`` or ``"recall@K"`` (e.g. ``"recall@10"``).
      target: label column of the examples for ``"rmse"``/``"auc"``.
      candidates: catalog feature dict (candidate-side features) for ``"recall@K"``.
      repeats: shuffles per group.
      groups, seed, max_batch_rows: as elsewhere.
    """

    method = "permutation_importance"

    def __init__(self, model, background: Mapping[str, Any] | None = None, *, metric: str = "rmse",
                 target: str = "rating", candidates: Mapping[str, Any] | None = None, repeats: int = 5,
                 groups=None, seed: int = 0, **kwargs):
        self.k = None
        match = re.fullmatch(r"recall@(\d+)", metric) if isinstance(metric, str) else None
        if match:
            self.k = int(match.group(1))
            if self.k < 1:
                raise ValueError("metric: K in 'recall@K' must be >= 1")
            if candidates is None:
                raise ValueError("metric='recall@K' needs candidates=<catalog feature dict> (e.g. data.items)")
        elif metric not in ("rmse", "auc"):
            raise ValueError(f"metric must be 'rmse', 'auc' or 'recall@K', got {metric!r}")
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        self.metric, self.target, self.repeats, self.seed = metric, target, repeats, seed
        self.candidates = candidates
        self._deferred = None
        try:
            super().__init__(model, background, groups=groups, **kwargs)
        except NeedsRows:
            # A model split by calling it: done on the rows of the first attribute() call.
            self._deferred = (model, groups, kwargs)
            return
        self._check_adapter()

    def _check_adapter(self):
        if self.k is not None and not hasattr(self.adapter, "query_vectors"):
            raise ValueError("metric='recall@K' needs a retrieval model (RetrievalAdapter, or query_model= and "
                             "candidate_model=); for a ranking model use metric='rmse' or 'auc'")

    # ------------------------------------------------------------ metrics on flat rows

    def _ranking_metric(self, rows: np.ndarray, labels: np.ndarray) -> float:
        scores = self.outputs(rows)
        return rmse(scores, labels) if self.metric == "rmse" else auc(scores, labels)

    def _query_vectors(self, rows: np.ndarray) -> tf.Tensor:
        return self.adapter.query_vectors(self.space.split(tf.constant(rows)))

    def _candidate_vectors(self, catalog: np.ndarray) -> tf.Tensor:
        return self.adapter.candidate_vectors(self.space.split(tf.constant(catalog)))

    def _recall(self, q: tf.Tensor, c: tf.Tensor, positives: np.ndarray) -> float:
        pos_score = tf.reduce_sum(q * tf.gather(c, positives), axis=1, keepdims=True)
        hits = tf.constant(0, tf.int32)
        for lo in range(0, int(q.shape[0]), 1024):
            scores = tf.matmul(q[lo:lo + 1024], c, transpose_b=True)
            above = tf.reduce_sum(tf.cast(scores > pos_score[lo:lo + 1024], tf.int32), axis=1)
            hits += tf.reduce_sum(tf.cast(above < self.k, tf.int32))
        return int(hits) / int(q.shape[0])  # one host read per evaluation

    def _catalog(self, examples, rows):
        """Catalog rows in the flat layout (query columns copied from row 0, unused) and positives."""
        adapter = self.adapter
        key = adapter.candidate_features[0]
        cand = {f: np.asarray(self.candidates[f]) if f in self.candidates else None
                for f in adapter.candidate_features}
        missing = [f for f, v in cand.items() if v is None]
        if missing:
            raise ValueError(f"candidates has no feature {missing[0]!r}, which the candidate tower takes")
        emb = adapter.candidate.embed({f: tf.constant(v) for f, v in cand.items()})
        catalog = np.repeat(rows[:1], len(cand[key]), axis=0)
        for f in adapter.candidate_features:
            a, b = self.space.slices[f]
            catalog[:, a:b] = emb[f].numpy()
        index = {v.decode() if isinstance(v, bytes) else v: i for i, v in enumerate(cand[key].tolist())}
        ids = np.asarray(examples[key]).tolist()
        try:
            positives = np.array([index[v.decode() if isinstance(v, bytes) else v] for v in ids])
        except KeyError as e:
            raise ValueError(f"examples[{key!r}] holds {e.args[0]!r}, which is not in candidates[{key!r}]") from None
        return catalog, positives

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None) -> Attribution:
        """Importance of each group on ``examples`` -> `Attribution` with one row (global)."""
        if self._deferred is not None:
            model, groups, kwargs = self._deferred
            super().__init__(model, examples, groups=groups, **kwargs)
            self._deferred = None
            self._check_adapter()
        rows = self.space.embed(examples, argument="examples")
        rng = np.random.default_rng(self.seed)
        n, g = rows.shape[0], self.num_groups
        if self.k is None:
            if self.target not in examples:
                raise ValueError(f"examples has no target column {self.target!r}; pass target=<label key>")
            y = np.asarray(examples[self.target], dtype=np.float64).reshape(-1)
            base = self._ranking_metric(rows, y)
            sign = 1.0 if self.metric == "rmse" else -1.0
            query_cols = np.ones(rows.shape[1], bool)
        else:
            catalog, positives = self._catalog(examples, rows)
            # A group lives on one side: the other side's vectors are the unshuffled ones.
            base_q, base_c = self._query_vectors(rows), self._candidate_vectors(catalog)
            base = self._recall(base_q, base_c, positives)
            sign = -1.0
            query_cols = np.zeros(rows.shape[1], bool)
            for f in self.adapter.query_features:
                a, b = self.space.slices[f]
                query_cols[a:b] = True
        drops = np.zeros((self.repeats, g))
        bar = self.progress(g * self.repeats, unit="shuffle")
        for j in range(g):
            cols = np.flatnonzero(self.space.col_group == j)
            for r in range(self.repeats):
                shuffled = rows.copy()
                qc = cols[query_cols[cols]]
                shuffled[:, qc] = rows[rng.permutation(n)][:, qc]
                if self.k is None:
                    value = self._ranking_metric(shuffled, y)
                else:  # candidate-side features are shuffled across the catalog
                    cc = cols[~query_cols[cols]]
                    order = rng.permutation(catalog.shape[0])
                    q = self._query_vectors(shuffled) if qc.size else base_q
                    if cc.size:
                        cat = catalog.copy()
                        cat[:, cc] = catalog[order][:, cc]
                        c = self._candidate_vectors(cat)
                    else:
                        c = base_c
                    value = self._recall(q, c, positives)
                drops[r, j] = sign * (value - base)
                bar.advance()
        std = drops.std(axis=0, ddof=1) if self.repeats > 1 else np.zeros(g)
        return self._finish(Attribution(self.method, drops.mean(axis=0)[None], base, [base], self.group_names,
                           labels or [f"{self.metric} drop"], stderr=(std / np.sqrt(self.repeats))[None],
                           extras={"metric": self.metric, "metric_value": base, "repeats": self.repeats,
                                   "std": std.tolist(), "num_examples": n}))

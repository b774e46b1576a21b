"""Beyond-accuracy metrics inside `tfrs.tasks.Retrieval(metrics=[...])`, from one top-K.

`FactorizedTopKMetrics` is a `tfrs.metrics.Factorized` metric: it takes the place of (or
sits beside) `tfrs.metrics.FactorizedTopK`. It computes the candidate embeddings once per
evaluation (not once per batch), runs one top-K search per batch and feeds accuracy and
the item-side families (diversity, popularity bias, exposure). The task passes no user
features, so per-user-group metrics need `tfrs_diag.evaluate` or the `BeyondAccuracy`
callback.

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> import tensorflow_recommenders as tfrs                                   # doctest: +SKIP
>>> metrics = FactorizedTopKMetrics(data.items["item_id"], model.item_model, ks=(10, 100),
...                                 item_popularity=data.item_popularity)       # doctest: +SKIP
>>> model.task = tfrs.tasks.Retrieval(metrics=metrics)                        # doctest: +SKIP
>>> model.evaluate(test_ds, return_dict=True)["ndcg_at_10"]                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics._base import check_ks
from tfrs_diag.metrics.batch import TopKBatch
from tfrs_diag.metrics.factory import metric_families
from tfrs_diag.metrics.topk import MISSING, top_k

import tensorflow_recommenders as tfrs  # noqa: E402

DEFAULT_REPORT = ("recall", "ndcg", "hit_rate", "coverage", "gini", "aplt")


class _ResultView(tf.keras.metrics.Metric):
    """One scalar of a metric family, so Keras logs get plain numbers (not dicts)."""

    def __init__(self, owner: "FactorizedTopKMetrics", family, key: str):
        super().__init__(name=key)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_family", family)
        self._key = key

    def update_state(self, *args, **kwargs):
        return None

    def result(self):
        return self._family.result_fns()[self._key]()

    def reset_state(self):
        self._owner.reset_families()


class FactorizedTopKMetrics(tfrs.metrics.Factorized):
    """Accuracy and item-side beyond-accuracy metrics for `tfrs.tasks.Retrieval`.

    Args:
      candidate_ids: the catalog's item ids.
      candidate_model: the candidate tower (maps ids to embeddings).
      ks: list lengths, all from one search of the largest.
      item_popularity: phi(i) per candidate (novelty, ARP, APLT, PopRSP/PopREO).
      item_groups, item_group_names: item groups for exposure shares.
      report: metric name stems that appear as Keras metrics (``<stem>_at_<k>``); the
        full set is in `results()`.

    Positives are identified by ``candidate_ids`` passed to the task
    (``task(q, c, candidate_ids=ids)``); without them, each positive is the candidate
    whose embedding is nearest to the true candidate embedding.
    """

    def __init__(self, candidate_ids, candidate_model, ks: Sequence[int] = (10, 100), *, item_popularity=None,
                 item_groups=None, item_group_names: Sequence[str] = (), report: Sequence[str] = DEFAULT_REPORT,
                 name: str = "beyond_accuracy"):
        super().__init__(name=name)
        ids = np.asarray(candidate_ids)
        n = len(ids)
        self.ks = check_ks(ks)
        if max(self.ks) > n:
            raise ValueError(f"ks: k={max(self.ks)} is larger than the catalog ({n} candidates)")
        self._ids = tf.constant(ids)
        keys = tf.constant(ids.astype(str) if ids.dtype.kind in "USO" else ids.astype(np.int64))
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(n, dtype=tf.int32)), default_value=MISSING)
        self._string_ids = ids.dtype.kind in "USO"
        self.candidate_model = candidate_model
        families = metric_families(self.ks, n, item_popularity=item_popularity, item_groups=item_groups,
                                   item_group_names=item_group_names)
        # Held outside Keras tracking: the views below are what `model.metrics` lists.
        object.__setattr__(self, "_families", families)
        self._fresh = tf.Variable(False, trainable=False, name="candidates_fresh")
        self._cand = None
        # Keras (and tfrs.Model.train_step) computes every listed metric's result at every
        # step, so only the `report` stems are listed; `results()` has all of them.
        self._views = [_ResultView(self, fam, k) for fam in families.values() for k in fam.result_fns()
                       if "/" not in k and k.rsplit("_at_", 1)[0] in report]

    def results(self) -> dict:
        """Every metric of every family as a dict of scalars."""
        out = {}
        for fam in self._families.values():
            out.update({k: v for k, v in fam.result().items() if "/" not in k})
        return out

    def reset_families(self):
        for fam in self._families.values():
            fam.reset_state()
        self._fresh.assign(False)

    def reset_states(self):
        self.reset_families()

    def update_state(self, query_embeddings, true_candidate_embeddings, true_candidate_ids=None,
                     sample_weight=None):
        if self._cand is None:
            dim = int(true_candidate_embeddings.shape[-1])
            with tf.init_scope():
                self._cand = tf.Variable(tf.zeros([len(self._ids), dim]), trainable=False, name="candidate_cache")
        # Candidate embeddings are fixed within one evaluation: compute them on its first
        # batch and reuse them (FactorizedTopK re-streams every candidate each batch).
        def compute():
            emb = tf.cast(self.candidate_model(self._ids), tf.float32)
            self._cand.assign(emb)
            return emb

        cand = tf.cond(self._fresh, lambda: tf.identity(self._cand), compute)
        self._fresh.assign(True)
        top = top_k(query_embeddings, cand, max(self.ks))
        if true_candidate_ids is not None:
            ids = tf.reshape(true_candidate_ids, [-1])
            ids = tf.strings.as_string(ids) if self._string_ids and ids.dtype != tf.string else ids
            if not self._string_ids:
                ids = tf.cast(ids, tf.int64)
            positives = self._table.lookup(ids)[:, None]
        else:
            true = tf.cast(true_candidate_embeddings, tf.float32)
            dist = tf.reduce_sum(tf.square(cand), axis=1)[None, :] - 2.0 * tf.matmul(true, cand, transpose_b=True)
            positives = tf.cast(tf.argmin(dist, axis=1), tf.int32)[:, None]
        batch = TopKBatch(top.indices, positives)  # one positive per query: already in search order
        for fam in self._families.values():
            fam.update_state(batch)
        return tf.no_op()

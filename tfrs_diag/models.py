"""Small reference TFRS models used by the demo, the examples, the tests and benchmarks.

They are ordinary `tfrs.Model` subclasses, written the way the TFRS tutorials write
them, so that what tfrs_diag shows on them is what a user sees on their own models.

>>> from tfrs_diag import datasets, models
>>> data = datasets.synthetic(num_users=50, num_items=80, num_interactions=500)
>>> model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
>>> model.compile(optimizer="adagrad")
>>> _ = model.fit(models.retrieval_dataset(data.train, batch_size=128), epochs=1, verbose=0)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf

import tensorflow_recommenders as tfrs  # noqa: E402  (after the Keras check)


def _id_tower(vocabulary: Sequence[str] | None, num_ids: int | None, embedding_dim: int, name: str,
              hidden: Sequence[int] = (), embedding_probe: bool = False) -> tf.keras.Sequential:
    layers: list[tf.keras.layers.Layer] = []
    if vocabulary is not None:
        vocab = np.unique(np.asarray(vocabulary).astype(str))
        layers.append(tf.keras.layers.StringLookup(vocabulary=vocab, mask_token=None, name=f"{name}_lookup"))
        size = len(vocab) + 1
    else:
        size = int(num_ids)
    embedding = tf.keras.layers.Embedding(size, embedding_dim, name=f"{name}_embedding")
    if embedding_probe:
        from tfrs_diag.layers import EmbeddingProbe

        embedding = EmbeddingProbe(embedding)
    layers.append(embedding)
    for j, units in enumerate(hidden):
        layers.append(tf.keras.layers.Dense(units, activation="relu" if j < len(hidden) - 1 else None,
                                            name=f"{name}_dense_{j}"))
    return tf.keras.Sequential(layers, name=name)


class TwoTowerModel(tfrs.Model):
    """Two-tower retrieval: a user tower and an item tower over ids, in-batch softmax.

    With ``user_vocabulary``/``item_vocabulary`` the towers look string ids up with
    `StringLookup` (the TFRS tutorial model). With ``num_users``/``num_items`` instead,
    they take integer indices looked up in the input pipeline: XLA cannot compile
    `StringLookup`, so this is the form that trains with ``jit_compile=True``.

    Args:
      user_key, item_key: feature names of the ids in the input dict.
      hidden: sizes of Dense layers on top of each tower's embedding.
      candidates: optional dataset of item ids for a `FactorizedTopK` metric.
      embedding_probe: wrap both embeddings in `tfrs_diag.layers.EmbeddingProbe` (usage
        counts for `tfrs_diag.callbacks.OverfittingMonitor`'s embedding checks).
    """

    def __init__(self, user_vocabulary=None, item_vocabulary=None, *, num_users: int | None = None,
                 num_items: int | None = None, embedding_dim: int = 32, hidden: Sequence[int] = (),
                 user_key: str | None = None, item_key: str | None = None, candidates=None,
                 embedding_probe: bool = False):
        super().__init__()
        if (user_vocabulary is None) == (num_users is None) or (item_vocabulary is None) == (num_items is None):
            raise ValueError("give either user_vocabulary/item_vocabulary (string ids) or "
                             "num_users/num_items (integer indices), one of each")
        self.user_key = user_key or ("user_id" if user_vocabulary is not None else "user_index")
        self.item_key = item_key or ("item_id" if item_vocabulary is not None else "item_index")
        self.user_model = _id_tower(user_vocabulary, num_users, embedding_dim, "user_model", hidden, embedding_probe)
        self.item_model = _id_tower(item_vocabulary, num_items, embedding_dim, "item_model", hidden, embedding_probe)
        metrics = None
        if candidates is not None:
            metrics = tfrs.metrics.FactorizedTopK(candidates=candidates.map(self.item_model))
        self.task = tfrs.tasks.Retrieval(metrics=metrics)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        user_embeddings = self.user_model(features[self.user_key])
        item_embeddings = self.item_model(features[self.item_key])
        return self.task(user_embeddings, item_embeddings, compute_metrics=not training)


class RankingModel(tfrs.Model):
    """Rating prediction over several feature groups, each embedded, then an MLP.

    ``string_features`` go through `StringLookup`, ``int_features`` through
    `IntegerLookup`, each into its own `Embedding`; the concatenation feeds Dense layers.
    The vocabularies come from ``vocab_source`` (a feature dict, e.g. the train split).
    """

    def __init__(self, vocab_source: Mapping[str, np.ndarray], *,
                 string_features: Sequence[str] = ("user_id", "item_id", "user_gender"),
                 int_features: Sequence[str] = ("user_age_bucket", "item_category"),
                 embedding_dim: int = 16, hidden: Sequence[int] = (64, 32), label_key: str = "rating"):
        super().__init__()
        missing = [f for f in list(string_features) + list(int_features) + [label_key] if f not in vocab_source]
        if missing:
            raise ValueError(f"vocab_source has no feature(s) {missing}; available: {sorted(vocab_source)}")
        self.label_key = label_key
        self.feature_names = list(string_features) + list(int_features)
        self.embedders: dict[str, tf.keras.Sequential] = {}
        for name in string_features:
            vocab = np.unique(np.asarray(vocab_source[name]).astype(str))
            self.embedders[name] = tf.keras.Sequential([
                tf.keras.layers.StringLookup(vocabulary=vocab, mask_token=None),
                tf.keras.layers.Embedding(len(vocab) + 1, embedding_dim)], name=f"{name}_embedder")
        for name in int_features:
            vocab = np.unique(np.asarray(vocab_source[name]).astype(np.int64))
            self.embedders[name] = tf.keras.Sequential([
                tf.keras.layers.IntegerLookup(vocabulary=vocab, mask_token=None),
                tf.keras.layers.Embedding(len(vocab) + 1, embedding_dim)], name=f"{name}_embedder")
        self.scorer = tf.keras.Sequential(
            [tf.keras.layers.Dense(u, activation="relu") for u in hidden] + [tf.keras.layers.Dense(1)],
            name="scorer")
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                       metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def embed(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Per-feature embeddings (the explainer forms coalitions in this space)."""
        return {name: self.embedders[name](features[name]) for name in self.feature_names}

    def score(self, embeddings: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.scorer(tf.concat([embeddings[n] for n in self.feature_names], axis=1))

    def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.score(self.embed(features))

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        labels = features[self.label_key]
        return self.task(labels=labels, predictions=self(features))


def retrieval_dataset(interactions: Mapping[str, np.ndarray], batch_size: int = 1024, *,
                      keys: Sequence[str] = ("user_id", "item_id"), shuffle_seed: int | None = 0,
                      cache: bool = True) -> tf.data.Dataset:
    """Batches (user, item) pairs from a feature dict, shuffled deterministically."""
    ds = tf.data.Dataset.from_tensor_slices({k: interactions[k] for k in keys})
    if shuffle_seed is not None:
        ds = ds.shuffle(len(interactions[keys[0]]), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return (ds.cache() if cache and shuffle_seed is None else ds).prefetch(tf.data.AUTOTUNE)


def ranking_dataset(interactions: Mapping[str, np.ndarray], feature_names: Sequence[str],
                    batch_size: int = 1024, *, label_key: str = "rating", shuffle_seed: int | None = 0
                    ) -> tf.data.Dataset:
    """Batches the ranking model's features and label from a feature dict."""
    keys = list(feature_names) + [label_key]
    ds = tf.data.Dataset.from_tensor_slices({k: interactions[k] for k in keys})
    if shuffle_seed is not None:
        ds = ds.shuffle(len(interactions[label_key]), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

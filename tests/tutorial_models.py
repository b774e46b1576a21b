"""The official TFRS tutorials' models, re-created here, on small MovieLens-shaped data.

Each builder follows its notebook under ``docs/examples/`` of tensorflow/recommenders
(the quickstart of the README, basic retrieval and ranking, featurization and deep
recommenders, DCN, multitask, listwise ranking, sequential retrieval), plus the other
shapes users write: `IntegerLookup`/`Hashing` towers, a plain Keras functional CTR model
and a subclassed one, a `tfrs.Model` with its own `train_step`, BatchNormalization and
Dropout, mixed precision and XLA. The code is ours; the structure (attribute names,
`Sequential` towers, `features.pop("user_rating")` in `compute_loss`, adapted lookups)
is the tutorials', because that structure is what breaks tools.

Data are synthetic but shaped like the `movielens/100k-ratings` TFDS features (string
``user_id`` and ``movie_title``, int ``timestamp``, float ``user_rating``, ...), with a
planted low-rank preference so that the models learn something in an epoch.
`MovieLensLike.dataset(...)` feeds them the way the tutorials do (an unbatched
`tf.data.Dataset` of feature dicts, then ``.batch(...)``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

# ------------------------------------------------------------------ layers

#: While True, every `Embedding` the builders create is wrapped in
#: `tfrs_diag.layers.EmbeddingProbe`, the way a user adds the probe (see `probed`).
PROBE_EMBEDDINGS = False


def Embedding(*args, **kwargs):  # noqa: N802 - stands in for the Keras class
    layer = tf.keras.layers.Embedding(*args, **kwargs)
    if PROBE_EMBEDDINGS:
        from tfrs_diag.layers import EmbeddingProbe

        return EmbeddingProbe(layer)
    return layer


@contextlib.contextmanager
def probed():
    """Builders called inside this block wrap each `Embedding` in an `EmbeddingProbe`."""
    global PROBE_EMBEDDINGS
    before, PROBE_EMBEDDINGS = PROBE_EMBEDDINGS, True
    try:
        yield
    finally:
        PROBE_EMBEDDINGS = before


# ------------------------------------------------------------------ data


@dataclasses.dataclass
class MovieLensLike:
    """Ratings and movies with the TFDS MovieLens feature names, as numpy arrays."""

    ratings: dict[str, np.ndarray]
    movies: np.ndarray  # unique movie titles (the catalog)
    movie_ids: np.ndarray  # movie_id strings, aligned with movies
    num_users: int

    def split(self, train_fraction: float = 0.8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        n = int(len(self.ratings["user_id"]) * train_fraction)
        return ({k: v[:n] for k, v in self.ratings.items()}, {k: v[n:] for k, v in self.ratings.items()})

    @staticmethod
    def dataset(features: dict[str, np.ndarray]) -> tf.data.Dataset:
        """An unbatched dataset of feature dicts (what `tfds.load` gives)."""
        return tf.data.Dataset.from_tensor_slices(dict(features))


def movielens_like(num_users: int = 60, num_movies: int = 80, num_ratings: int = 3000, seed: int = 0,
                   rank: int = 3) -> MovieLensLike:
    """Deterministic MovieLens-shaped ratings with a planted low-rank preference."""
    rng = np.random.default_rng(seed)
    words = ["star", "love", "war", "night", "city", "dark", "life", "king", "time", "man", "girl", "story"]
    titles = np.array([f"{words[i % 12].title()} {words[(i * 5 + 3) % 12].title()} {i} ({1950 + i % 50})"
                       for i in range(num_movies)])
    movie_ids = np.array([str(i + 1) for i in range(num_movies)])
    u_f = rng.normal(size=(num_users, rank))
    m_f = rng.normal(size=(num_movies, rank))
    popularity = rng.zipf(1.6, size=num_movies).astype(float)
    popularity /= popularity.sum()
    users = rng.integers(0, num_users, size=num_ratings)
    # Each user watches movies it likes more often: the retrieval signal.
    logits = u_f[users] @ m_f.T + np.log(popularity)[None, :]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    movies = np.array([rng.choice(num_movies, p=row) for row in p])
    affinity = np.sum(u_f[users] * m_f[movies], axis=1)
    rating = np.clip(np.round(3.0 + affinity + rng.normal(scale=0.5, size=num_ratings)), 1, 5).astype(np.float32)
    timestamps = np.sort(rng.integers(874_724_710, 893_286_638, size=num_ratings)).astype(np.int64)
    ratings = {
        "user_id": np.array([str(u + 1) for u in users]),
        "movie_title": titles[movies],
        "movie_id": movie_ids[movies],
        "timestamp": timestamps,
        "user_rating": rating,
        "user_gender": (users % 2).astype(np.int64),
        "bucketized_user_age": np.array([18, 25, 35, 45, 56])[users % 5].astype(np.int64),
        "user_zip_code": np.array([f"{(u * 7919) % 90000 + 10000}" for u in users]),
        "user_occupation_text": np.array(["student", "engineer", "artist", "doctor"])[users % 4],
    }
    return MovieLensLike(ratings, titles, movie_ids, num_users)


# ------------------------------------------------------------------ cases


@dataclasses.dataclass
class Case:
    """A tutorial model and the way its tutorial feeds it.

    ``build()`` returns a fresh compiled model (call it after seeding). ``train`` and
    ``validation`` are unbatched feature-dict (or ``(x, y)``) datasets; ``batch_size`` is
    the tutorial's batching scaled to the tiny data.
    """

    name: str
    kind: str  # "retrieval", "ranking", "keras" (plain Keras model compiled with a loss)
    build: Callable[[], tf.keras.Model]
    train: tf.data.Dataset
    validation: tf.data.Dataset
    batch_size: int = 256
    # Retrieval: what `evaluate`/`BeyondAccuracy` need to know about the towers and data.
    query_model: str | None = None
    candidate_model: str | None = None
    query_features: Any = None  # feature name(s) the query tower takes
    query_key: str | None = None  # grouping id of queries (None: one query per row)
    item_key: str | None = None
    candidates: np.ndarray | None = None
    test_features: dict[str, np.ndarray] | None = None
    embedding_attr: str | None = None  # path to one Embedding layer (for EmbeddingProbe)
    jit_compile: bool = False
    # Ranking: extra arguments of the explainers (e.g. which of a list's scores to explain).
    explain_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    rtol: float = 1e-4  # losses computed twice agree to this (float16 rounding: mixed precision)
    notes: str = ""


def _lookup_tower(vocabulary, dim: int, *, mask_token=None, integer: bool = False, extra: int = 1):
    lookup = (tf.keras.layers.IntegerLookup(vocabulary=vocabulary, mask_token=mask_token) if integer
              else tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=mask_token))
    return tf.keras.Sequential([lookup, Embedding(len(vocabulary) + extra, dim)])


class _TwoTowerTask(tfrs.Model):
    """The README quickstart's / basic retrieval tutorial's `MovieLensModel`."""

    def __init__(self, user_model, movie_model, task):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task

    def compute_loss(self, features, training=False):
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings)


def quickstart(data: MovieLensLike, optimizer=None, adapted: bool = True) -> tf.keras.Model:
    """The TFRS README quickstart: adapted `StringLookup` + `Embedding` towers, FactorizedTopK."""
    ratings = MovieLensLike.dataset({"user_id": data.ratings["user_id"], "movie_title": data.ratings["movie_title"]})
    movies = tf.data.Dataset.from_tensor_slices(data.movies)
    if adapted:
        user_ids_vocabulary = tf.keras.layers.StringLookup(mask_token=None)
        user_ids_vocabulary.adapt(ratings.map(lambda x: x["user_id"]))
        movie_titles_vocabulary = tf.keras.layers.StringLookup(mask_token=None)
        movie_titles_vocabulary.adapt(movies)
        user_model = tf.keras.Sequential([user_ids_vocabulary,
                                          Embedding(user_ids_vocabulary.vocab_size(), 16)])
        movie_model = tf.keras.Sequential([movie_titles_vocabulary,
                                           Embedding(movie_titles_vocabulary.vocab_size(), 16)])
    else:  # basic retrieval: vocabularies from np.unique, Embedding(len + 1)
        user_model = _lookup_tower(np.unique(data.ratings["user_id"]), 16)
        movie_model = _lookup_tower(np.unique(data.movies), 16)
    task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(movies.batch(128).map(movie_model)))
    model = _TwoTowerTask(user_model, movie_model, task)
    model.compile(optimizer=optimizer or tf.keras.optimizers.Adagrad(0.5))
    return model


class _RankingModel(tf.keras.Model):
    """Basic ranking tutorial's `RankingModel`: two embeddings concatenated into an MLP."""

    def __init__(self, unique_user_ids, unique_movie_titles, regularised: bool = False):
        super().__init__()
        self.user_embeddings = _lookup_tower(unique_user_ids, 16)
        self.movie_embeddings = _lookup_tower(unique_movie_titles, 16)
        head = [tf.keras.layers.Dense(64, activation="relu")]
        if regularised:  # BatchNormalization and Dropout: layers whose training flag matters
            head += [tf.keras.layers.BatchNormalization(), tf.keras.layers.Dropout(0.2)]
        head += [tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(1)]
        # Mixed precision: the output in float32, as the Keras mixed-precision guide says.
        head.append(tf.keras.layers.Activation("linear", dtype="float32"))
        self.ratings = tf.keras.Sequential(head)

    def call(self, inputs):
        user_id, movie_title = inputs
        user_embedding = self.user_embeddings(user_id)
        movie_embedding = self.movie_embeddings(movie_title)
        return self.ratings(tf.concat([user_embedding, movie_embedding], axis=1))


class _RankingTask(tfrs.models.Model):
    """Basic ranking tutorial's `MovielensModel`: pops the label inside `compute_loss`."""

    def __init__(self, ranking_model):
        super().__init__()
        self.ranking_model = ranking_model
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                       metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def call(self, features):
        return self.ranking_model((features["user_id"], features["movie_title"]))

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        rating_predictions = self(features)
        return self.task(labels=labels, predictions=rating_predictions)


def basic_ranking(data: MovieLensLike, regularised: bool = False) -> tf.keras.Model:
    model = _RankingTask(_RankingModel(np.unique(data.ratings["user_id"]), np.unique(data.movies), regularised))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    return model


class _UserModel(tf.keras.Model):
    """Featurization tutorial: user id, discretised and normalised timestamp."""

    def __init__(self, unique_user_ids, timestamps):
        super().__init__()
        buckets = np.linspace(timestamps.min(), timestamps.max(), num=50)
        self.user_embedding = _lookup_tower(unique_user_ids, 16)
        self.timestamp_embedding = tf.keras.Sequential([
            tf.keras.layers.Discretization(buckets.tolist()),
            Embedding(len(buckets) + 1, 16)])
        self.normalized_timestamp = tf.keras.layers.Normalization(axis=None)
        self.normalized_timestamp.adapt(timestamps.astype(np.float64))

    def call(self, inputs):
        return tf.concat([
            self.user_embedding(inputs["user_id"]),
            self.timestamp_embedding(inputs["timestamp"]),
            tf.reshape(self.normalized_timestamp(inputs["timestamp"]), (-1, 1))], axis=1)


class _MovieModel(tf.keras.Model):
    """Featurization tutorial: title id plus a bag of title words (TextVectorization)."""

    def __init__(self, unique_movie_titles):
        super().__init__()
        max_tokens = 200
        self.title_embedding = _lookup_tower(unique_movie_titles, 16)
        self.title_vectorizer = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
        self.title_text_embedding = tf.keras.Sequential([
            self.title_vectorizer,
            Embedding(max_tokens, 16, mask_zero=True),
            tf.keras.layers.GlobalAveragePooling1D()])
        self.title_vectorizer.adapt(unique_movie_titles)

    def call(self, titles):
        return tf.concat([self.title_embedding(titles), self.title_text_embedding(titles)], axis=1)


class _DeepTower(tf.keras.Model):
    """Deep recommenders tutorial's `QueryModel` / `CandidateModel`."""

    def __init__(self, embedding_model, layer_sizes):
        super().__init__()
        self.embedding_model = embedding_model
        self.dense_layers = tf.keras.Sequential()
        for size in layer_sizes[:-1]:
            self.dense_layers.add(tf.keras.layers.Dense(size, activation="relu"))
        for size in layer_sizes[-1:]:
            self.dense_layers.add(tf.keras.layers.Dense(size))

    def call(self, inputs):
        return self.dense_layers(self.embedding_model(inputs))


class _DeepRetrieval(tfrs.models.Model):
    def __init__(self, data: MovieLensLike, layer_sizes=(32, 16)):
        super().__init__()
        self.query_model = _DeepTower(_UserModel(np.unique(data.ratings["user_id"]), data.ratings["timestamp"]),
                                      layer_sizes)
        self.candidate_model = _DeepTower(_MovieModel(data.movies), layer_sizes)
        self.task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
            candidates=tf.data.Dataset.from_tensor_slices(data.movies).batch(128).map(self.candidate_model)))

    def compute_loss(self, features, training=False):
        query_embeddings = self.query_model({"user_id": features["user_id"], "timestamp": features["timestamp"]})
        movie_embeddings = self.candidate_model(features["movie_title"])
        return self.task(query_embeddings, movie_embeddings)


def deep_retrieval(data: MovieLensLike) -> tf.keras.Model:
    model = _DeepRetrieval(data)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    return model


_DCN_STR = ["movie_id", "user_id", "user_zip_code", "user_occupation_text"]
_DCN_INT = ["user_gender", "bucketized_user_age"]


class _DCN(tfrs.Model):
    """DCN tutorial's `DCN`: one embedding per feature, a `Cross` layer, deep layers."""

    def __init__(self, vocabularies, use_cross_layer=True, deep_layer_sizes=(32, 16), projection_dim=None):
        super().__init__()
        self.embedding_dimension = 8
        self._all_features = _DCN_STR + _DCN_INT
        self._embeddings = {}
        for name in _DCN_STR:
            self._embeddings[name] = _lookup_tower(vocabularies[name], self.embedding_dimension)
        for name in _DCN_INT:
            self._embeddings[name] = _lookup_tower(vocabularies[name], self.embedding_dimension, integer=True)
        self._cross_layer = (tfrs.layers.dcn.Cross(projection_dim=projection_dim, kernel_initializer="glorot_uniform")
                             if use_cross_layer else None)
        self._deep_layers = [tf.keras.layers.Dense(s, activation="relu") for s in deep_layer_sizes]
        self._logit_layer = tf.keras.layers.Dense(1)
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                       metrics=[tf.keras.metrics.RootMeanSquaredError("RMSE")])

    def call(self, features):
        x = tf.concat([self._embeddings[name](features[name]) for name in self._all_features], axis=1)
        if self._cross_layer is not None:
            x = self._cross_layer(x)
        for deep_layer in self._deep_layers:
            x = deep_layer(x)
        return self._logit_layer(x)

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        scores = self(features)
        return self.task(labels=labels, predictions=scores)


def dcn(data: MovieLensLike) -> tf.keras.Model:
    vocabularies = {name: np.unique(data.ratings[name]) for name in _DCN_STR + _DCN_INT}
    model = _DCN(vocabularies)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    return model


class _Multitask(tfrs.models.Model):
    """Multitask tutorial's `MovielensModel`: retrieval and rating tasks on shared towers."""

    def __init__(self, data: MovieLensLike, rating_weight: float = 1.0, retrieval_weight: float = 1.0):
        super().__init__()
        self.movie_model = _lookup_tower(np.unique(data.movies), 16)
        self.user_model = _lookup_tower(np.unique(data.ratings["user_id"]), 16)
        self.rating_model = tf.keras.Sequential([
            tf.keras.layers.Dense(32, activation="relu"), tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1)])
        self.rating_task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                              metrics=[tf.keras.metrics.RootMeanSquaredError()])
        self.retrieval_task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
            candidates=tf.data.Dataset.from_tensor_slices(data.movies).batch(128).map(self.movie_model)))
        self.rating_weight, self.retrieval_weight = rating_weight, retrieval_weight

    def call(self, features):
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return (user_embeddings, movie_embeddings,
                self.rating_model(tf.concat([user_embeddings, movie_embeddings], axis=1)))

    def compute_loss(self, features, training=False):
        ratings = features.pop("user_rating")
        user_embeddings, movie_embeddings, rating_predictions = self(features)
        rating_loss = self.rating_task(labels=ratings, predictions=rating_predictions)
        retrieval_loss = self.retrieval_task(user_embeddings, movie_embeddings)
        return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss


def multitask(data: MovieLensLike) -> tf.keras.Model:
    model = _Multitask(data)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    return model


class ListwiseSoftmaxLoss(tf.keras.losses.Loss):
    """Listwise softmax cross-entropy (TF-Ranking's `SoftmaxLoss`): labels as target weights.

    TF-Ranking 0.5 does not install beside TensorFlow 2.21, so the listwise tutorial's
    loss is written out here.
    """

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        target = y_true / tf.maximum(tf.reduce_sum(y_true, axis=-1, keepdims=True), 1e-9)
        return -tf.reduce_sum(target * tf.nn.log_softmax(y_pred, axis=-1), axis=-1)


class _Listwise(tfrs.Model):
    """Listwise ranking tutorial's `RankingModel`: each example is a user and a list of movies."""

    def __init__(self, unique_user_ids, unique_movie_titles, loss):
        super().__init__()
        self.user_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=unique_user_ids),
            Embedding(len(unique_user_ids) + 2, 16)])
        self.movie_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=unique_movie_titles),
            Embedding(len(unique_movie_titles) + 2, 16)])
        self.score_model = tf.keras.Sequential([
            tf.keras.layers.Dense(32, activation="relu"), tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(loss=loss, metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def call(self, features):
        user_embeddings = self.user_embeddings(features["user_id"])
        movie_embeddings = self.movie_embeddings(features["movie_title"])
        list_length = features["movie_title"].shape[1]
        user_embedding_repeated = tf.repeat(tf.expand_dims(user_embeddings, 1), [list_length], axis=1)
        return self.score_model(tf.concat([user_embedding_repeated, movie_embeddings], 2))

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        scores = self(features)
        return self.task(labels=labels, predictions=tf.squeeze(scores, axis=-1))


def listwise_data(data: MovieLensLike, list_length: int = 5, num_lists: int = 400, seed: int = 1):
    """`tfrs.examples.movielens.sample_listwise`'s output shape: per user a list of rated movies."""
    rng = np.random.default_rng(seed)
    r = data.ratings
    by_user: dict[str, list[int]] = {}
    for i, u in enumerate(r["user_id"]):
        by_user.setdefault(u, []).append(i)
    users = sorted(u for u, rows in by_user.items() if len(rows) >= list_length)
    out = {"user_id": [], "movie_title": [], "user_rating": []}
    for j in range(num_lists):
        u = users[j % len(users)]
        rows = rng.choice(by_user[u], size=list_length, replace=False)
        out["user_id"].append(u)
        out["movie_title"].append(r["movie_title"][rows])
        out["user_rating"].append(r["user_rating"][rows])
    return {k: np.asarray(v) for k, v in out.items()}


def listwise(data: MovieLensLike) -> tf.keras.Model:
    model = _Listwise(np.unique(data.ratings["user_id"]), np.unique(data.movies), ListwiseSoftmaxLoss())
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    return model


class _Sequential(tfrs.Model):
    """Sequential retrieval tutorial's `Model`: a GRU over the last movie ids."""

    def __init__(self, query_model, candidate_model, task):
        super().__init__()
        self._query_model = query_model
        self._candidate_model = candidate_model
        self._task = task

    def compute_loss(self, features, training=False):
        watch_history = features["context_movie_id"]
        watch_next_label = features["label_movie_id"]
        query_embedding = self._query_model(watch_history)
        candidate_embedding = self._candidate_model(watch_next_label)
        return self._task(query_embedding, candidate_embedding, compute_metrics=not training)


def sequential_data(data: MovieLensLike, history: int = 5) -> dict[str, np.ndarray]:
    """Per user, sliding windows of ``history`` watched movie ids and the next one (by time)."""
    r = data.ratings
    context, label = [], []
    for u in np.unique(r["user_id"]):
        rows = np.flatnonzero(r["user_id"] == u)
        ids = r["movie_id"][rows[np.argsort(r["timestamp"][rows], kind="stable")]]
        for t in range(history, len(ids)):
            context.append(ids[t - history:t])
            label.append(ids[t])
    order = np.random.default_rng(2).permutation(len(label))
    return {"context_movie_id": np.asarray(context)[order], "label_movie_id": np.asarray(label)[order]}


def sequential(data: MovieLensLike) -> tf.keras.Model:
    unique_movie_ids = np.unique(data.movie_ids)
    query_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=unique_movie_ids, mask_token=None),
        Embedding(len(unique_movie_ids) + 1, 16),
        tf.keras.layers.GRU(16)])
    candidate_model = _lookup_tower(unique_movie_ids, 16)
    task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
        candidates=tf.data.Dataset.from_tensor_slices(unique_movie_ids).batch(128).map(candidate_model)))
    model = _Sequential(query_model, candidate_model, task)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    return model


class _HashedRetrieval(tfrs.Model):
    """Integer user ids through `IntegerLookup`, movie ids through `Hashing` (no vocabulary)."""

    def __init__(self, user_ids, num_bins: int = 128):
        super().__init__()
        self.user_model = _lookup_tower(np.unique(user_ids), 16, integer=True)
        self.movie_model = tf.keras.Sequential([tf.keras.layers.Hashing(num_bins=num_bins),
                                                Embedding(num_bins, 16)])
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        return self.task(self.user_model(features["user_id"]), self.movie_model(features["movie_id"]))


def hashed_retrieval(data: MovieLensLike) -> tf.keras.Model:
    model = _HashedRetrieval(data.ratings["user_id"].astype(np.int64))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.2))
    return model


def functional_ctr(num_users: int, num_movies: int) -> tf.keras.Model:
    """A plain Keras functional CTR model on integer ids: (features, label) pairs, BCE."""
    user = tf.keras.Input(shape=(), dtype=tf.int64, name="user_index")
    movie = tf.keras.Input(shape=(), dtype=tf.int64, name="movie_index")
    u = Embedding(num_users, 8, name="user_embedding")(user)
    m = Embedding(num_movies, 8, name="movie_embedding")(movie)
    x = tf.keras.layers.Concatenate()([u, m, u * m])
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    out = tf.keras.layers.Dense(1, activation="sigmoid", name="click")(x)
    model = tf.keras.Model({"user_index": user, "movie_index": movie}, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=[tf.keras.metrics.AUC(name="auc")])
    return model


class _SubclassedCTR(tf.keras.Model):
    """The same CTR model written as a subclass (what most Keras code does)."""

    def __init__(self, num_users: int, num_movies: int):
        super().__init__()
        self.user_embedding = Embedding(num_users, 8)
        self.movie_embedding = Embedding(num_movies, 8)
        self.hidden = tf.keras.layers.Dense(16, activation="relu")
        self.out = tf.keras.layers.Dense(1, activation="sigmoid")

    def call(self, inputs):
        u = self.user_embedding(inputs["user_index"])
        m = self.movie_embedding(inputs["movie_index"])
        return self.out(self.hidden(tf.concat([u, m, u * m], axis=1)))


def subclassed_ctr(num_users: int, num_movies: int, jit_compile: bool = False) -> tf.keras.Model:
    model = _SubclassedCTR(num_users, num_movies)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss=tf.keras.losses.BinaryCrossentropy(),
                  jit_compile=jit_compile)
    return model


class _OwnTrainStep(_TwoTowerTask):
    """A `tfrs.Model` that overrides `train_step` with its own tape (the TFRS docs allow it)."""

    def train_step(self, inputs):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            total_loss = loss + sum(self.losses)
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {"loss": loss, "regularization_loss": sum(self.losses), "total_loss": total_loss}


def own_train_step(data: MovieLensLike) -> tf.keras.Model:
    user_model = _lookup_tower(np.unique(data.ratings["user_id"]), 16)
    movie_model = _lookup_tower(np.unique(data.movies), 16)
    model = _OwnTrainStep(user_model, movie_model, tfrs.tasks.Retrieval())
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))
    return model


class _IndexTwoTower(tfrs.Model):
    """Towers over integer indices (looked up in the input pipeline): what XLA compiles."""

    def __init__(self, num_users: int, num_movies: int):
        super().__init__()
        self.user_model = tf.keras.Sequential([Embedding(num_users, 16)])
        self.movie_model = tf.keras.Sequential([Embedding(num_movies, 16)])
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        return self.task(self.user_model(features["user_index"]), self.movie_model(features["movie_index"]))


def index_two_tower(num_users: int, num_movies: int, jit_compile: bool = True) -> tf.keras.Model:
    model = _IndexTwoTower(num_users, num_movies)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5), jit_compile=jit_compile)
    return model


def mixed_precision_ranking(data: MovieLensLike) -> tf.keras.Model:
    """The basic ranking model under the ``mixed_float16`` policy (loss scaling by compile)."""
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _RankingTask(_RankingModel(np.unique(data.ratings["user_id"]), np.unique(data.movies)))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    return model


def string_lookup_jit(data: MovieLensLike) -> tf.keras.Model:
    """The quickstart model compiled with ``jit_compile=True``: XLA cannot compile StringLookup."""
    model = quickstart(data, adapted=False)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5), jit_compile=True)
    return model


# ------------------------------------------------------------------ the suite's cases


def _indexed(data: MovieLensLike) -> dict[str, np.ndarray]:
    r = data.ratings
    users = np.unique(r["user_id"])
    movie_index = {title: i for i, title in enumerate(data.movies)}
    return {"user_index": np.searchsorted(users, r["user_id"]).astype(np.int64),
            "movie_index": np.array([movie_index[t] for t in r["movie_title"]], np.int64)}


def cases(data: MovieLensLike | None = None) -> dict[str, Case]:
    """Every tutorial case on one small data set, keyed by name."""
    data = data or movielens_like()
    train, test = data.split()
    ds = MovieLensLike.dataset
    pair = {k: train[k] for k in ("user_id", "movie_title")}
    pair_test = {k: test[k] for k in ("user_id", "movie_title")}
    rank_cols = ("user_id", "movie_title", "user_rating")
    n_train = len(train["user_id"])
    idx = _indexed(data)
    idx_train = {k: v[:n_train] for k, v in idx.items()}
    idx_test = {k: v[n_train:] for k, v in idx.items()}
    clicks = (data.ratings["user_rating"] >= 4).astype(np.float32)
    seq = sequential_data(data)
    n_seq = int(0.8 * len(seq["label_movie_id"]))
    lists = listwise_data(data)
    n_lists = int(0.8 * len(lists["user_id"]))
    dcn_cols = _DCN_STR + _DCN_INT + ["user_rating"]
    retrieval = dict(query_key="user_id", item_key="movie_title", query_features="user_id",
                     candidates=data.movies, test_features=pair_test)
    out = [
        Case("quickstart", "retrieval", lambda: quickstart(data), ds(pair), ds(pair_test), 256,
             query_model="user_model", candidate_model="movie_model", embedding_attr="user_model.layers[1]",
             notes="TFRS README: adapted StringLookup towers"),
        Case("basic_retrieval", "retrieval", lambda: quickstart(data, adapted=False), ds(pair), ds(pair_test), 256,
             query_model="user_model", candidate_model="movie_model", embedding_attr="user_model.layers[1]"),
        Case("basic_ranking", "ranking", lambda: basic_ranking(data), ds({k: train[k] for k in rank_cols}),
             ds({k: test[k] for k in rank_cols}), 256, embedding_attr="ranking_model.user_embeddings.layers[1]"),
        Case("deep_retrieval", "retrieval", lambda: deep_retrieval(data),
             ds({k: train[k] for k in ("user_id", "timestamp", "movie_title")}),
             ds({k: test[k] for k in ("user_id", "timestamp", "movie_title")}), 256,
             query_model="query_model", candidate_model="candidate_model", query_key="user_id",
             query_features=("user_id", "timestamp"), item_key="movie_title", candidates=data.movies,
             test_features={k: test[k] for k in ("user_id", "timestamp", "movie_title")},
             embedding_attr="query_model.embedding_model.user_embedding.layers[1]",
             notes="featurization + deep recommenders: timestamp Discretization/Normalization, title TextVectorization"),
        Case("dcn", "ranking", lambda: dcn(data), ds({k: train[k] for k in dcn_cols}),
             ds({k: test[k] for k in dcn_cols}), 256, embedding_attr="_embeddings['user_id'].layers[1]"),
        Case("multitask", "retrieval", lambda: multitask(data), ds({k: train[k] for k in rank_cols}),
             ds({k: test[k] for k in rank_cols}), 256, query_model="user_model", candidate_model="movie_model",
             embedding_attr="user_model.layers[1]", **{**retrieval, "test_features": {k: test[k] for k in rank_cols}}),
        Case("listwise", "ranking", lambda: listwise(data), ds({k: v[:n_lists] for k, v in lists.items()}),
             ds({k: v[n_lists:] for k, v in lists.items()}), 64, embedding_attr="user_embeddings.layers[1]",
             explain_kwargs={"output": lambda y: y[:, 0, 0]},  # the score of each list's first movie
             notes="listwise softmax loss of our own (TF-Ranking does not install beside TF 2.21)"),
        Case("sequential", "retrieval", lambda: sequential(data), ds({k: v[:n_seq] for k, v in seq.items()}),
             ds({k: v[n_seq:] for k, v in seq.items()}), 256, query_model="_query_model",
             candidate_model="_candidate_model", query_features="context_movie_id", query_key=None,
             item_key="label_movie_id", candidates=np.unique(data.movie_ids),
             test_features={k: v[n_seq:] for k, v in seq.items()}, embedding_attr="_candidate_model.layers[1]"),
        Case("hashed", "retrieval", lambda: hashed_retrieval(data),
             ds({"user_id": train["user_id"].astype(np.int64), "movie_id": train["movie_id"]}),
             ds({"user_id": test["user_id"].astype(np.int64), "movie_id": test["movie_id"]}), 256,
             query_model="user_model", candidate_model="movie_model", query_key="user_id", query_features="user_id",
             item_key="movie_id", candidates=data.movie_ids,
             test_features={"user_id": test["user_id"].astype(np.int64), "movie_id": test["movie_id"]},
             embedding_attr="movie_model.layers[1]", notes="IntegerLookup and Hashing"),
        Case("functional_ctr", "keras", lambda: functional_ctr(data.num_users, len(data.movies)),
             tf.data.Dataset.from_tensor_slices((idx_train, clicks[:n_train])),
             tf.data.Dataset.from_tensor_slices((idx_test, clicks[n_train:])), 256,
             embedding_attr="layers[2]", notes="(features, label) tuples, compiled BCE loss"),
        Case("subclassed_ctr", "keras", lambda: subclassed_ctr(data.num_users, len(data.movies)),
             tf.data.Dataset.from_tensor_slices((idx_train, clicks[:n_train])),
             tf.data.Dataset.from_tensor_slices((idx_test, clicks[n_train:])), 256, embedding_attr="user_embedding"),
        Case("own_train_step", "retrieval", lambda: own_train_step(data), ds(pair), ds(pair_test), 256,
             query_model="user_model", candidate_model="movie_model", embedding_attr="user_model.layers[1]",
             notes="tfrs.Model overriding train_step with its own GradientTape"),
        Case("batchnorm_dropout", "ranking", lambda: basic_ranking(data, regularised=True),
             ds({k: train[k] for k in rank_cols}), ds({k: test[k] for k in rank_cols}), 256,
             embedding_attr="ranking_model.user_embeddings.layers[1]"),
        Case("mixed_precision", "ranking", lambda: mixed_precision_ranking(data),
             ds({k: train[k] for k in rank_cols}), ds({k: test[k] for k in rank_cols}), 256,
             embedding_attr="ranking_model.user_embeddings.layers[1]", rtol=1e-2, notes="mixed_float16 policy"),
        Case("xla_two_tower", "retrieval", lambda: index_two_tower(data.num_users, len(data.movies)),
             ds(idx_train), ds(idx_test), 256, query_model="user_model", candidate_model="movie_model",
             query_key="user_index", query_features="user_index", item_key="movie_index",
             candidates=np.arange(len(data.movies)), test_features=idx_test, embedding_attr="user_model.layers[0]",
             jit_compile=True, notes="jit_compile=True on integer-index towers"),
        Case("xla_string_lookup", "retrieval", lambda: string_lookup_jit(data), ds(pair), ds(pair_test), 256,
             query_model="user_model", candidate_model="movie_model", embedding_attr="user_model.layers[1]",
             jit_compile=True, notes="jit_compile=True with StringLookup inside the model: cannot compile"),
    ]
    by_name = {c.name: c for c in out}
    for c in out:
        if c.kind == "retrieval" and c.query_features is None:
            for k, v in retrieval.items():
                if getattr(c, k) is None:
                    setattr(c, k, v)
    return by_name


def seeded_build(case: Case, probe_embeddings: bool = False) -> tf.keras.Model:
    """A fresh model of ``case`` from seed 0 (every `Embedding` in an `EmbeddingProbe` if asked)."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    if probe_embeddings:
        with probed():
            return case.build()
    return case.build()


def resolve(model, path: str):
    """``resolve(model, "user_model.layers[1]")``: the object at an attribute path."""
    return eval("m." + path, {}, {"m": model})  # noqa: S307 - paths are the suite's own literals

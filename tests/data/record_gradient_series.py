#!/usr/bin/env python
"""Records the gradient series the detectors are tested on (tests/data/series/*.json).

Each case trains a small seeded model for a few seconds with `GradientStatistics` at
``every_n_steps=1`` and stores, per step (so any cadence of readings is a subsample):
per-variable gradient norm, weight norm and update/weight ratio, the variable's layer,
the global norm, whether the step's gradients were finite (and which variables were
not: the capture's exact test of the values, not of the norms, which can overflow),
and the loss.

    cd <repo> && PYTHONPATH=. TF_USE_LEGACY_KERAS=1 python tests/data/record_gradient_series.py [case ...]

The numbers are ours (CPU, TF 2.21, tf-keras); re-recording may change the last digits,
never the shape of a series: the tests assert properties, not digits.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for tutorial_models

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

import tutorial_models as T  # noqa: E402
from tfrs_diag.callbacks import GradientStatistics  # noqa: E402
from tfrs_diag.capture import SNAPSHOT_COLUMNS  # noqa: E402

COL = {c: j for j, c in enumerate(SNAPSHOT_COLUMNS)}


def _num(x: float) -> float | None | str:
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.4g}")


class _Recorder(tf.keras.callbacks.Callback):
    def __init__(self, grads: GradientStatistics):
        super().__init__()
        self.grads = grads
        self.steps: list[dict] = []
        self._counts = None

    def on_train_batch_end(self, batch, logs=None):
        stats = self.grads.last_stats
        if stats is None or stats["snapshot_step"] <= (self.steps[-1]["step"] if self.steps else 0):
            return
        snap = stats["snapshot"]
        # The capture's exact test of the values (a norm can overflow to inf while the values are finite).
        counts = stats["nonfinite_count"]
        bad = np.flatnonzero(counts > (self._counts if self._counts is not None else 0))
        self._counts = counts.copy()
        loss = float(logs.get("loss", float("nan"))) if logs else float("nan")
        self.steps.append({
            "step": int(stats["snapshot_step"]),
            "finite": not len(bad),
            "nonfinite": [int(i) for i in bad],
            "loss": _num(loss),
            "global_norm": _num(math.sqrt(float(np.sum(snap[:, COL["norm"]].astype(np.float64) ** 2)))),
            "grad_norm": [_num(v) for v in snap[:, COL["norm"]]],
            "weight_norm": [_num(v) for v in snap[:, COL["weight_norm"]]],
            "update_ratio": [_num(v) for v in snap[:, COL["update_ratio"]]],
        })


# ------------------------------------------------------------------ models


class _Ranking(tfrs.Model):
    """Basic-ranking shape: user and movie embeddings concatenated into an MLP head."""

    def __init__(self, data, head, loss=None):
        super().__init__()
        self.user = T._lookup_tower(np.unique(data.ratings["user_id"]), 16)
        self.movie = T._lookup_tower(np.unique(data.movies), 16)
        self.head = tf.keras.Sequential(head)
        self.task = tfrs.tasks.Ranking(loss=loss or tf.keras.losses.MeanSquaredError())

    def call(self, f):
        return self.head(tf.concat([self.user(f["user_id"]), self.movie(f["movie_title"])], axis=1))

    def compute_loss(self, features, training=False):
        return self.task(labels=features["user_rating"], predictions=self(features))


def _ratings(data, batch):
    keys = ("user_id", "movie_title", "user_rating")
    return T.MovieLensLike.dataset({k: data.ratings[k] for k in keys}).batch(batch)


def deep_sigmoid(seed=0):
    """7 Dense(64, sigmoid) layers, N(0, 0.01) kernels, under the embeddings: vanishing."""
    data = T.movielens_like(num_users=100, num_movies=120, num_ratings=6000, seed=seed)
    init = tf.keras.initializers.RandomNormal(stddev=0.01, seed=seed)
    head = [tf.keras.layers.Dense(64, activation="sigmoid", kernel_initializer=init, name=f"sig{i}")
            for i in range(7)] + [tf.keras.layers.Dense(1, name="out")]
    model = _Ranking(data, head)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.001))
    return model, _ratings(data, 64), 2, "ranking, 7 x Dense(64, sigmoid) N(0, 0.01) head, Adam(1e-3), batch 64"


def healthy_ranking(seed=0):
    data = T.movielens_like(num_users=100, num_movies=120, num_ratings=6000, seed=seed)
    model = T.basic_ranking(data)
    return model, _ratings(data, 64), 2, "basic ranking tutorial (Dense 64-16-1 relu), Adagrad(0.1), batch 64"


def healthy_retrieval(seed=0):
    data = T.movielens_like(num_users=100, num_movies=120, num_ratings=6000, seed=seed)
    model = T.quickstart(data, adapted=False)
    ds = T.MovieLensLike.dataset({k: data.ratings[k] for k in ("user_id", "movie_title")}).batch(64)
    return model, ds, 2, "README quickstart two-tower retrieval, Adagrad(0.5), batch 64"


def _linear_head(seed):
    """No activation: nothing saturates or dies, so a too-large step size diverges."""
    init = tf.keras.initializers.GlorotUniform(seed=seed)
    return [tf.keras.layers.Dense(16, kernel_initializer=init, name="d0"),
            tf.keras.layers.Dense(1, kernel_initializer=init, name="out")]


def explode_nonfinite(seed=0):
    """SGD(0.01) for 40 steps, then SGD(0.25), past the stability limit: the gradients grow until NaN/Inf."""
    data = T.movielens_like(num_users=100, num_movies=120, num_ratings=6000, seed=seed)
    model = _Ranking(data, _linear_head(seed))
    lr = tf.keras.optimizers.schedules.PiecewiseConstantDecay([40], [0.01, 0.25])
    model.compile(optimizer=tf.keras.optimizers.SGD(lr))
    return model, _ratings(data, 64), 1, "ranking linear head, MSE, SGD 0.01 then 0.25 from step 41, batch 64"


def explode_finite(seed=0):
    """Adam(0.01); the labels of steps 51-53 are in the wrong unit (x 1000): finite gradient spikes, then recovery."""
    data = T.movielens_like(num_users=100, num_movies=120, num_ratings=6000, seed=seed)
    ratings = dict(data.ratings)
    rating = ratings["user_rating"].copy()
    rating[50 * 64: 53 * 64] *= 1000.0
    ratings["user_rating"] = rating
    data = T.MovieLensLike(ratings, data.movies, data.movie_ids, data.num_users)
    model = _Ranking(data, _linear_head(seed))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    return model, _ratings(data, 64), 1, "ranking linear head, MSE, Adam(0.01), labels x1000 at steps 51-53, batch 64"


CASES = {f.__name__: f for f in (deep_sigmoid, healthy_ranking, healthy_retrieval, explode_nonfinite, explode_finite)}


def record(name: str) -> dict:
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model, ds, epochs, what = CASES[name]()
    with tempfile.TemporaryDirectory() as tmp:
        grads = GradientStatistics(tmp, every_n_steps=1, histograms=False, verbose=0)
        rec = _Recorder(grads)
        model.fit(ds, epochs=epochs, callbacks=[grads, rec], verbose=0)
    tracked = grads.capture.tracked
    return {"case": name, "what": what, "variables": [t.name for t in tracked],
            "layers": [t.layer for t in tracked], "steps": rec.steps,
            "old_alerts": [[a.kind, a.step, a.subject] for a in grads.alerts if a.kind != "cleared"]}


def main(argv):
    for name in argv or list(CASES):
        out = record(name)
        path = HERE / "series" / f"{name}.json"
        path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
        kinds = sorted({(a[0], a[1]) for a in out["old_alerts"]})
        print(f"{name}: {len(out['steps'])} steps, {path.stat().st_size // 1024} KB, alerts {kinds[:8]}")


if __name__ == "__main__":
    main(sys.argv[1:])

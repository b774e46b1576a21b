"""Records the series the monitor detectors are tested on: short real runs on MovieLens-100k.

Each run trains a small model with one `OverfittingMonitor` probing finely (every
``FINE`` steps, 256 held-out and 256 training examples) and, beside it, one monitor at its
defaults, whose alerts are kept as ``alerts_at_defaults`` (what the rules of the commit
in ``recorded_with`` raised). The fine readings, epoch logs, embedding statistics,
gradient alerts and (for the retrieval run) per-group evaluations go to
``tests/data/series/monitor_<run>.json``; tests/test_monitor_detectors.py feeds them to
the detectors. Runs take 20-60 s each on two cores:

    TF_USE_LEGACY_KERAS=1 python tests/data/series/record_monitor.py [run ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from tfrs_diag import datasets, models  # noqa: E402
from tfrs_diag._keras import tf  # noqa: E402
from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor  # noqa: E402
from tfrs_diag.layers import EmbeddingProbe  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
MOVIELENS = pathlib.Path(os.environ.get("TFRS_DIAG_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "movielens-100k"))
BATCH = 1024
PROBE = 256
FINE = 4
DIVERGING_GROWTH = float(os.environ.get("DIVERGING_GROWTH", "1.05"))  # lr x this per step after epoch 1
RUNS = {}


def run(fn):
    RUNS[fn.__name__] = fn
    return fn


def _data():
    return datasets.movielens_100k(MOVIELENS, seed=0)


def _head(table, keys, n=PROBE):
    return {k: np.asarray(table[k])[:n] for k in keys}


def _monitors(log_dir, heldout, seen, **kwargs):
    fine = OverfittingMonitor(os.path.join(log_dir, "fine"), probe_data=heldout, train_probe_data=seen,
                              probe_size=PROBE, probe_every_n_steps=FINE, verbose=0, **kwargs)
    default = OverfittingMonitor(os.path.join(log_dir, "default"), probe_data=heldout, train_probe_data=seen,
                                 verbose=0, **kwargs)
    return fine, default


def _alerts(*callbacks):
    return [{"kind": a.kind, "status": a.status, "step": a.step, "epoch": a.epoch, "subject": a.subject}
            for cb in callbacks for a in cb.alert_log.history]


def _numbers(d):
    return {k: (float(v) if v is not None else None) for k, v in d.items()}


def _record(name, setup, fine, default, history, extra=None, steps_per_epoch=None, grads=None):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    out = {
        "name": name, "setup": setup, "recorded_with": commit, "batch_size": BATCH, "probe_size": PROBE,
        "probe_every_n_steps": FINE, "steps_per_epoch": steps_per_epoch,
        "readings": [_numbers(r) for r in fine.readings],
        "epoch_logs": [_numbers(e) for e in fine.epoch_logs],
        "history": {k: [float(x) for x in v] for k, v in history.items()},
        "baselines_old": _numbers(getattr(fine, "baselines", {})),
        "embedding_stats": [{k: (v if not isinstance(v, (np.floating, np.integer)) else float(v))
                             for k, v in s.items()} for s in fine.embedding_stats],
        "gradient_alerts": _alerts(grads) if grads is not None else [],
        "alerts_at_defaults": _alerts(default),
        **(extra or {}),
    }
    path = HERE / f"monitor_{name}.json"
    path.write_text(json.dumps(out, indent=1, allow_nan=True) + "\n")
    print(f"{name}: {len(out['readings'])} readings, defaults fired "
          f"{sorted({a['kind'] for a in out['alerts_at_defaults'] if a['status'] == 'firing'})} -> {path.name}")


def _mean_predictor_mse(labels) -> float:
    labels = np.asarray(labels, np.float64)
    return float(np.mean((labels - labels.mean()) ** 2))


@run
def rating_lr1e6(log_dir):
    data = _data()
    feats = ["user_id", "item_id"]
    tf.keras.utils.set_random_seed(0)
    model = models.RankingModel(data.train, string_features=feats, int_features=(), embedding_dim=32)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-6))
    keys = feats + ["rating"]
    fine, default = _monitors(log_dir, _head(data.test, keys), _head(data.train, keys))
    train = models.ranking_dataset(data.train, feats, BATCH)
    h = model.fit(train, epochs=3, validation_data=models.ranking_dataset(data.test, feats, BATCH, shuffle_seed=None),
                  callbacks=[fine, default], verbose=0)
    _record("rating_lr1e6", "MovieLens-100k rating model (user/item embeddings dim 32, MLP 64-32, MSE), Adam(1e-6), "
            "batch 1024, 3 epochs", fine, default, h.history,
            {"mean_predictor_seen": _mean_predictor_mse(data.train["rating"][:PROBE]),
             "mean_predictor_heldout": _mean_predictor_mse(data.test["rating"][:PROBE]),
             "loss_reduction": "mean"}, steps_per_epoch=int(np.ceil(len(data.train["rating"]) / BATCH)))


def _retrieval(log_dir, name, setup, optimizer, epochs, dim, fairness=False):
    data = _data()
    keys = ("user_id", "item_id")
    tf.keras.utils.set_random_seed(0)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=dim,
                                 embedding_probe=True)
    model.compile(optimizer=optimizer)
    fine, default = _monitors(log_dir, _head(data.test, keys), _head(data.train, keys))
    callbacks = [fine, default]
    beyond = None
    if fairness:
        beyond = BeyondAccuracy(os.path.join(log_dir, "beyond"), data.test, data.items["item_id"], k=(10,),
                                user_group_keys=("user_group", "user_age_bucket"), query_key="user_id",
                                item_key="item_id", verbose=0)
        callbacks.insert(0, beyond)
    h = model.fit(models.retrieval_dataset(data.train, BATCH), epochs=epochs, callbacks=callbacks, verbose=0,
                  validation_data=models.retrieval_dataset(data.test, BATCH, shuffle_seed=None))
    extra = {"loss_reduction": "sum", "uniform_softmax_per_example": float(np.log(PROBE))}
    if beyond is not None:
        extra["evaluations"] = [{"epoch": e, "metrics": _numbers(r.metrics), "tables": r.tables}
                                for e, r in beyond.history]
        extra["alerts_at_defaults_beyond"] = _alerts(beyond)
    _record(name, setup, fine, default, h.history, extra,
            steps_per_epoch=int(np.ceil(len(data.train["user_id"]) / BATCH)))


@run
def retrieval_lr1e6(log_dir):
    _retrieval(log_dir, "retrieval_lr1e6", "MovieLens-100k two-tower (dim 32, EmbeddingProbe), Adam(1e-6), batch "
               "1024, 3 epochs", tf.keras.optimizers.Adam(1e-6), 3, 32)


@run
def retrieval_overfit(log_dir):
    _retrieval(log_dir, "retrieval_overfit", "MovieLens-100k two-tower (dim 64, EmbeddingProbe), Adagrad(1.0), "
               "batch 1024, 10 epochs, BeyondAccuracy by gender and age", tf.keras.optimizers.Adagrad(1.0), 10, 64,
               fairness=True)


@run
def rating_cross(log_dir):
    """Rating regression (MSE) with a hashed user x item cross embedding: memorises each pair."""
    data = _data()
    buckets = 200_003

    def xy(table):
        u = np.asarray(table["user_index"], np.int64)
        i = np.asarray(table["item_index"], np.int64)
        return {"user": u, "item": i, "cross": (u * 7919 + i * 104729) % buckets}, \
            np.asarray(table["rating"], np.float32)

    tf.keras.utils.set_random_seed(0)
    ins = {k: tf.keras.Input((), name=k, dtype=tf.int64) for k in ("user", "item", "cross")}
    u = tf.keras.layers.Embedding(data.num_users, 32)(ins["user"])
    i = tf.keras.layers.Embedding(data.num_items, 32)(ins["item"])
    c = tf.keras.layers.Embedding(buckets, 32)(ins["cross"])
    hidden = tf.keras.layers.Dense(64, activation="relu")(tf.keras.layers.Concatenate()([u, i, c]))
    out = tf.keras.layers.Dense(1)(tf.keras.layers.Dense(32, activation="relu")(hidden))
    model = tf.keras.Model(ins, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.005), loss="mse")
    x, y = xy(data.train)
    xt, yt = xy(data.test)
    heldout = ({k: v[:PROBE] for k, v in xt.items()}, yt[:PROBE])
    seen = ({k: v[:PROBE] for k, v in x.items()}, y[:PROBE])
    fine, default = _monitors(log_dir, heldout, seen)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(BATCH)
    val = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(BATCH)
    h = model.fit(train, epochs=3, validation_data=val, callbacks=[fine, default], verbose=0)
    _record("rating_cross", "MovieLens-100k rating regression (MSE) on user, item and a hashed user x item cross "
            "(200k buckets), embeddings dim 32, MLP 64-32, Adam(0.005), batch 1024, 3 epochs", fine, default,
            h.history, {"mean_predictor_seen": _mean_predictor_mse(y[:PROBE]), "loss_reduction": "mean"},
            steps_per_epoch=int(np.ceil(len(y) / BATCH)))


class _Ramp(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``lr`` up to step ``start``, then ``lr * growth ** (step - start)``: a run that slowly diverges."""

    def __init__(self, lr, start, growth):
        self.lr, self.start, self.growth = lr, start, growth

    def __call__(self, step):
        k = tf.maximum(tf.cast(step, tf.float32) - self.start, 0.0)
        return self.lr * tf.pow(self.growth, k)

    def get_config(self):
        return {"lr": self.lr, "start": self.start, "growth": self.growth}


@run
def diverging(log_dir):
    """Rating regression with EmbeddingProbe tables whose learning rate jumps to a diverging one in epoch 2."""
    data = _data()

    def xy(table):
        return {"user": np.asarray(table["user_index"], np.int64), "item": np.asarray(table["item_index"], np.int64)}, \
            np.asarray(table["rating"], np.float32)

    tf.keras.utils.set_random_seed(0)
    ins = {k: tf.keras.Input((), name=k, dtype=tf.int64) for k in ("user", "item")}
    u = EmbeddingProbe(tf.keras.layers.Embedding(data.num_users, 16, name="user_embedding"))(ins["user"])
    i = EmbeddingProbe(tf.keras.layers.Embedding(data.num_items, 16, name="item_embedding"))(ins["item"])
    hidden = tf.keras.layers.Dense(32, activation="relu")(tf.keras.layers.Concatenate()([u, i, u * i]))
    model = tf.keras.Model(ins, tf.keras.layers.Dense(1)(hidden))
    steps = int(np.ceil(len(data.train["rating"]) / BATCH))
    lr = _Ramp(0.01, steps + 20, DIVERGING_GROWTH)
    model.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="mse")
    x, y = xy(data.train)
    xt, yt = xy(data.test)
    heldout = ({k: v[:PROBE] for k, v in xt.items()}, yt[:PROBE])
    seen = ({k: v[:PROBE] for k, v in x.items()}, y[:PROBE])
    grads = GradientStatistics(os.path.join(log_dir, "grads"), every_n_steps=FINE, verbose=0)
    # Non-finite updates zeroed but training goes on (what on_nonfinite="stop" does, without the
    # stop): the weights stay finite and huge, as in runs with loss scaling or NaN-skipping optimizers.
    grads.capture.sanitize_nonfinite = True
    fine, default = _monitors(log_dir, heldout, seen)
    default_g = OverfittingMonitor(os.path.join(log_dir, "default_g"), probe_data=heldout, train_probe_data=seen,
                                   gradient_statistics=grads, verbose=0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(BATCH)
    val = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(BATCH)
    h = model.fit(train, epochs=4, validation_data=val, callbacks=[grads, fine, default, default_g], verbose=0)
    _record("diverging", "MovieLens-100k rating regression, user/item EmbeddingProbe tables dim 16, SGD 0.01 then "
            f"then x{DIVERGING_GROWTH} per step from step {steps + 21} (diverges), batch 1024, 4 epochs, GradientStatistics every 4 steps "
            "zeroing non-finite updates", fine,
            default, h.history, {"alerts_at_defaults_with_gradients": _alerts(default_g),
                                 "mean_predictor_seen": _mean_predictor_mse(y[:PROBE]), "loss_reduction": "mean"},
            steps_per_epoch=steps, grads=grads)


def main(argv):
    if not (MOVIELENS / "u.data").exists():
        raise SystemExit(f"MovieLens-100k not found at {MOVIELENS}")
    for name in argv or RUNS:
        tf.keras.backend.clear_session()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            RUNS[name](d)
        print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

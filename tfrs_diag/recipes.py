"""Training recipes the demo, the examples, the tests and the benchmarks share.

`load_data` (synthetic or MovieLens-100k), `train_retrieval` / `train_ranking` (the
TFRS tutorial models with every diagnostic), `fit_with_diagnostics`, the evaluations
`retrieval_hit_rate` and `ranking_rmse`, the callback set-ups `beyond_accuracy_callback`
and `overfitting_callback`, and `example_setup` (the examples' options). Heavy imports
(TensorFlow, TFRS) happen inside them.

>>> from tfrs_diag import recipes

Not run here: these lines train a model or read a training run's log directory (tests/test_cli_examples.py runs them).
>>> data = recipes.load_data(None, num_interactions=4000)                       # doctest: +SKIP
>>> result = recipes.train_retrieval(data, "logs/run1", epochs=1, verbose=0)     # doctest: +SKIP
>>> recipes.retrieval_hit_rate(result.model, data) > 100 / data.num_items        # doctest: +SKIP
True
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Sequence

#: Hit rate cut-off of the retrieval evaluation.
TOP_K = 100


class UsageError(Exception):
    """Bad input from the command line; its message names the argument and says what to pass."""


def synthetic_sizes(num_interactions: int) -> tuple[int, int]:
    """(users, items) for a synthetic set of ``num_interactions``, in the default proportions.

    The default 40000 interactions give 1000 users and 1500 items (the generator's defaults).

    >>> synthetic_sizes(40000), synthetic_sizes(4000)
    ((1000, 1500), (100, 150))
    """
    users = max(2, round(num_interactions / 40))
    items = max(10, round(num_interactions * 1500 / 40000))
    return users, items


def load_data(data_dir: str | None = None, *, num_interactions: int | None = None, seed: int = 0):
    """MovieLens-100k from ``data_dir`` (all ratings), else the synthetic generator.

    ``num_interactions`` sizes the synthetic set (default 40000; users and items scale
    with it, see `synthetic_sizes`). Raises `UsageError` naming ``--data-dir`` when that
    directory or its files are missing, and for ``--num-interactions`` with ``--data-dir``.
    """
    from tfrs_diag import datasets

    check_data_args(data_dir, num_interactions)
    if data_dir is not None:
        try:
            return datasets.movielens_100k(data_dir, seed=seed)
        except FileNotFoundError as e:
            raise UsageError(f"--data-dir: {e}") from None
    n = 40000 if num_interactions is None else num_interactions
    users, items = synthetic_sizes(n)
    try:
        return datasets.synthetic(num_users=users, num_items=items, num_interactions=n, seed=seed)
    except ValueError as e:
        raise UsageError(f"--num-interactions={n}: {e}") from None


@dataclasses.dataclass
class TrainResult:
    """What a training routine returns: the model, Keras history and the diagnostics callback."""

    model: Any
    history: dict[str, list[float]]
    gradients: Any  # tfrs_diag.callbacks.GradientStatistics
    log_dir: str
    steps: int
    seconds: float
    beyond_accuracy: Any = None  # tfrs_diag.callbacks.BeyondAccuracy, when it ran
    overfitting: Any = None  # tfrs_diag.callbacks.OverfittingMonitor, when it ran

    @property
    def final_loss(self) -> float:
        """Mean of the per-batch training losses over the last epoch."""
        return float(self.history["mean_loss"][-1])


def _mean_loss_callback():
    """A callback adding ``mean_loss`` (mean of the per-batch losses) to each epoch's logs.

    `tfrs.Model.train_step` reports the loss of the latest batch only, so Keras' epoch
    ``loss`` is that of the last, often partial, batch. Callbacks listed after this one
    (and Keras' History) see ``mean_loss`` in their epoch logs.
    """
    from tfrs_diag._keras import tf

    class MeanLoss(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.total, self.batches = 0.0, 0

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                self.total += float(logs["loss"])
                self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and self.batches:
                logs["mean_loss"] = self.total / self.batches

    return MeanLoss()


def _epoch_line_callback(epochs: int):
    """A callback printing one short line per epoch: what the demo and the examples show.

    Keras' own progress line carries every key of the epoch logs (the model's three losses,
    the diagnostics' headline, validation): useful to a program, long for a person.
    """
    from tfrs_diag._keras import tf

    shown = (("loss/batch", "mean_loss", "{:.4g}"), ("probe loss/example held-out", "probe_heldout_loss", "{:.4g}"),
             ("train", "probe_seen_loss", "{:.4g}"))

    class EpochLine(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"epoch {epoch + 1}/{epochs}", f"{time.perf_counter() - self.start:.1f} s"]
            parts += [f"{label} {fmt.format(logs[key])}" for label, key, fmt in shown if key in logs]
            parts += [f"{key[len('val_'):].replace('_at_', '@')} {logs[key]:.3g}" for key in logs
                      if key.startswith("val_") and key != "val_loss" and not key.endswith("loss")]
            print("  ".join(parts), flush=True)

    return EpochLine()


def fit_with_diagnostics(model, train_ds, log_dir: str, *, epochs: int, every_n_steps: int,
                         histogram_every_n_steps: int, verbose: int, extra_callbacks: Sequence[Any] = ()
                         ) -> TrainResult:
    """Fits ``model`` with `GradientStatistics`, ``extra_callbacks`` and Keras' loss curves."""
    from tfrs_diag import summary
    from tfrs_diag._keras import tf
    from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor

    gradients = GradientStatistics(log_dir, every_n_steps=every_n_steps,
                                   histogram_every_n_steps=histogram_every_n_steps, verbose=verbose)
    beyond = next((c for c in extra_callbacks if isinstance(c, BeyondAccuracy)), None)
    monitor = next((c for c in extra_callbacks if isinstance(c, OverfittingMonitor)), None)
    if monitor is not None and monitor.gradient_statistics is None:  # it reads the vanishing-gradient alerts
        monitor.gradient_statistics = gradients
    # The stock callback adds the loss curves beside the gradients (no histograms: those
    # crash on StringLookup's string weights).
    losses = tf.keras.callbacks.TensorBoard(log_dir, histogram_freq=0, write_graph=False, update_freq="epoch")
    start = time.perf_counter()
    printer = [_epoch_line_callback(epochs)] if verbose else []
    history = model.fit(train_ds, epochs=epochs, verbose=0,
                        callbacks=[_mean_loss_callback(), gradients, *extra_callbacks, losses, *printer])
    seconds = time.perf_counter() - start
    # Complete event files on disk, for TensorBoard and read_run.
    summary.close_writer(log_dir)
    summary.close_writer(log_dir, "validation")
    steps = gradients.last_stats["step"] if gradients.last_stats else 0
    return TrainResult(model, history.history, gradients, log_dir, steps, seconds, beyond, monitor)


def train_retrieval(data, log_dir: str, *, epochs: int = 3, batch_size: int = 1024, embedding_dim: int = 32,
                    learning_rate: float = 0.1, seed: int = 0, every_n_steps: int = 100,
                    histogram_every_n_steps: int = 1000, verbose: int = 1,
                    beyond_accuracy: bool = True, overfitting: bool = True) -> TrainResult:
    """Trains `tfrs_diag.models.TwoTowerModel` on ``data.train`` with gradient diagnostics
    and (``beyond_accuracy``) the top-K evaluation of `beyond_accuracy_callback` each epoch.

    The TFRS tutorial set-up: string ids through `StringLookup`, in-batch softmax,
    Adagrad. Statistics go to ``log_dir/train`` every ``every_n_steps`` steps. With
    ``overfitting``, `overfitting_callback` watches for over- and underfitting.
    """
    from tfrs_diag import models
    from tfrs_diag._keras import tf

    tf.keras.utils.set_random_seed(seed)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=embedding_dim)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    train_ds = models.retrieval_dataset(data.train, batch_size=batch_size, shuffle_seed=seed)
    extra = [beyond_accuracy_callback(data, log_dir, verbose=verbose)] if beyond_accuracy else []
    if overfitting:
        extra.append(overfitting_callback(data, log_dir, keys=(model.user_key, model.item_key),
                                          every_n_steps=every_n_steps, verbose=verbose))
    return fit_with_diagnostics(model, train_ds, log_dir, epochs=epochs, every_n_steps=every_n_steps,
                                histogram_every_n_steps=histogram_every_n_steps, verbose=verbose, extra_callbacks=extra)


def beyond_accuracy_callback(data, log_dir: str, *, k: Sequence[int] = (10, TOP_K), verbose: int = 1):
    """`BeyondAccuracy` on the test split: accuracy, diversity, popularity bias, exposure and
    per-user-group fairness every epoch, with the data set's groups and popularity."""
    from tfrs_diag.callbacks import BeyondAccuracy

    return BeyondAccuracy(log_dir, data.test, data.items["item_id"], k=tuple(min(x, data.num_items) for x in k),
                          query_key="user_id", item_key="item_id", user_group_keys=("user_group",),
                          user_group_names={"user_group": data.user_group_names},
                          item_groups=data.items["item_category"], item_group_names=data.item_group_names,
                          item_popularity=data.item_popularity, verbose=verbose)


def overfitting_callback(data, log_dir: str, *, keys: Sequence[str] = ("user_id", "item_id"),
                         every_n_steps: int = 100, verbose: int = 1):
    """`OverfittingMonitor` with probes of 256 test and 256 train interactions every
    ``every_n_steps`` steps, and the test split as validation data (its loss each epoch)."""
    from tfrs_diag import models
    from tfrs_diag.callbacks import OverfittingMonitor

    return OverfittingMonitor(
        log_dir, validation_data=models.retrieval_dataset(data.test, 4096, keys=keys, shuffle_seed=None),
        probe_data={k: data.test[k] for k in keys}, train_probe_data={k: data.train[k] for k in keys},
        probe_every_n_steps=every_n_steps, verbose=verbose)


def retrieval_hit_rate(model, data, k: int = TOP_K, batch_size: int = 4096) -> float:
    """Share of test interactions whose item is in its user's top-``k`` over the whole catalog.

    A brute-force index (`tfrs.layers.factorized_top_k.BruteForce`) over every item;
    items the user had in train are not excluded, as in `tfrs.metrics.FactorizedTopK`.
    A random recommender scores ``k / num_items``.
    """
    import tensorflow_recommenders as tfrs

    from tfrs_diag._keras import tf

    k = min(k, data.num_items)
    item_ids = tf.constant(data.items[model.item_key])
    index = tfrs.layers.factorized_top_k.BruteForce(model.user_model, k=k)
    index.index(model.item_model(item_ids), identifiers=item_ids)
    users, items = data.test[model.user_key], data.test[model.item_key]
    hits = 0
    for lo in range(0, len(users), batch_size):
        _, top = index(tf.constant(users[lo:lo + batch_size]), k=k)
        hits += int(tf.reduce_sum(tf.cast(
            tf.reduce_any(top == tf.constant(items[lo:lo + batch_size])[:, None], axis=1), tf.int32)))
    return hits / max(len(users), 1)


def train_ranking(data, log_dir: str, *, epochs: int = 3, batch_size: int = 1024, embedding_dim: int = 16,
                  learning_rate: float = 0.01, seed: int = 0, every_n_steps: int = 100,
                  histogram_every_n_steps: int = 1000, verbose: int = 1) -> TrainResult:
    """Trains `tfrs_diag.models.RankingModel` (rating regression) with gradient diagnostics.

    Feature groups: ``user_id``, ``item_id``, ``user_gender`` (strings) and
    ``user_age_bucket``, ``item_category`` (integers), each embedded, then an MLP.
    Both the synthetic and the MovieLens data sets carry these keys.

    Adam, not the tutorial's Adagrad(0.1): with batches of a few hundred, Adagrad(0.1)
    sometimes throws this model's predictions far off in the last steps of an epoch
    (test RMSE 1.5-3 against 0.95), while Adam(0.01) converged on every seed tried.
    """
    from tfrs_diag import models
    from tfrs_diag._keras import tf

    tf.keras.utils.set_random_seed(seed)
    model = models.RankingModel(data.train, embedding_dim=embedding_dim)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    train_ds = models.ranking_dataset(data.train, model.feature_names, batch_size=batch_size, shuffle_seed=seed)
    return fit_with_diagnostics(model, train_ds, log_dir, epochs=epochs, every_n_steps=every_n_steps,
                                histogram_every_n_steps=histogram_every_n_steps, verbose=verbose)


def ranking_rmse(model, interactions, batch_size: int = 4096) -> float:
    """Root mean squared error of the predicted ratings on ``interactions`` (e.g. ``data.test``)."""
    from tfrs_diag import models

    ds = models.ranking_dataset(interactions, model.feature_names, batch_size=batch_size, shuffle_seed=None)
    return float(model.evaluate(ds, return_dict=True, verbose=0)["root_mean_squared_error"])


def example_setup(argv, description: str, *, logdir: str, embedding_dim: int):
    """Parses the examples' shared options and loads their data: ``(args, data)``.

    Options: ``--data-dir``, ``--num-interactions``, ``--logdir``, ``--epochs``,
    ``--batch-size``, ``--embedding-dim``, ``--every-n-steps``, ``--seed``; bad input
    exits with a one-line argparse error naming the option.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", help="MovieLens-100k directory; default: synthetic data")
    parser.add_argument("--num-interactions", type=positive_int, help="size of the synthetic data (default 40000)")
    parser.add_argument("--logdir", default=logdir, help="TensorBoard log directory")
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=1024)
    parser.add_argument("--embedding-dim", type=positive_int, default=embedding_dim)
    parser.add_argument("--every-n-steps", type=positive_int, default=10, help="cadence of the gradient statistics")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args(argv)
    try:
        check_logdir(args.logdir)
        data = load_data(args.data_dir, num_interactions=args.num_interactions, seed=args.seed)
    except UsageError as e:
        parser.error(str(e))
    print(data.describe())
    return args, data


def check_data_args(data_dir: str | None, num_interactions: int | None) -> None:
    """Raises `UsageError` for a ``--data-dir`` that is no directory, or one given with ``--num-interactions``."""
    if data_dir is None:
        return
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir: {data_dir!r} is not a directory; pass the unzipped ml-100k "
                         "directory (with u.data, u.item, u.user) or leave it out for synthetic data")
    if num_interactions is not None:
        raise UsageError("--num-interactions sizes the synthetic data only; pass either it or --data-dir")


def check_logdir(logdir: str) -> str:
    """Creates ``logdir`` if needed; raises `UsageError` naming ``--logdir`` when it is not writable."""
    from tfrs_diag import summary

    try:
        return summary.check_log_dir(logdir, argument="--logdir")
    except ValueError:
        raise UsageError(f"--logdir: cannot create or write to {logdir!r}; pass a directory you can write to") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0.

    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0.

    >>> non_negative_int("0")
    0
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def explain_features() -> list[str]:
    """The demo ranking model's feature groups (see `train_ranking`)."""
    return ["user_id", "item_id", "user_gender", "user_age_bucket", "item_category"]


# ======================================================================= the demo and explain commands


@dataclasses.dataclass
class DemoResult:
    """What `run_demo` found: the data, the training, the hit rate and the logs read back."""

    data: Any
    training: TrainResult
    hit_rate: float
    run_dir: str
    train_run: Any  # tfrs_diag.summary.events.RunData of <run_dir>/train
    alerts: list[dict]  # of the train and validation runs, as read back

    @property
    def table_rows(self) -> dict[str, int]:
        """Rows of each embedding table the gradients were captured on (by variable name)."""
        return {t.name: t.shape[0] for t in self.training.gradients.capture.tracked if t.sparse}


def run_demo(run_dir: str, *, data_dir: str | None = None, num_interactions: int | None = None, epochs: int = 3,
             batch_size: int = 1024, seed: int = 0, every_n_steps: int = 10, histogram_every_n_steps: int = 50,
             say=print) -> DemoResult:
    """Trains the retrieval example with every diagnostic into ``run_dir`` and reads its logs back.

    ``say`` gets one progress line per stage ("[1/4] loading data ...").
    """
    from tfrs_diag.summary import events

    say(f"[1/4] loading data ({'MovieLens-100k from ' + data_dir if data_dir else 'synthetic'})")
    data = load_data(data_dir, num_interactions=num_interactions, seed=seed)
    say(f"[2/4] training the two-tower retrieval model: {epochs} epoch(s), batch {batch_size}, "
        f"gradient statistics every {every_n_steps} steps")
    training = train_retrieval(data, run_dir, epochs=epochs, batch_size=batch_size, seed=seed,
                               every_n_steps=every_n_steps, histogram_every_n_steps=histogram_every_n_steps)
    say(f"[3/4] evaluating top-{TOP_K} recall per test interaction on the test split")
    hit_rate = retrieval_hit_rate(training.model, data)
    train_dir = os.path.join(os.path.abspath(run_dir), "train")
    say(f"[4/4] reading back the logs written to {train_dir}")
    train_run = events.read_run(train_dir)
    validation_dir = os.path.join(os.path.abspath(run_dir), "validation")
    alerts = train_run.alerts() + (events.read_run(validation_dir).alerts() if os.path.isdir(validation_dir) else [])
    return DemoResult(data, training, hit_rate, run_dir, train_run, alerts)


@dataclasses.dataclass
class ExplainResult:
    """What `run_explain` found: the trained ranking model's test RMSE and the attributions."""

    training: TrainResult
    rmse: float
    attribution: Any  # tfrs_diag.explain.Attribution


def run_explain(run_dir: str, *, method: str = "shapley", examples: int = 5, background: int = 50,
                data_dir: str | None = None, num_interactions: int | None = None, epochs: int = 2, seed: int = 0,
                write: bool = False, say=print) -> ExplainResult:
    """Trains the demo ranking model into ``run_dir`` and attributes a few test examples with ``method``.

    With ``write``, the attributions are written to ``run_dir`` too.
    """
    from tfrs_diag import explain, summary

    say(f"[1/3] loading data ({'MovieLens-100k from ' + data_dir if data_dir else 'synthetic'})")
    data = load_data(data_dir, num_interactions=None if data_dir else (num_interactions or 10000), seed=seed)
    say(f"[2/3] training the ranking model (features {', '.join(explain_features())}): {epochs} epoch(s)")
    training = train_ranking(data, run_dir, epochs=epochs, seed=seed, verbose=0)
    rmse = ranking_rmse(training.model, data.test)
    say(f"[3/3] explaining {examples} test example(s) with {method}, "
        f"{min(background, len(data.train['rating']))} background rows")
    n = min(examples, len(data.test["rating"]))
    if method == "permutation_importance":
        attribution = explain.explainer(method, training.model, target="rating").attribute(data.test)
    else:
        rows = {k: v[:background] for k, v in data.train.items()}
        attribution = explain.explainer(method, training.model, rows, label_key=("user_id", "item_id")).attribute(
            {k: v[:n] for k, v in data.test.items()})
    if write:
        explain.write_attribution(attribution, run_dir, training.steps, epoch=epochs - 1)
        summary.close_writer(run_dir)
    return ExplainResult(training, rmse, attribution)

"""The ``tfrs-diag`` command line, and the training routines the demo and examples share.

Usage::

    tfrs-diag demo [--data-dir DIR] [--logdir DIR] [--epochs N] [--seed N]
    tfrs-diag report LOGDIR [--fail-on never|info|warning|critical]
    tfrs-diag explain [--method NAME] [--examples N] [--data-dir DIR] [--logdir DIR]

``demo`` trains the two-tower retrieval model of ``examples/movielens_retrieval.py``
with every diagnostic tfrs_diag has, prints what they found and the ``tensorboard``
command that shows the logs.

Adding a subcommand (``report LOGDIR``, ``explain``): write ``_<name>_arguments(parser)``
and ``cmd_<name>(args) -> int`` and add one `Command` entry to `COMMANDS`. A handler
raises `UsageError` for bad input: `main` prints it as one line and returns 2.

The training routines (`load_data`, `train_retrieval`, `retrieval_hit_rate`,
`train_ranking`, `ranking_rmse`) live here so that the demo and the examples run the
same code; heavy imports (TensorFlow, TFRS) happen inside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

PROG = "tfrs-diag"
#: Hit rate cut-off of the retrieval evaluation.
TOP_K = 100


class UsageError(Exception):
    """Bad command-line input; its message names the argument and says what to pass."""


# ======================================================================= data and training


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


def _fit(model, train_ds, log_dir: str, *, epochs: int, every_n_steps: int, histogram_every_n_steps: int,
         verbose: int, extra_callbacks: Sequence[Any] = ()) -> TrainResult:
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
    history = model.fit(train_ds, epochs=epochs, verbose=2 if verbose else 0,
                        callbacks=[_mean_loss_callback(), gradients, *extra_callbacks, losses])
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
    return _fit(model, train_ds, log_dir, epochs=epochs, every_n_steps=every_n_steps,
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


def overfitting_report(monitor) -> list[str]:
    """A few lines on the in-epoch probes and the epoch-level gap of an `OverfittingMonitor`."""
    if monitor is None or not monitor.readings:
        return ["Overfitting monitor: no probe readings"]
    first, last = monitor.readings[0], monitor.readings[-1]
    lines = [f"probe loss, held-out vs training examples: {first['heldout']:.5g} vs {first['seen']:.5g} before "
             f"training, {last['heldout']:.5g} vs {last['seen']:.5g} at step {last['step']} "
             f"(gap {last['heldout'] - last['seen']:.4g})"]
    if monitor.best_epoch is not None:
        lines.append(f"best epoch by {monitor.monitor}: {monitor.best_epoch + 1} ({monitor.best_value:.5g}); "
                     f"the overfitting trend test needs {monitor.window} epochs")
    return lines


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
    return _fit(model, train_ds, log_dir, epochs=epochs, every_n_steps=every_n_steps,
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
    parser.add_argument("--num-interactions", type=_positive_int, help="size of the synthetic data (default 40000)")
    parser.add_argument("--logdir", default=logdir, help="TensorBoard log directory")
    parser.add_argument("--epochs", type=_positive_int, default=3)
    parser.add_argument("--batch-size", type=_positive_int, default=1024)
    parser.add_argument("--embedding-dim", type=_positive_int, default=embedding_dim)
    parser.add_argument("--every-n-steps", type=_positive_int, default=10, help="cadence of the gradient statistics")
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    args = parser.parse_args(argv)
    try:
        check_logdir(args.logdir)
        data = load_data(args.data_dir, num_interactions=args.num_interactions, seed=args.seed)
    except UsageError as e:
        parser.error(str(e))
    print(data.describe())
    return args, data


# ======================================================================= reading a run back


def _last(series: list[tuple[int, float]]) -> tuple[int, float]:
    return max(series, key=lambda sv: sv[0])


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    fmt = lambda cells: indent + "  ".join(  # noqa: E731
        str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(headers)] + [fmt(r) for r in rows]


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-2 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def format_alert(alert: dict) -> str:
    """One line per alert record (as `tfrs_diag.summary.RunData.alerts` returns them)."""
    where = f"step {alert.get('step')}" + (f", epoch {alert['epoch']}" if alert.get("epoch") is not None else "")
    status = "cleared" if alert.get("status") == "cleared" else str(alert.get("severity", "")).upper()
    return f"{status} {alert.get('kind')} ({alert.get('subject')}, {where}): {alert.get('message')}"


def gradient_report(run, table_rows: dict[str, int] | None = None) -> list[str]:
    """Text tables of one run's gradient diagnostics, from its event files.

    ``run`` is a `tfrs_diag.summary.RunData` (``read_run(<log_dir>/train)``);
    ``table_rows`` optionally maps embedding variables to their row counts.
    """
    prefix_layer, prefix_ratio, prefix_weight = "tfrs_diag/grad/layer_norm/", "tfrs_diag/grad/update_ratio/", \
        "tfrs_diag/grad/weight_norm/"
    layers = {t[len(prefix_layer):]: s for t, s in run.scalars.items() if t.startswith(prefix_layer)}
    if not layers:
        return ["Gradient health: no gradient statistics in this run (fewer steps than every_n_steps?)"]
    step = max(_last(s)[0] for s in layers.values())
    # A layer's update/weight ratio: ||dW|| / ||W|| over its variables (one for embeddings).
    ratios: dict[str, list[tuple[float, float]]] = {}
    for t, s in run.scalars.items():
        if t.startswith(prefix_ratio):
            var = t[len(prefix_ratio):]
            weight = run.scalars.get(prefix_weight + var)
            w = _last(weight)[1] if weight else 1.0
            ratios.setdefault(var.rsplit("/", 1)[0], []).append((_last(s)[1], w))
    rows = []
    for layer, series in sorted(layers.items()):
        parts = ratios.get(layer, [])
        ratio = (math.sqrt(sum((r * w) ** 2 for r, w in parts) / max(sum(w * w for _, w in parts), 1e-300))
                 if parts else float("nan"))
        rows.append((layer, _num(_last(series)[1]), _num(ratio) if parts else "-"))
    global_norm = run.scalars.get("tfrs_diag/grad/global_norm")
    if global_norm:
        rows.append(("(all layers: global norm)", _num(_last(global_norm)[1]), ""))
    lines = [f"Gradient health per layer (reading of step {step}):"]
    lines += _table(("layer", "grad norm", "update/weight"), rows)
    lines.append("  update/weight = ||w_after - w_before|| / ||w_before|| of one step (embeddings: rows it touched)")

    prefix_rows = "tfrs_diag/embed/unique_rows/"
    tables = sorted(t[len(prefix_rows):] for t in run.scalars if t.startswith(prefix_rows))
    if tables:
        rows = []
        for var in tables:
            def last(c):
                s = run.scalars.get(f"tfrs_diag/embed/{c}/{var}")
                return _last(s)[1] if s else float("nan")

            unique, lookups = last("unique_rows"), last("batch_rows")
            mean_unique = sum(v for _, v in run.scalars[prefix_rows + var]) / len(run.scalars[prefix_rows + var])
            size = (table_rows or {}).get(var)
            rows.append((var, f"{unique:.0f}" + (f" ({unique / size:.0%})" if size else ""),
                         f"{mean_unique:.0f}", f"{lookups:.0f}", _num(last("row_grad_norm_mean")),
                         _num(last("row_grad_norm_max")), _num(last("row_update_ratio"))))
        lines += ["", f"Embedding tables (reading of step {step}; rows = unique rows the step touched):"]
        lines += _table(("table", "rows", "rows (run mean)", "lookups", "mean row grad",
                         "max row grad", "update/weight"), rows)
    return lines


# ======================================================================= subcommands


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _say(message: str) -> None:
    print(message, flush=True)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="MovieLens-100k directory (u.data, u.item, u.user); default: synthetic data")
    p.add_argument("--logdir", metavar="DIR", default="demo_logs",
                   help="TensorBoard log directory; each demo adds a run demo-<time> in it (default: %(default)s)")
    p.add_argument("--epochs", metavar="N", type=_positive_int, default=3, help="epochs (default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=_non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--num-interactions", metavar="N", type=_positive_int,
                   help="size of the synthetic data set (default: 40000)")
    p.add_argument("--batch-size", metavar="N", type=_positive_int, default=1024,
                   help="batch size (default: %(default)s)")
    # Cadence of the diagnostics: suited to the short demo run; hidden, for tests.
    p.add_argument("--every-n-steps", type=_positive_int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--histogram-every-n-steps", type=_positive_int, default=50, help=argparse.SUPPRESS)


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


def _new_run_dir(logdir: str, prefix: str = "demo") -> str:
    """A fresh run directory ``<logdir>/<prefix>-<time>`` so repeated runs sit side by side."""
    check_logdir(logdir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run, n = os.path.join(logdir, f"{prefix}-{stamp}"), 1
    while os.path.exists(run):
        n += 1
        run = os.path.join(logdir, f"{prefix}-{stamp}-{n}")
    return run


def cmd_demo(args: argparse.Namespace) -> int:
    """Trains the retrieval example with every diagnostic and prints what they found."""
    from tfrs_diag import summary

    check_data_args(args.data_dir, args.num_interactions)
    run_dir = _new_run_dir(args.logdir)
    logdir = os.path.abspath(args.logdir)

    _say(f"[1/4] loading data ({'MovieLens-100k from ' + args.data_dir if args.data_dir else 'synthetic'})")
    data = load_data(args.data_dir, num_interactions=args.num_interactions, seed=args.seed)

    _say(f"[2/4] training the two-tower retrieval model: {args.epochs} epoch(s), batch {args.batch_size}, "
         f"gradient statistics every {args.every_n_steps} steps")
    result = train_retrieval(data, run_dir, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             every_n_steps=args.every_n_steps,
                             histogram_every_n_steps=args.histogram_every_n_steps)

    _say(f"[3/4] evaluating top-{TOP_K} hit rate on the test split")
    hit_rate = retrieval_hit_rate(result.model, data)

    train_dir = os.path.join(os.path.abspath(run_dir), "train")
    _say(f"[4/4] reading back the logs written to {train_dir}")
    run = summary.read_run(train_dir)
    table_rows = {t.name: t.shape[0] for t in result.gradients.capture.tracked if t.sparse}

    losses = " -> ".join(f"{v:.4g}" for v in result.history["mean_loss"])
    k = min(TOP_K, data.num_items)
    lines = ["", "== Data ==", data.describe(), "",
             "== Training ==",
             f"{result.steps} steps in {result.seconds:.1f} s; mean batch loss by epoch: {losses}",
             f"final loss: {result.final_loss:.4g} (last epoch's mean; in-batch softmax, summed over a "
             f"batch of {args.batch_size})",
             f"top-{k} hit rate on test: {hit_rate:.3f} (a random recommender: {k / data.num_items:.3f})",
             "", "== Gradients =="]
    lines += gradient_report(run, table_rows)
    if result.beyond_accuracy is not None and result.beyond_accuracy.history:
        epoch, evaluation = result.beyond_accuracy.history[-1]
        lines += ["", f"== Top-K evaluation on the test split (after epoch {epoch + 1}) =="]
        lines += str(evaluation).splitlines()
    if result.overfitting is not None:
        lines += ["", "== Overfitting monitor =="] + overfitting_report(result.overfitting)
    validation_dir = os.path.join(os.path.abspath(run_dir), "validation")
    alerts = run.alerts() + (summary.read_run(validation_dir).alerts() if os.path.isdir(validation_dir) else [])
    lines += ["", f"== Alerts ({len(alerts)}) =="]
    lines += [format_alert(a) for a in alerts] or ["no alerts"]
    lines += ["", "See the curves and histograms in TensorBoard:", f"  tensorboard --logdir {logdir}"]
    _say("\n".join(lines))
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory (every run under it is reported)")
    p.add_argument("--fail-on", choices=("never", "info", "warning", "critical"), default="never",
                   help="exit with 1 when an alert of this severity or worse is still firing (default: %(default)s)")


def cmd_report(args: argparse.Namespace) -> int:
    """Prints the alerts and tables of every run under LOGDIR (what the TensorBoard plugin shows)."""
    from tfrs_diag import report

    try:
        lines, alerts = report.report_lines(args.logdir)
    except FileNotFoundError:
        raise UsageError(f"LOGDIR: {args.logdir!r} is not a directory; pass the --logdir you trained with") from None
    if not lines:
        print(f"{PROG} report: error: no tfrs_diag data under {args.logdir!r}; add tfrs_diag callbacks with "
              "log_dir inside it", file=sys.stderr)
        return 1
    _say("\n".join(lines).lstrip("\n"))
    if args.fail_on != "never":
        bad = report.firing(alerts, args.fail_on)
        if bad:
            _say(f"\n{len(bad)} alert(s) of severity {args.fail_on} or worse still firing (--fail-on {args.fail_on})")
            return 1
    return 0


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    from tfrs_diag.explain import METHODS

    p.add_argument("--data-dir", metavar="DIR",
                   help="MovieLens-100k directory (u.data, u.item, u.user); default: synthetic data")
    p.add_argument("--num-interactions", metavar="N", type=_positive_int,
                   help="size of the synthetic data set (default: 10000)")
    p.add_argument("--method", choices=sorted(METHODS), default="shapley", help="attribution method (default: %(default)s)")
    p.add_argument("--examples", metavar="N", type=_positive_int, default=5,
                   help="test examples to explain (default: %(default)s)")
    p.add_argument("--background", metavar="N", type=_positive_int, default=50,
                   help="background rows from train (default: %(default)s)")
    p.add_argument("--epochs", metavar="N", type=_positive_int, default=2, help="epochs (default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=_non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--logdir", metavar="DIR",
                   help="also write the training logs and the attributions here (run explain-<time>)")


def cmd_explain(args: argparse.Namespace) -> int:
    """Trains the demo ranking model and prints the attributions of a few test examples."""
    import tempfile

    from tfrs_diag import explain, summary

    check_data_args(args.data_dir, args.num_interactions)
    _say(f"[1/3] loading data ({'MovieLens-100k from ' + args.data_dir if args.data_dir else 'synthetic'})")
    data = load_data(args.data_dir, num_interactions=None if args.data_dir else (args.num_interactions or 10000),
                     seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = _new_run_dir(args.logdir, prefix="explain") if args.logdir else scratch
        _say(f"[2/3] training the ranking model (features {', '.join(explain_features())}): {args.epochs} epoch(s)")
        result = train_ranking(data, run_dir, epochs=args.epochs, seed=args.seed, verbose=0)
        rmse = ranking_rmse(result.model, data.test)
        _say(f"[3/3] explaining {args.examples} test example(s) with {args.method}, "
             f"{min(args.background, len(data.train['rating']))} background rows")
        n = min(args.examples, len(data.test["rating"]))
        examples = {k: v[:n] for k, v in data.test.items()}
        background = {k: v[:args.background] for k, v in data.train.items()}
        if args.method == "permutation_importance":
            attribution = explain.explainer(args.method, result.model, target="rating").attribute(data.test)
        else:
            attribution = explain.explainer(args.method, result.model, background,
                                            label_key=("user_id", "item_id")).attribute(examples)
        if args.logdir:
            explain.write_attribution(attribution, run_dir, result.steps, epoch=args.epochs - 1)
            summary.close_writer(run_dir)
    lines = ["", f"test RMSE {rmse:.3f} after {result.steps} steps ({result.seconds:.1f} s)", "",
             attribution.table()]
    if attribution.method in ("shapley", "integrated_gradients"):
        gap = abs(attribution.values.sum(1) + attribution.base_value - attribution.outputs).max()
        lines.append(f"values + base - output: max |gap| {gap:.1e}")
    lines.append("example = user_id item_id; values in rating units (the model predicts ratings 1-5)"
                 if args.method != "permutation_importance" else "values = RMSE increase when the group is shuffled")
    if args.logdir:
        lines += ["", "See them in TensorBoard:", f"  tensorboard --logdir {os.path.abspath(args.logdir)}"]
    _say("\n".join(lines))
    return 0


def explain_features() -> list[str]:
    """The demo ranking model's feature groups (see `train_ranking`)."""
    return ["user_id", "item_id", "user_gender", "user_age_bucket", "item_category"]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: one-line help, argument set-up and the handler (returns the exit code)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "demo": Command("train a small two-tower model with every diagnostic and show what they found",
                    _demo_arguments, cmd_demo),
    "report": Command("print the alerts and tables of every run under a log directory (no browser needed)",
                      _report_arguments, cmd_report),
    "explain": Command("train the demo ranking model and print feature attributions of a few test examples",
                       _explain_arguments, cmd_explain),
}


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments in one line (with where to find help) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Training diagnostics for TensorFlow Recommenders.")
    from tfrs_diag import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help[0].upper() + command.help[1:] + ".")
        command.arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfrs-diag`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, bad arguments
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

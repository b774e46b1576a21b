"""What a new user sees: short epoch logs, labelled figures, a quiet console, progress on long work."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfrs_diag
from tfrs_diag import _startup, datasets, explain, models, summary
from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor
from tfrs_diag.views import report

import tutorial_models as T


def test_the_tfrs_quickstart_with_every_callback_at_its_defaults_logs_a_short_epoch_line(tmp_path):
    data = T.movielens_like(num_ratings=1200)
    tf.keras.utils.set_random_seed(0)
    model = T.quickstart(data)
    train, test = data.split()
    ratings = T.MovieLensLike.dataset({k: train[k] for k in ("user_id", "movie_title")}).batch(128)
    test_ds = T.MovieLensLike.dataset({k: test[k] for k in ("user_id", "movie_title")}).batch(128)
    gradients = GradientStatistics(str(tmp_path), verbose=0)
    monitor = OverfittingMonitor(str(tmp_path), validation_data=test_ds, verbose=0)
    beyond = BeyondAccuracy(str(tmp_path), test, data.movies, k=(10, 50), query_key="user_id", item_key="movie_title",
                            user_group_keys=("user_gender",), verbose=0)
    history = model.fit(ratings, epochs=1, verbose=0, callbacks=[gradients, monitor, beyond])
    keys = set(history.history)
    ours = keys - {"loss", "regularization_loss", "total_loss", "factorized_top_k/top_1_categorical_accuracy",
                   "factorized_top_k/top_5_categorical_accuracy", "factorized_top_k/top_10_categorical_accuracy",
                   "factorized_top_k/top_50_categorical_accuracy", "factorized_top_k/top_100_categorical_accuracy"}
    # grad_norm; the probe loss and the validation loss; the evaluation's headline.
    assert ours == {"grad_norm", "probe_heldout_loss", "val_loss", "val_recall_at_10", "val_ndcg_at_10",
                    "val_coverage_at_10", "val_user_gender/ndcg_at_10_gap"}
    # TensorBoard still has every metric of the evaluation.
    written = summary.read_run(str(tmp_path / "validation")).scalars
    assert len(written) > 3 * len(ours)


def test_evaluation_results_say_what_they_average_over():
    data = datasets.synthetic(num_users=40, num_items=60, num_interactions=800, seed=2)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=4)
    by_user = tfrs_diag.evaluate(model, data.items["item_id"], data.test, k=5, query_key="user_id",
                                 user_group_keys=("user_group",), verbose=0)
    assert by_user.query_key == "user_id"
    assert by_user.averaged_over == f"{by_user.queries} queries (one per user_id)"
    assert by_user.queries == len(np.unique(data.test["user_id"]))
    text = str(by_user)
    assert text.splitlines()[0].startswith(f"means over {by_user.queries} queries (one per user_id)")
    assert "count = queries, the rest means over them" in text
    by_row = tfrs_diag.evaluate(model.user_model, data.items["item_id"], data.test, k=5, query_features="user_id",
                                candidate_model=model.item_model, item_key="item_id", verbose=0)
    assert by_row.query_key is None and by_row.queries == len(data.test["user_id"])
    assert by_row.averaged_over.endswith("(one per test row)")


def test_the_report_labels_its_tables_with_what_they_average_over(tmp_path):
    data = datasets.synthetic(num_users=40, num_items=60, num_interactions=800, seed=2)
    model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=4)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    cb = BeyondAccuracy(str(tmp_path), data.test, data.items["item_id"], k=(5,), query_key="user_id",
                        item_key="item_id", user_group_keys=("user_group",), verbose=0)
    model.fit(models.retrieval_dataset(data.train, 256), epochs=1, verbose=0, callbacks=[cb])
    summary.close_writer(str(tmp_path), "validation")
    lines, _ = report.report_lines(str(tmp_path))
    text = "\n".join(lines)
    queries = len(np.unique(data.test["user_id"]))
    assert f"means over them; {queries} queries, one per user_id" in text
    assert "Top-K accuracy (each a mean over the evaluation's queries)" in text
    # An epoch index is not called a step.
    assert all(" at" in line or "step" in line for line in lines if line.startswith("  metric"))


def _console_command() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("tfrs-diag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tfrs_diag.cli"]


def _small_logdir(path) -> str:
    log = summary.AlertLog(str(path), run="train", echo=False)
    log.fire(summary.Alert("exploding_gradients", "warning", 12, 0, "tower/dense", "It exploded."))
    summary.close_writer(str(path), "train")
    return str(path)


@pytest.mark.parametrize("user_level", [None, "0"], ids=["quiet by default", "the user's TF_CPP_MIN_LOG_LEVEL"])
def test_the_console_command_prints_no_tensorflow_start_up_lines_unless_the_user_asks(tmp_path, user_level):
    logdir = _small_logdir(tmp_path / "logs")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    proc = subprocess.run(_console_command() + ["report", logdir], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("=== run train ===") and "exploding_gradients" in proc.stdout
    noise = [line for line in proc.stderr.splitlines() if line.strip()]
    if user_level is None:
        assert noise == []
    else:  # what TensorFlow prints at this level is the user's choice: nothing is held back
        assert any("I0000" in line or "absl" in line or "cuda" in line.lower() for line in noise), noise


def test_start_up_noise_is_told_from_a_real_error():
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1796188748.509326   30127 port.cc:153] oneDNN custom operations are on.\n"
             "E0000 00:00:1796188752.321667   30127 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
             "appropriate compiler flags.\n")
    error = "ImportError: libcudnn.so.9: cannot open shared object file\n"
    assert _startup.not_noise(noise) == ""
    assert _startup.not_noise(noise + error) == error


def _two_tower(data):
    tf.keras.utils.set_random_seed(0)
    return models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=4)


def test_evaluate_shows_progress_over_many_query_batches_and_is_silent_with_verbose_0(capsys):
    data = datasets.synthetic(num_users=60, num_items=50, num_interactions=1200, seed=4)
    model = _two_tower(data)
    kw = dict(k=5, query_key="user_id", batch_size=8)
    quiet = tfrs_diag.evaluate(model, data.items["item_id"], data.test, verbose=0, **kw)
    assert capsys.readouterr().out == ""
    loud = tfrs_diag.evaluate(model, data.items["item_id"], data.test, **kw)
    out = capsys.readouterr().out
    batches = -(-quiet.queries // 8)
    assert f"{batches}/{batches}" in out and "query batch" in out
    assert loud.metrics == quiet.metrics
    tfrs_diag.evaluate(model, data.items["item_id"], data.test, k=5, query_key="user_id")  # one batch: no bar
    assert capsys.readouterr().out == ""


def test_explainers_show_progress_over_chunks_of_examples_and_are_silent_with_verbose_0(capsys):
    data = datasets.synthetic(num_users=30, num_items=40, num_interactions=600, seed=5)
    model = models.RankingModel(data.train)
    rows = {k: v[:20] for k, v in data.train.items()}
    examples = {k: v[:12] for k, v in data.test.items()}
    quiet = explain.Shapley(model, rows, max_batch_rows=64, verbose=0).attribute(examples)
    assert capsys.readouterr().out == ""
    loud = explain.Shapley(model, rows, max_batch_rows=64).attribute(examples)
    out = capsys.readouterr().out
    assert "example chunk" in out
    np.testing.assert_allclose(loud.values, quiet.values)
    explain.Occlusion(model, rows, max_batch_rows=64).attribute(examples)
    assert "example chunk" in capsys.readouterr().out


def test_the_report_shows_which_run_it_reads_when_asked(tmp_path, capsys):
    for name in ("a", "b", "c"):
        _small_logdir(tmp_path / name)
    lines, alerts = report.report_lines(str(tmp_path), verbose=1)
    err = capsys.readouterr().err
    assert "reading run 3/3" in err and "read 3 runs" in err and len(alerts) == 3
    report.report_lines(str(tmp_path))
    assert capsys.readouterr().err == ""

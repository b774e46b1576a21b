"""`tfrs-diag demo` and the two examples, end to end on small synthetic data."""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfrs_diag import cli, recipes
from tfrs_diag.views import report
from tfrs_diag.summary import RunData, read_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_example(name: str):
    """Imports examples/<name>.py (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- demo


def test_demo_writes_gradient_logs_and_prints_tensorboard_command(tmp_path, capsys):
    n, batch, epochs = 3000, 128, 2
    logdir = tmp_path / "logs"
    code = cli.main(["demo", "--logdir", str(logdir), "--num-interactions", str(n), "--batch-size", str(batch),
                     "--epochs", str(epochs), "--histogram-every-n-steps", "20"])
    out = capsys.readouterr().out
    assert code == 0

    runs = sorted(logdir.glob("demo-*/train"))
    assert len(runs) == 1, runs
    run = read_run(str(runs[0]))
    # Statistics are written at every multiple of the demo's cadence (10) the run reached.
    n_train = len(recipes.load_data(None, num_interactions=n).train["user_id"])
    total_steps = epochs * math.ceil(n_train / batch)
    steps = [s for s, _ in run.scalars["tfrs_diag/grad/global_norm"]]
    assert steps == list(range(10, total_steps + 1, 10)) and len(steps) >= 3
    assert all(math.isfinite(v) and v > 0 for _, v in run.scalars["tfrs_diag/grad/global_norm"])
    # Both towers' embedding tables, and a gradient histogram at the histogram cadence.
    for tower in ("user_model", "item_model"):
        var = f"{tower}/{tower}_embedding/embeddings"
        assert [s for s, _ in run.scalars[f"tfrs_diag/embed/unique_rows/{var}"]] == steps
        assert [s for s, _ in run.histograms[f"tfrs_diag/grad/values/{var}"]] == [20]
        assert f"{tower}/{tower}_embedding" in out  # the per-layer table names it

    # One short line per epoch (not Keras' line of every log key), and figures that say what they average over.
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == epochs and all(len(line) <= 200 for line in epoch_lines), epoch_lines
    assert "ndcg@10" in epoch_lines[-1] and "probe loss/example" in epoch_lines[-1]
    assert "recall per test interaction" in out and "per example" in out
    assert "means over" in out and "queries (one per user_id)" in out
    # Progress first, then the findings, the tensorboard command last.
    assert out.index("[1/4] loading data") < out.index("[2/4] training") < out.index("== Gradients ==")
    assert "synthetic(seed=0)" in out and "final loss:" in out and "== Alerts" in out
    assert out.rstrip().splitlines()[-1].strip() == f"tensorboard --logdir {logdir.resolve()}"


def test_demo_bad_data_dir_names_the_argument(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    code = cli.main(["demo", "--data-dir", str(missing), "--logdir", str(tmp_path / "logs")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "--data-dir" in captured.err and str(missing) in captured.err
    assert captured.out == ""
    assert not (tmp_path / "logs").exists()  # nothing written before the input is checked


def test_demo_data_dir_without_movielens_files(tmp_path, capsys):
    code = cli.main(["demo", "--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--data-dir" in err and "u.data" in err


@pytest.mark.parametrize("argv, named", [
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--num-interactions", "many"], "--num-interactions"),
    (["demo", "--data-dir", ".", "--num-interactions", "100"], "--num-interactions"),
    (["nonsense"], "COMMAND"),
    ([], "COMMAND"),
])
def test_bad_arguments_exit_2_with_one_line(argv, named, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "error:" in err and named in err


@pytest.mark.parametrize("argv, named", [(["--epochs", "0"], "--epochs"), (["--embedding-dim", "-4"], "--embedding-dim"),
                                         (["--seed", "-1"], "--seed")])
def test_example_bad_arguments_exit_2_naming_the_option(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipes.example_setup(argv + ["--logdir", str(tmp_path)], "an example", logdir="unused", embedding_dim=8)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_demo_unwritable_logdir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = cli.main(["demo", "--logdir", str(blocker / "logs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--logdir" in err


def test_help_lists_demo_and_its_options(capsys):
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--data-dir", "--logdir", "--epochs", "--seed"):
        assert option in out


def test_console_script_reports_bad_data_dir_without_traceback(tmp_path):
    script = pathlib.Path(sys.executable).with_name("tfrs-diag")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tfrs_diag.cli"]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(command + ["demo", "--data-dir", str(tmp_path / "missing")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # TensorFlow may print its own start-up lines to stderr; ours is exactly one.
    ours = [line for line in proc.stderr.splitlines() if line.startswith("tfrs-diag")]
    assert len(ours) == 1 and "--data-dir" in ours[0]
    assert not (tmp_path / "demo_logs").exists()


# ---------------------------------------------------------------- report helpers (no training)


def test_gradient_report_combines_a_layers_variables():
    # A dense layer with kernel (||w||=3, ratio 0.1) and bias (||w||=4, ratio 0.2):
    # ||dW|| = sqrt(0.3^2 + 0.8^2), ||W|| = 5.
    g = "tfrs_diag/grad/"
    scalars = {
        g + "layer_norm/mlp/dense": [(10, 2.0), (20, 1.5)],
        g + "global_norm": [(10, 2.0), (20, 1.5)],
        g + "update_ratio/mlp/dense/kernel": [(20, 0.1)],
        g + "weight_norm/mlp/dense/kernel": [(20, 3.0)],
        g + "update_ratio/mlp/dense/bias": [(20, 0.2)],
        g + "weight_norm/mlp/dense/bias": [(20, 4.0)],
    }
    text = "\n".join(report.gradient_report(RunData(scalars, {}, {})))
    expected = math.sqrt(0.3**2 + 0.8**2) / 5.0
    row = next(line for line in text.splitlines() if line.strip().startswith("mlp/dense"))
    assert row.split()[1:] == ["1.5", f"{expected:.3g}"]
    assert "step 20" in text and "Embedding tables" not in text


def test_gradient_report_without_statistics_says_so():
    text = report.gradient_report(RunData({}, {}, {}))
    assert len(text) == 1 and "no gradient statistics" in text[0]


# ---------------------------------------------------------------- examples


def test_retrieval_example_beats_a_random_recommender(tmp_path, capsys):
    example = _load_example("movielens_retrieval")
    metrics = example.main(["--num-interactions", "6000", "--batch-size", "256", "--epochs", "3",
                            "--logdir", str(tmp_path / "retrieval")])
    out = capsys.readouterr().out
    num_items = recipes.synthetic_sizes(6000)[1]
    assert metrics["random_hit_rate@100"] == pytest.approx(100 / num_items)
    # Observed 0.56-0.59 over seeds 0-2 against 0.44 for random.
    assert metrics["hit_rate@100"] > 1.15 * metrics["random_hit_rate@100"]
    assert metrics["hit_rate@100"] <= 1.0 and np.isfinite(metrics["final_loss"])
    assert metrics["alerts"] == []
    assert f"tensorboard --logdir {(tmp_path / 'retrieval').resolve()}" in out
    assert "tfrs_diag/grad/global_norm" in read_run(str(tmp_path / "retrieval" / "train")).scalars


@pytest.mark.slow
def test_ranking_example_beats_predicting_the_mean(tmp_path, capsys):
    example = _load_example("movielens_ranking")
    metrics = example.main(["--num-interactions", "6000", "--batch-size", "256", "--epochs", "3",
                            "--logdir", str(tmp_path / "ranking")])
    out = capsys.readouterr().out
    # Ratings are 1..5 with std about 1; observed 0.88-0.94 against a mean-rating RMSE of 1.02-1.05.
    assert 0.9 < metrics["mean_rating_rmse"] < 1.2
    assert 0.3 < metrics["test_rmse"] < 0.95 * metrics["mean_rating_rmse"]
    assert "test RMSE" in out and "tensorboard --logdir" in out
    run = read_run(str(tmp_path / "ranking" / "train"))
    layers = [t for t in run.scalars if t.startswith("tfrs_diag/grad/layer_norm/")]
    # Five feature embeddings and the MLP each have their own gradient norm.
    for feature in ("user_id", "item_id", "user_gender", "user_age_bucket", "item_category"):
        assert any(f"{feature}_embedder" in t for t in layers), layers
    assert any("scorer" in t for t in layers), layers


@pytest.mark.movielens
def test_movielens_carries_every_feature_the_examples_use(movielens_path):
    data = recipes.load_data(str(movielens_path))
    for key in ("user_id", "item_id", "user_gender", "user_age_bucket", "item_category", "rating"):
        assert key in data.train and key in data.test
    assert data.num_items == 1682 and data.train["user_gender"].dtype.kind == "U"
    assert data.train["user_age_bucket"].dtype.kind == "i" and data.train["item_category"].dtype.kind == "i"


def test_examples_have_a_docstring_that_says_how_to_run_them():
    for name in ("movielens_retrieval", "movielens_ranking"):
        doc = _load_example(name).__doc__
        assert f"python examples/{name}.py" in doc and "--data-dir" in doc and "tensorboard --logdir" in doc


"""tfrs_diag.tfx without TFX: TFRecord reading, blessing rules, the artifact evaluation, run_fn callbacks.

The evaluation is checked against `tfrs_diag.evaluate` on the in-memory model: saving the
towers, writing the data as GZIP TFRecords of `tf.Example` and reading them back must not
change a single metric. The blessing is checked on a planted regression: an untrained
model against the trained one as baseline.
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import tutorial_models as T
import tfrs_diag
from tfrs_diag import summary
from tfrs_diag.tfx import (check_thresholds, diagnostic_callbacks, evaluate_artifacts, parse_thresholds,
                           read_examples, save_towers, write_examples)
from tfrs_diag.tfx.artifacts import EVAL_RUN, METRICS_FILE


@pytest.fixture(scope="module")
def data():
    return T.movielens_like(num_ratings=1500)


def _trained(data, epochs):
    tf.keras.utils.set_random_seed(0)
    model = T.quickstart(data)
    train, _ = data.split()
    ds = T.MovieLensLike.dataset({k: train[k] for k in ("user_id", "movie_title")}).batch(128)
    if epochs:
        model.fit(ds, epochs=epochs, verbose=0)
    else:  # build the towers' weights, as fit would
        model.user_model(train["user_id"][:2])
        model.movie_model(train["movie_title"][:2])
    return model


@pytest.fixture(scope="module")
def artifacts(data, tmp_path_factory):
    """Examples written as TFX writes them; a trained model's and an untrained model's towers saved."""
    root = tmp_path_factory.mktemp("tfx")
    train, test = data.split()
    for split, rows in (("train", train), ("eval", test)):
        write_examples(rows, str(root / "examples"), split)
    tf.keras.backend.clear_session()
    good = _trained(data, epochs=5)
    save_towers(good.user_model, good.movie_model, str(root / "good" / "Format-Serving"))
    bad = _trained(data, epochs=0)
    save_towers(bad.user_model, bad.movie_model, str(root / "bad"))
    return root, good, train, test


def test_read_examples_returns_the_written_columns_with_their_types(artifacts):
    root, _, train, _ = artifacts
    back = read_examples(str(root / "examples"), ["user_id", "user_rating", "timestamp"], "train")
    assert back["user_id"].tolist() == train["user_id"].tolist()
    np.testing.assert_allclose(back["user_rating"], train["user_rating"])
    assert back["timestamp"].dtype == np.int64 and back["timestamp"].tolist() == train["timestamp"].tolist()
    with pytest.raises(ValueError, match="feature 'userid' is not in the examples.*user_id"):
        read_examples(str(root / "examples"), ["userid"], "train")
    with pytest.raises(ValueError, match="split='test'.*splits are \\['eval', 'train'\\]"):
        read_examples(str(root / "examples"), ["user_id"], "test")


@pytest.mark.slow
def test_artifact_metrics_equal_evaluate_on_the_model_in_memory(artifacts, tmp_path):
    root, good, train, test = artifacts
    out = evaluate_artifacts(str(root / "good"), str(root / "examples"), str(tmp_path), query_key="user_id",
                             item_key="movie_title", k="5,20", user_group_keys="user_gender",
                             thresholds="ndcg_at_5 >= 0.01")
    # The reference: the catalog is every item of train and eval, popularity its share of train rows.
    items = np.unique(np.concatenate([train["movie_title"], test["movie_title"]]))
    popularity = np.array([(train["movie_title"] == i).sum() for i in items]) / len(train["movie_title"])
    ref = tfrs_diag.evaluate(good, items, {k: test[k] for k in ("user_id", "movie_title", "user_gender")},
                             (5, 20), query_key="user_id", item_key="movie_title",
                             user_group_keys=("user_gender",), item_popularity=popularity, verbose=0)
    assert set(out.result.metrics) == set(ref.metrics)
    for name, value in ref.metrics.items():
        assert out.result.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert [r["count"] for r in out.result.tables["user_gender"]] == [r["count"] for r in ref.tables["user_gender"]]
    saved = json.loads((tmp_path / METRICS_FILE).read_text())
    assert saved["blessed"] is True and saved["result"]["metrics"]["ndcg_at_5"] == pytest.approx(ref["ndcg_at_5"])
    # The TensorBoard run holds the same numbers under the schema's tags.
    scalars = summary.read_run(str(tmp_path / EVAL_RUN)).scalars
    assert scalars["tfrs_diag/rank/ndcg_at_5"][-1][1] == pytest.approx(ref["ndcg_at_5"], rel=1e-5)


@pytest.mark.slow
def test_a_planted_regression_against_the_baseline_is_not_blessed(artifacts, tmp_path):
    root, *_ = artifacts
    common = dict(query_key="user_id", item_key="movie_title", k="10")
    rules = "ndcg_at_10 >= 0.0; change(ndcg_at_10) >= -0.01"
    # The trained model against the untrained one as baseline: blessed.
    up = evaluate_artifacts(str(root / "good"), str(root / "examples"), str(tmp_path / "up"),
                            baseline_model_uri=str(root / "bad"), thresholds=rules, **common)
    assert up.blessed and up.checks[1].value > 0.01
    # The untrained model against the trained one: its NDCG fell, the change rule fails.
    down = evaluate_artifacts(str(root / "bad"), str(root / "examples"), str(tmp_path / "down"),
                              baseline_model_uri=str(root / "good"), thresholds=rules, **common)
    assert not down.blessed and [c.passed for c in down.checks] == [True, False]
    assert down.checks[1].value == pytest.approx(down.result["ndcg_at_10"] - down.baseline["ndcg_at_10"])
    assert os.path.isdir(tmp_path / "down" / "baseline")


def test_threshold_rules_fail_closed_on_unknown_metrics_and_skip_change_without_a_baseline():
    checks = check_thresholds("ndgc_at_10 >= 0.1; change(gini_at_10) <= 0.02; gini_at_10 <= 0.5",
                              {"ndcg_at_10": 0.3, "gini_at_10": 0.6})
    assert [c.passed for c in checks] == [False, None, False]
    assert "computed: gini_at_10, ndcg_at_10" in checks[0].note
    with pytest.raises(ValueError, match="thresholds: cannot read the rule 'ndcg_at_10 > 0.1'"):
        parse_thresholds("ndcg_at_10 > 0.1")


@pytest.mark.slow
def test_diagnostic_callbacks_write_under_model_run_dir_under_mirrored_strategy(data, tmp_path, mirrored_strategy):
    train, _ = data.split()
    ds = T.MovieLensLike.dataset({k: train[k] for k in ("user_id", "movie_title")}).batch(64)
    fn_args = types.SimpleNamespace(model_run_dir=str(tmp_path / "run"), custom_config={
        "tfrs_diag": {"gradients": {"every_n_steps": 2, "verbose": 0}, "tensorboard": False}})
    with mirrored_strategy.scope():
        model = T.quickstart(data)
    callbacks = diagnostic_callbacks(fn_args)
    assert [type(c).__name__ for c in callbacks] == ["GradientStatistics"]
    model.fit(ds.take(4), epochs=1, verbose=0, callbacks=callbacks)
    scalars = summary.read_run(str(tmp_path / "run" / "train")).scalars
    assert [s for s, _ in scalars["tfrs_diag/grad/global_norm"]] == [2, 4]
    with pytest.raises(ValueError, match="unknown sections \\['gradient'\\]"):
        diagnostic_callbacks(types.SimpleNamespace(model_run_dir=str(tmp_path), custom_config={
            "tfrs_diag": {"gradient": {}}}))


def test_importing_tfrs_diag_and_its_tfx_helpers_never_imports_tfx():
    # A fresh interpreter: in the TFX leg TFX is installed, and only RecommenderEvaluator may load it.
    code = "import sys, tfrs_diag, tfrs_diag.tfx; print(sorted(m for m in sys.modules if m.split('.')[0] == 'tfx'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

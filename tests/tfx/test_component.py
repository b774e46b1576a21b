"""RecommenderEvaluator run by TFX (LocalDagRunner, SQLite metadata) on a tiny tutorial model.

The model's towers come in through an Importer, the examples through ImportExampleGen
(GZIP TFRecords of tf.Example, as ExampleGen writes them); the component's metrics must
equal `tfrs_diag.evaluate` on the same model in memory and the same data, and its
blessing must follow the thresholds.
"""

import json
import os

import numpy as np
import pytest

tfx = pytest.importorskip("tfx.v1", reason="needs TFX: make test-tfx runs these in .venv-tfx")

import tensorflow as tf  # noqa: E402

import tutorial_models as T  # noqa: E402
import tfrs_diag  # noqa: E402
from tfrs_diag.tfx import RecommenderEvaluator, save_towers, write_examples  # noqa: E402


def _pipeline(root, examples_dir, model_dir, thresholds, name):
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_dir, input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="train", pattern="Split-train/*"),
            tfx.proto.Input.Split(name="eval", pattern="Split-eval/*")]))
    model = tfx.dsl.Importer(source_uri=model_dir, artifact_type=tfx.types.standard_artifacts.Model).with_id("model")
    evaluator = RecommenderEvaluator(model=model.outputs["result"], examples=example_gen.outputs["examples"],
                                     query_key="user_id", item_key="movie_title", k="5,20",
                                     user_group_keys="user_gender", thresholds=thresholds)
    return tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=os.path.join(root, "pipeline"),
        components=[example_gen, model, evaluator], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.sqlite")),
        beam_pipeline_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])


def _outputs(root, name):
    folder = os.path.join(root, "pipeline", "RecommenderEvaluator", name)
    (run,) = os.listdir(folder)
    return os.path.join(folder, run)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("component")
    data = T.movielens_like(num_ratings=1200)
    train, test = data.split()
    for split, rows in (("train", train), ("eval", test)):
        write_examples(rows, str(root / "examples"), split)
    tf.keras.utils.set_random_seed(0)
    model = T.quickstart(data)
    model.fit(T.MovieLensLike.dataset({k: train[k] for k in ("user_id", "movie_title")}).batch(128),
              epochs=3, verbose=0)
    save_towers(model.user_model, model.movie_model, str(root / "model"))
    return root, model, train, test


@pytest.mark.parametrize("rule, blessed", [("ndcg_at_5 >= 0.0", True), ("ndcg_at_5 >= 0.99", False)])
def test_component_metrics_equal_evaluate_and_its_blessing_follows_the_thresholds(setup, rule, blessed, tmp_path):
    root, model, train, test = setup
    tfx.orchestration.LocalDagRunner().run(
        _pipeline(str(tmp_path), str(root / "examples"), str(root / "model"), rule, f"c{int(blessed)}"))
    with open(os.path.join(_outputs(str(tmp_path), "evaluation"), "tfrs_diag_metrics.json")) as f:
        saved = json.load(f)
    items = np.unique(np.concatenate([train["movie_title"], test["movie_title"]]))
    popularity = np.array([(train["movie_title"] == i).sum() for i in items]) / len(train["movie_title"])
    ref = tfrs_diag.evaluate(model, items, {k: test[k] for k in ("user_id", "movie_title", "user_gender")},
                             (5, 20), query_key="user_id", item_key="movie_title",
                             user_group_keys=("user_gender",), item_popularity=popularity, verbose=0)
    assert set(saved["result"]["metrics"]) == set(ref.metrics)
    for name, value in ref.metrics.items():
        assert saved["result"]["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    blessing = _outputs(str(tmp_path), "blessing")
    assert sorted(os.listdir(blessing)) == ["BLESSED" if blessed else "NOT_BLESSED"]
    assert saved["blessed"] is blessed and saved["checks"][0]["value"] == pytest.approx(ref["ndcg_at_5"], rel=1e-5)

"""A TFX pipeline with tfrs_diag: ExampleGen -> Trainer (TFRS two-tower, our callbacks) ->
RecommenderEvaluator -> Pusher gated on its blessing.

Needs the TFX stack (``make test-tfx`` builds it in .venv-tfx; constraints-tfx.txt pins it):

    .venv-tfx/bin/python examples/tfx_pipeline.py                      # synthetic data
    .venv-tfx/bin/python examples/tfx_pipeline.py --data-dir path/to/ml-100k
    tensorboard --logdir <the evaluation artifact printed at the end>

It writes the data as CSV files, runs the pipeline with ``LocalDagRunner`` and SQLite
metadata under ``--root`` (a new temporary folder by default) and prints where each
artifact is and whether the model was blessed and pushed. Run it twice with the same
``--root`` and the second run compares against the first run's blessed model (a Resolver
with ``LatestBlessedModelStrategy``), so ``change(...)`` rules apply: ``--learning-rate
1e-4`` plants a regression that ``change(ndcg_at_10) >= -0.01`` refuses.

This file is also the Trainer's module file: TFX calls its `run_fn`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2: set before TensorFlow loads

#: Features the CSV files hold; ids get a letter so that CsvExampleGen keeps them strings.
FEATURES = ("user_id", "item_id", "user_group", "item_category")
DEFAULT_THRESHOLDS = "ndcg_at_10 >= 0.02; change(ndcg_at_10) >= -0.01; change(exposure_gini_at_10) <= 0.02"


# ---------------------------------------------------------------- the Trainer's run_fn

def _split_dir(file_patterns) -> str:
    return os.path.dirname(file_patterns[0])


def run_fn(fn_args) -> None:
    """The Trainer's entry point: a TFRS two-tower with tfrs_diag's callbacks, towers saved."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from tfrs_diag import models  # noqa: PLC0415
    from tfrs_diag.tfx import diagnostic_callbacks, read_examples, save_towers  # noqa: PLC0415

    config = fn_args.custom_config or {}
    train = read_examples(_split_dir(fn_args.train_files), ["user_id", "item_id"])
    test = read_examples(_split_dir(fn_args.eval_files), ["user_id", "item_id", "user_group"])
    users = np.unique(np.concatenate([train["user_id"], test["user_id"]]))
    items = np.unique(np.concatenate([train["item_id"], test["item_id"]]))
    tf.keras.utils.set_random_seed(int(config.get("seed", 0)))
    strategy = tf.distribute.MirroredStrategy()  # as the TFX examples train
    with strategy.scope():
        model = models.TwoTowerModel(users, items, embedding_dim=int(config.get("embedding_dim", 32)))
        model.compile(optimizer=tf.keras.optimizers.Adagrad(float(config.get("learning_rate", 0.1))))
    batch = int(config.get("batch_size", 256))
    train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train["user_id"]), seed=0).batch(batch)
    eval_ds = tf.data.Dataset.from_tensor_slices({k: test[k] for k in ("user_id", "item_id")}).batch(batch)
    callbacks = diagnostic_callbacks(fn_args, validation_data=eval_ds, eval_data=test, candidates=items)
    model.fit(train_ds, epochs=int(config.get("epochs", 3)), validation_data=eval_ds, callbacks=callbacks,
              verbose=2)
    save_towers(model.user_model, model.item_model, fn_args.serving_model_dir)


# ---------------------------------------------------------------- the data, as files

def write_csv(data, folder: str) -> str:
    """Writes ``data.train``/``data.test`` as ``folder/train/data.csv`` and ``folder/eval/data.csv``."""
    for split, rows in (("train", data.train), ("eval", data.test)):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        with open(os.path.join(folder, split, "data.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FEATURES)
            for u, i, g, c in zip(rows["user_id"], rows["item_id"], rows["user_group"], rows["item_category"]):
                writer.writerow([f"u{u}", f"i{i}", int(g), int(c)])
    return folder


# ---------------------------------------------------------------- the pipeline

def create_pipeline(root: str, data_root: str, *, thresholds: str, epochs: int = 3, learning_rate: float = 0.1,
                    k: str = "10,50", enable_cache: bool = True):
    """The pipeline: CsvExampleGen, Trainer, a Resolver for the latest blessed model,
    RecommenderEvaluator and a Pusher gated on its blessing."""
    from tfx import v1 as tfx  # noqa: PLC0415

    from tfrs_diag.tfx import RecommenderEvaluator  # noqa: PLC0415

    splits = tfx.proto.Input(splits=[tfx.proto.Input.Split(name="train", pattern="train/*"),
                                     tfx.proto.Input.Split(name="eval", pattern="eval/*")])
    example_gen = tfx.components.CsvExampleGen(input_base=data_root, input_config=splits)
    trainer = tfx.components.Trainer(
        module_file=os.path.abspath(__file__), examples=example_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(num_steps=0), eval_args=tfx.proto.EvalArgs(num_steps=0),
        custom_config={"epochs": epochs, "learning_rate": learning_rate,
                       "tfrs_diag": {"gradients": {"verbose": 0},
                                     "overfitting": {"verbose": 0},
                                     "beyond_accuracy": {"k": (10,), "user_group_keys": ["user_group"],
                                                         "verbose": 0}}})
    baseline = tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                                model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
                                model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
                                ).with_id("latest_blessed_model_resolver")
    evaluator = RecommenderEvaluator(model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
                                     baseline_model=baseline.outputs["model"], query_key="user_id",
                                     item_key="item_id", k=k, user_group_keys="user_group",
                                     item_group_key="item_category", thresholds=thresholds)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=os.path.join(root, "serving"))))
    return tfx.dsl.Pipeline(
        pipeline_name="tfrs_diag_example", pipeline_root=os.path.join(root, "pipeline"),
        components=[example_gen, trainer, baseline, evaluator, pusher], enable_cache=enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.sqlite")),
        beam_pipeline_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])


def _latest(root: str, component: str, output: str) -> str:
    folder = os.path.join(root, "pipeline", component, output)
    runs = sorted((d for d in os.listdir(folder) if d.isdigit()), key=int)
    return os.path.join(folder, runs[-1])


def main(argv: list[str] | None = None) -> dict:
    """Writes the data, runs the pipeline, prints and returns where the results are."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="MovieLens-100k folder (default: synthetic data)")
    p.add_argument("--root", help="folder for the data, pipeline artifacts and metadata (default: a new temporary one)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="blessing rules, ';'-separated")
    args = p.parse_args(argv)

    from tfx import v1 as tfx  # noqa: PLC0415

    from tfrs_diag import datasets  # noqa: PLC0415

    root = os.path.abspath(args.root or tempfile.mkdtemp(prefix="tfrs_diag_tfx_"))
    data = (datasets.movielens_100k(args.data_dir) if args.data_dir
            else datasets.synthetic(num_users=300, num_items=400, num_interactions=9000))
    data_root = os.path.join(root, "data")
    if not os.path.isdir(data_root):  # the same files on a second run: ExampleGen's output is cached
        write_csv(data, data_root)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        root, data_root, thresholds=args.thresholds, epochs=args.epochs, learning_rate=args.learning_rate))

    evaluation = _latest(root, "RecommenderEvaluator", "evaluation")
    blessing = _latest(root, "RecommenderEvaluator", "blessing")
    with open(os.path.join(evaluation, "tfrs_diag_metrics.json")) as f:
        metrics = json.load(f)
    serving = os.path.join(root, "serving")
    pushed = sorted(os.listdir(serving)) if os.path.isdir(serving) else []  # one folder per pushed model
    out = {"root": root, "evaluation": evaluation, "blessing": blessing, "blessed": metrics["blessed"],
           "checks": metrics["checks"], "metrics": metrics["result"]["metrics"],
           "model_run": _latest(root, "Trainer", "model_run"), "pushed_versions": pushed}
    print(f"\nblessed: {out['blessed']}; models pushed to {serving} so far: {len(pushed)}")
    for check in out["checks"]:
        print(f"  {check['rule']:<44} {check['value']!s:<24} {check['passed']} {check['note']}")
    print(f"evaluation: {evaluation}\nmodel run (training diagnostics): {out['model_run']}\n"
          f"view them: tensorboard --logdir {evaluation}   or   tfrs-diag report {evaluation}")
    return out


if __name__ == "__main__":
    main()

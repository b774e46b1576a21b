"""ExplanationCallback and the TensorBoard output of attributions, read back from disk."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

import tfrs_diag
from tfrs_diag import datasets, models, summary
from tfrs_diag.explain import Attribution, write_attribution
from tfrs_diag.explain.writer import CHART_TAG, TABLE_TAG, bar_chart


def _image_events(run_dir):
    out = []
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(raw.numpy())
            out += [(event.step, v) for v in event.summary.value if v.tag == CHART_TAG]
    return out


def test_callback_tracks_fixed_examples_across_epochs(tmp_path):
    data = datasets.synthetic(num_users=60, num_items=90, num_interactions=2000, seed=5)
    model = models.RankingModel(data.train, embedding_dim=4, hidden=(8,))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    examples = {k: v[:3] for k, v in data.test.items()}
    background = {k: v[:20] for k, v in data.train.items()}
    cb = tfrs_diag.callbacks.ExplanationCallback(examples, every_n_epochs=1, log_dir=str(tmp_path),
                                                 background=background, label_key=("user_id", "item_id"))
    model.fit(models.ranking_dataset(data.train, model.feature_names, 512), epochs=2, verbose=0, callbacks=[cb])
    summary.close_writer(str(tmp_path))

    run = summary.read_run(str(tmp_path / "train"))
    records = run.records[TABLE_TAG]
    assert [r["epoch"] for _, r in records] == [0, 1]
    steps = [s for s, _ in records]
    assert steps[0] < steps[1]  # written at the optimizer step of each epoch end
    for (_, payload), (epoch, attribution) in zip(records, cb.history):
        assert payload["type"] == "attribution_table" and payload["method"] == "shapley"
        assert payload["group_names"] == list(model.feature_names)
        assert payload["examples"][0] == f"{examples['user_id'][0]} {examples['item_id'][0]}"
        values = np.array(payload["values"])
        assert values.shape == (3, 5)
        np.testing.assert_allclose(values, attribution.values, atol=1e-6)
        # efficiency survives the round trip: values + base = outputs
        np.testing.assert_allclose(values.sum(1) + payload["base_value"], payload["outputs"], atol=1e-4)
    # Training changed the explanations of the same examples (the tables and MLP moved).
    assert np.abs(np.array(records[1][1]["values"]) - np.array(records[0][1]["values"])).max() > 1e-3
    # The model after fit is what the last record explains.
    np.testing.assert_allclose(records[-1][1]["outputs"], model(examples).numpy().ravel(), atol=1e-5)
    for group in model.feature_names:
        assert len(run.scalars[summary.tag("explain", "mean_abs", group)]) == 2
    images = _image_events(str(tmp_path / "train"))
    assert len(images) == 2 and images[0][1].metadata.plugin_data.plugin_name == "images"


def test_write_attribution_payload_contract(tmp_path):
    a = Attribution("integrated_gradients", [[0.5, -0.25], [0.1, 0.2]], [1.0, 1.5], [1.25, 1.8], ("a", "b"),
                    examples=["x", "y"], delta=[1e-4, 2e-4])
    write_attribution(a, str(tmp_path), step=7, epoch=3)
    summary.close_writer(str(tmp_path))
    (step, payload), = summary.read_run(str(tmp_path / "train")).records[TABLE_TAG]
    assert step == 7
    assert {"method", "group_names", "examples", "values", "base_value", "outputs", "epoch"} <= set(payload)
    assert payload["base_value"] == [1.0, 1.5] and payload["epoch"] == 3 and payload["delta"] == [1e-4, 2e-4]


def test_bar_chart_draws_signed_bars():
    image = bar_chart(np.array([2.0, -1.0, 0.0]), bar_height=10, gap=2, width=100)
    assert image.shape == (3 * 12 + 2, 100, 3) and image.dtype == np.uint8
    green = (image[..., 1] > 150) & (image[..., 0] < 100)
    red = (image[..., 0] > 200) & (image[..., 1] < 100)
    row0, row1, row2 = (slice(2 + i * 12, 2 + i * 12 + 10) for i in range(3))
    assert green[row0, 51:].sum() > 0 and red[row0].sum() == 0            # positive: right of the axis
    assert red[row1, :50].sum() > 0 and green[row1].sum() == 0            # negative: left
    assert green[row0].sum() == pytest.approx(2 * red[row1].sum(), rel=0.05)  # length proportional
    assert green[row2].sum() == 0 and red[row2].sum() == 0


def test_callback_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="every_n_epochs"):
        tfrs_diag.callbacks.ExplanationCallback({"a": [1]}, every_n_epochs=0)
    with pytest.raises(ValueError, match="method"):
        tfrs_diag.callbacks.ExplanationCallback({"a": [1]}, method="deeplift")
    with pytest.raises(ValueError, match="examples"):
        tfrs_diag.callbacks.ExplanationCallback({})


@pytest.mark.slow
def test_cli_explain_prints_attributions_and_writes_them(tmp_path, capsys):
    from tfrs_diag import cli

    code = cli.main(["explain", "--num-interactions", "3000", "--epochs", "1", "--examples", "3",
                     "--background", "20", "--logdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "shapley attributions" in out and "user_id" in out and "item_category" in out
    gap = float(out.split("max |gap|")[1].split()[0])
    assert gap < 1e-4
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith("explain-")]
    (step, payload), = summary.read_run(str(run / "train")).records[TABLE_TAG]
    assert len(payload["values"]) == 3 and payload["method"] == "shapley"


def test_cli_explain_bad_input(capsys):
    from tfrs_diag import cli

    assert cli.main(["explain", "--data-dir", "/nonexistent/ml-100k"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert cli.main(["explain", "--method", "deeplift"]) == 2

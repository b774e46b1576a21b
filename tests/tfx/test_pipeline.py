"""examples/tfx_pipeline.py end to end, twice in one pipeline root (LocalDagRunner, SQLite metadata).

The first run trains the two-tower with our callbacks, is blessed (its change rules have
no baseline yet) and pushed; the second plants a regression (a learning rate 1000 times
smaller: the model barely trains), is compared with the first run's blessed model (the
Resolver's baseline), is not blessed, and the Pusher pushes nothing.
"""

import importlib.util
import os
import pathlib

import pytest

pytest.importorskip("tfx.v1", reason="needs TFX: make test-tfx runs these in .venv-tfx")

from tfrs_diag import summary  # noqa: E402

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "tfx_pipeline.py"


def _example():
    spec = importlib.util.spec_from_file_location("tfx_pipeline", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_blessing_gates_the_pusher_and_a_planted_regression_is_refused(tmp_path):
    example = _example()
    root = str(tmp_path / "root")
    good = example.main(["--root", root, "--epochs", "3"])
    assert good["blessed"] is True and len(good["pushed_versions"]) == 1
    assert [c["passed"] for c in good["checks"]] == [True, None, None]  # no baseline on the first run
    # The Trainer's model run holds our callbacks' TensorBoard data.
    run = summary.read_run(os.path.join(good["model_run"], "train"))
    assert "tfrs_diag/grad/global_norm" in run.scalars
    validation = summary.read_run(os.path.join(good["model_run"], "validation"))
    assert "tfrs_diag/rank/ndcg_at_10" in validation.scalars

    bad = example.main(["--root", root, "--epochs", "3", "--learning-rate", "1e-4"])
    assert bad["blessed"] is False and bad["pushed_versions"] == good["pushed_versions"]
    change = next(c for c in bad["checks"] if c["rule"] == "change(ndcg_at_10) >= -0.01")
    assert change["passed"] is False
    assert change["value"] == pytest.approx(bad["metrics"]["ndcg_at_10"] - good["metrics"]["ndcg_at_10"], abs=1e-9)
    assert os.path.isfile(os.path.join(bad["blessing"], "NOT_BLESSED"))

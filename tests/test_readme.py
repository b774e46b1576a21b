"""The README quick start runs as written, on the TFRS README's model, and the plugin shows it."""

import os
import pathlib
import re

import pytest
from werkzeug.test import Client

from tfrs_diag import summary
from tfrs_diag.views.tensorboard import plugin as P

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_quick_start_runs_as_written_and_every_callback_reaches_the_plugin(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quick_start_code(), str(README), "exec"), namespace)  # noqa: S102 - our README
    model, callbacks = namespace["model"], namespace["callbacks"]
    assert [type(c).__name__ for c in callbacks] == ["GradientStatistics", "OverfittingMonitor", "BeyondAccuracy"]
    assert int(model.optimizer.iterations) == 3 * 4  # 16000 training rows in batches of 4096
    logdir = str(tmp_path / "logs" / "quickstart")
    for run in ("train", "validation"):
        summary.close_writer(logdir, run)
    train = summary.read_run(os.path.join(logdir, "train")).scalars
    validation = summary.read_run(os.path.join(logdir, "validation")).scalars
    # Each callback's own tags, at the steps it promised.
    assert [s for s, _ in train["tfrs_diag/grad/global_norm"]] == list(range(2, 13, 2))
    assert len(train["tfrs_diag/overfit/probe/heldout_loss"]) >= 6
    assert any(t.startswith("tfrs_diag/embed/dead_row_fraction/") for t in train)
    ndcg = validation["tfrs_diag/rank/ndcg_at_10"]
    assert [s for s, _ in ndcg] == [4, 8, 12] and all(0 <= v <= 1 for _, v in ndcg)
    # The plugin serves what each callback wrote.
    app = P.make_wsgi_app(str(tmp_path / "logs"), load_fast=False)
    try:
        client = Client(app)
        runs = client.get("/data/plugin/tfrs_diag/runs").json["runs"]
        served = client.get("/data/plugin/tfrs_diag/scalars",
                            query_string={"run": "quickstart/validation", "tag": "tfrs_diag/rank/ndcg_at_10"}).json
    finally:
        app.close()
    assert {"grad", "overfit", "embed"} <= set(runs["quickstart/train"]["scalar_families"])
    assert {"rank", "div", "fair"} <= set(runs["quickstart/validation"]["scalar_families"])
    assert len(served["scalars"]["tfrs_diag/rank/ndcg_at_10"]) == 3

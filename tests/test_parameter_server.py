"""GradientStatistics, OverfittingMonitor and BeyondAccuracy under ParameterServerStrategy.

tests/ps_run.py (one subprocess, bounded in time) starts an in-process cluster of one
worker and one parameter server on 127.0.0.1, fits the integer-index two-tower model with
the three callbacks, and fits a copy from the same initial weights on one device. With
one worker the steps run in order, so the training is the one-device training, and
every diagnostic must say the same:

- the losses, the statistics' last step, every alert;
- the monitor's probe losses at the same steps (under this strategy Keras calls batch
  hooks before the step has run: the monitor waits for it before probing);
- BeyondAccuracy's metrics;
- every scalar written: under this strategy a batch-end reading may come after a later
  step than the one-device run's (steps are scheduled ahead), so the steps written are a
  subset of the one-device run's, ending at the same step, with equal values there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ps_run as PS
from tfrs_diag import summary

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 240


def _scalars(log_dir):
    out = {}
    for run in ("train", "validation"):
        path = os.path.join(log_dir, run)
        if os.path.isdir(path):
            out.update({(run, t): v for t, v in summary.read_run(path).scalars.items()})
    return out


@pytest.mark.slow
def test_callbacks_under_parameter_server_strategy_equal_one_device(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE]),
           "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    try:
        done = subprocess.run([sys.executable, os.path.join(HERE, "ps_run.py"), "--out", str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed it
        pytest.fail(f"the parameter-server run did not finish in {TIMEOUT} s:\n{(e.output or '')[-3000:]}")
    assert done.returncode == 0, done.stdout[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    ps, one = result["ps"], result["one"]

    assert ps["last_step"] == one["last_step"] == PS.STEPS * PS.EPOCHS
    np.testing.assert_allclose(ps["loss"], one["loss"], rtol=1e-5)
    assert ps["alerts"] == one["alerts"]
    assert [r["step"] for r in ps["readings"]] == [r["step"] for r in one["readings"]] == [0, 4, 8]
    np.testing.assert_allclose([r["heldout"] for r in ps["readings"]], [r["heldout"] for r in one["readings"]],
                               rtol=1e-5)
    assert len(ps["beyond"]) == PS.EPOCHS
    for a, b in zip(ps["beyond"], one["beyond"]):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-5, atol=1e-6)

    ours, theirs = _scalars(str(tmp_path / "ps")), _scalars(str(tmp_path / "one"))
    assert set(ours) == set(theirs)
    assert {tag.split("/")[1] for _, tag in ours} >= {"grad", "embed", "overfit", "rank"}
    for key, points in ours.items():
        reference = dict(theirs[key])
        assert points[-1][0] == theirs[key][-1][0], key
        assert {s for s, _ in points} <= set(reference), key
        np.testing.assert_allclose([v for _, v in points], [reference[s] for s, _ in points], rtol=1e-4, atol=1e-6,
                                   err_msg=str(key))

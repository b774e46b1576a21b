"""Package-level promises: the Keras check, public names, runnable docstrings."""

import os
import subprocess
import sys

import pytest

import tfrs_diag


def test_keras_3_fails_at_import_with_the_fix_in_the_message():
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", "import tfrs_diag"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "KerasVersionError" in out.stderr and "TF_USE_LEGACY_KERAS=1" in out.stderr


def test_importing_tfrs_diag_before_tensorflow_selects_keras_2():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = "import tfrs_diag, tensorflow as tf; print(tf.keras.Model.__module__.split('.')[0])"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "tf_keras"


def test_keras_2_is_resolved():
    from tfrs_diag import _keras

    assert _keras.keras_flavor(_keras.tf) == "tf_keras"


def test_alert_kinds_follow_the_shared_vocabulary():
    from tfrs_diag import summary

    with pytest.raises(ValueError, match="alert kind must be one of"):
        summary.Alert("grad_explosion", "warning", 1, 0, "x", "m")
    assert "nonfinite_gradients" in summary.ALERT_KINDS


def test_version_is_exposed():
    assert tfrs_diag.__version__.count(".") == 2


def test_alert_log_fires_once_per_condition_and_records_when_it_clears(tmp_path, capsys):
    from tfrs_diag import summary

    log = summary.AlertLog(str(tmp_path), echo=True)
    alert = summary.Alert("fairness_gap", "warning", 10, 0, "user_group=minority", "Try reweighting.")
    assert log.fire(alert) is True
    assert log.fire(summary.Alert("fairness_gap", "warning", 20, 1, "user_group=minority", "Try reweighting."))\
        is False  # still firing: deduplicated
    assert log.clear("fairness_gap", "user_group=minority", 30, 2) is True
    assert log.clear("fairness_gap", "user_group=minority", 40, 3) is False
    assert log.fire(summary.Alert("fairness_gap", "warning", 50, 4, "user_group=minority", "Try reweighting."))
    records = summary.read_run(str(tmp_path / "train")).alerts()
    assert [(r["step"], r["status"]) for r in records] == [(10, "firing"), (30, "cleared"), (50, "firing")]
    assert records[1]["evidence"]["fired_at_step"] == 10
    assert capsys.readouterr().out.count("fairness_gap") == 3  # printed once per record

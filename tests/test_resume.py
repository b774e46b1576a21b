"""Readings are written at the optimizer's step: resumed, repeated and re-created fits continue the timeline.

The kill-and-resume tests run training in child processes: the first is killed
(``os._exit``, no clean-up, like a pre-empted job) and a second resumes it with
`tf.keras.callbacks.BackupAndRestore`. The union of the steps written by both must be
exactly the cadence over the whole run, each step once.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag import summary
from tfrs_diag.callbacks import GradientStatistics

TAG = "tfrs_diag/grad/global_norm"
STEPS_PER_EPOCH = 20  # 640 examples, batch 32

_CHILD = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    from tfrs_diag.callbacks import GradientStatistics
    log_dir, backup_dir, kill_at, save_freq, every = sys.argv[1:6]
    kill_at, every = int(kill_at), (None if every == "default" else int(every))
    save_freq = "epoch" if save_freq == "epoch" else int(save_freq)
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1))).astype(np.float32)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(8, activation="relu"),
                                 tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")

    class Kill(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            # Killed before step kill_at + 1 runs: steps 1..kill_at are done.
            if int(self.model.optimizer.iterations.numpy()) == kill_at:
                print("killed at", kill_at, flush=True)
                os._exit(17)

    # GradientStatistics before BackupAndRestore: its on_train_begin runs before the
    # restore, so it must not take the step count from there.
    callbacks = [GradientStatistics(log_dir, every_n_steps=every, verbose=0),
                 tf.keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq)]
    if kill_at > 0:
        callbacks.append(Kill())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model.fit(ds, epochs=4, callbacks=callbacks, verbose=0)
    print("done", int(model.optimizer.iterations.numpy()), flush=True)
""")


def _child(tmp_path, kill_at, save_freq, every):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "logs"), str(tmp_path / "backup"),
                           str(kill_at), save_freq, every], env=env, capture_output=True, text=True, timeout=240)


def _written_steps(log_dir):
    return [s for s, _ in summary.read_run(os.path.join(log_dir, "train")).scalars.get(TAG, [])]


@pytest.mark.slow
@pytest.mark.parametrize("save_freq, kill_at", [("epoch", 40), ("10", 50)], ids=["at-epoch-3", "mid-epoch-3"])
def test_killed_and_resumed_run_writes_every_step_of_the_cadence_once(tmp_path, save_freq, kill_at):
    # 4 epochs of 20 steps; the default cadence for 20 steps per epoch is every 4 steps.
    first = _child(tmp_path, kill_at, save_freq, "default")
    assert first.returncode == 17, first.stderr[-3000:]
    before = _written_steps(tmp_path / "logs")
    assert before and max(before) <= kill_at
    second = _child(tmp_path, 0, save_freq, "default")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "done 80" in second.stdout  # resumed, not restarted: 80 steps in all
    steps = _written_steps(tmp_path / "logs")
    # Exactly the cadence over the whole run, no step twice, none missing.
    assert sorted(steps) == list(range(4, 81, 4))
    assert len(steps) == len(set(steps))
    # The resumed half wrote only after the kill.
    assert sorted(set(steps) - set(before)) == [s for s in range(4, 81, 4) if s > kill_at]


# ---------------------------------------------------------------- in one process


def _model_and_data(seed=0):
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(640, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1))).astype(np.float32)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def test_a_second_fit_and_a_new_instance_on_the_same_log_dir_continue_the_timeline(tmp_path):
    model, ds = _model_and_data()
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)  # the same instance again
    # A new instance on the same log_dir (as after a restart) and initial_epoch.
    cb2 = GradientStatistics(str(tmp_path), every_n_steps=5, verbose=0)
    model.fit(ds, epochs=4, initial_epoch=2, callbacks=[cb2], verbose=0)
    steps = _written_steps(tmp_path)
    assert steps == list(range(5, 81, 5))
    assert int(model.optimizer.iterations.numpy()) == 80


def test_readings_follow_the_optimizer_when_it_was_trained_without_the_callback(tmp_path):
    model, ds = _model_and_data()
    model.fit(ds.take(7), epochs=1, verbose=0)  # 7 steps the callback never saw
    cb = GradientStatistics(str(tmp_path), every_n_steps=5, verbose=0)
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)  # steps 8..27
    assert _written_steps(tmp_path) == [10, 15, 20, 25]
    assert cb.last_stats["step"] == 27

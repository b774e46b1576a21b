"""A failing host-side write (disk full, permission lost, directory gone) never ends a fit.

Every diagnostic writes through `tfrs_diag.summary`; its `SummaryWriter` drops a failed
write with one `SummaryWriteWarning` per log_dir and training goes on, with the
diagnostics' in-memory state (alerts, statistics) the same as without the failure.
"""

import os
import shutil
import subprocess
import uuid
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag import summary
from tfrs_diag.summary import writer as summary_writer
from tfrs_diag.callbacks import GradientStatistics

NO_SPACE = "No space left on device"


def _jumpy_regression():
    """(dataset, compiled model): linear regression whose gradients jump at steps 31-38, then recover.

    The learning rate is 0.01, 0.3 (above the stability limit 2/18) for 8 steps, then 0.01
    again: GradientStatistics fires `exploding_gradients` and the loss ends finite.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 8)).astype(np.float32) * 3
    y = (x @ rng.normal(size=(8, 1))).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(1, name="linear")])
    lr = tf.keras.optimizers.schedules.PiecewiseConstantDecay([30, 38], [0.01, 0.3, 0.01])
    model.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="mse")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32), model


def _fit(log_dir, epochs=3):
    """Trains with GradientStatistics writing every step; returns (losses, alerts, write warnings)."""
    ds, model = _jumpy_regression()
    cb = GradientStatistics(str(log_dir), every_n_steps=2, histogram_every_n_steps=2, exploding_window=10,
                            verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(ds, epochs=epochs, callbacks=[cb], verbose=0)
        summary.close_writer(str(log_dir))
    alerts = [(a.kind, a.step, a.subject, a.status) for a in cb.alerts]
    return history.history["loss"], alerts, [w for w in caught if issubclass(w.category, summary.SummaryWriteWarning)]


@pytest.fixture(autouse=True)
def _fresh_write_state(monkeypatch):
    # Each test starts with no writer having warned (warnings are once per log_dir per process).
    monkeypatch.setattr(summary_writer, "_warned_log_dirs", set())
    yield


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The same fit on a healthy disk: what every failing run must reproduce."""
    log_dir = tmp_path_factory.mktemp("healthy")
    losses, alerts, warned = _fit(log_dir)
    assert not warned
    assert any(kind == "exploding_gradients" for kind, *_ in alerts), alerts
    return losses, alerts, summary.read_run(str(log_dir / "train"))


# ---------------------------------------------------------------- a real full disk


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only); skipped where mounting is not permitted."""
    mount_point = tmp_path / f"tiny_{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_disk_that_fills_up_mid_run_warns_once_and_training_goes_on(tiny_tmpfs, baseline):
    losses, alerts, warned = _fit(tiny_tmpfs / "logs")

    base_losses, base_alerts, base_run = baseline
    assert len(losses) == 3                     # every epoch ran
    assert losses == base_losses                # and trained exactly as on a healthy disk
    assert alerts == base_alerts                # the alerts are all in memory
    assert len(warned) == 1
    message = str(warned[0].message)
    assert str(tiny_tmpfs / "logs") in message and NO_SPACE in message, message
    # What fitted on the disk is readable (the last record is cut short) and is what a healthy run wrote.
    run = summary.read_run(str(tiny_tmpfs / "logs" / "train"))
    written = sum(len(v) for v in run.scalars.values())
    assert 0 < written < sum(len(v) for v in base_run.scalars.values())
    for tag, points in run.scalars.items():
        assert dict(points).items() <= dict(base_run.scalars[tag]).items()


# ---------------------------------------------------------------- deterministic failures


class _DiskFull:
    """Makes every flush and eager summary write fail with TensorFlow's ENOSPC error from the
    ``after``-th flush on (``until``: the flush from which the disk has room again)."""

    def __init__(self, monkeypatch, after: int, until: int | None = None):
        self.flushes = 0
        self.after, self.until = after, until
        self.path = None
        original_write = tf.summary.write
        original_create = tf.summary.create_file_writer

        def full():
            return self.after <= self.flushes and (self.until is None or self.flushes < self.until)

        def error():
            return tf.errors.ResourceExhaustedError(None, None, f"{self.path}/events.out.tfevents.x; {NO_SPACE}")

        def create(path, *args, **kwargs):
            self.path = path
            writer = original_create(path, *args, **kwargs)
            inner_flush = writer.flush

            def flush():
                self.flushes += 1
                if full():
                    raise error()
                return inner_flush()

            writer.flush = flush
            return writer

        def write(*args, **kwargs):
            if full() and tf.executing_eagerly():
                raise error()
            return original_write(*args, **kwargs)

        monkeypatch.setattr(tf.summary, "create_file_writer", create)
        monkeypatch.setattr(tf.summary, "write", write)


def test_writes_failing_mid_run_leave_training_and_alerts_unchanged(tmp_path, monkeypatch, baseline):
    disk = _DiskFull(monkeypatch, after=20)  # the disk fills after 20 flushes (~step 20 of 192)
    losses, alerts, warned = _fit(tmp_path)

    base_losses, base_alerts, _ = baseline
    assert disk.flushes >= 20
    assert losses == base_losses
    assert alerts == base_alerts                # fired after the disk filled: kept in memory
    assert any(step > 20 for _, step, *_ in alerts)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert str(tmp_path) in message and NO_SPACE in message and "ResourceExhaustedError" in message


def test_writes_resume_in_a_new_event_file_when_the_disk_recovers(tmp_path, monkeypatch, baseline):
    monkeypatch.setattr(summary_writer, "RETRY_SECONDS", 0.0)
    _DiskFull(monkeypatch, after=10, until=12)  # two failing flushes, then room again
    losses, alerts, warned = _fit(tmp_path)

    base_losses, base_alerts, base_run = baseline
    assert losses == base_losses and alerts == base_alerts
    assert len(warned) == 1
    files = [f for f in os.listdir(tmp_path / "train") if f.startswith("events.out.tfevents")]
    assert len(files) >= 2                      # the broken file is left, writing went on in a new one
    run = summary.read_run(str(tmp_path / "train"))
    norm = "tfrs_diag/grad/global_norm"
    assert max(s for s, _ in run.scalars[norm]) == max(s for s, _ in base_run.scalars[norm])
    assert run.alerts()                         # alerts after the recovery reached the disk


def test_a_run_directory_replaced_by_a_file_warns_and_fit_goes_on(tmp_path, baseline):
    log_dir = tmp_path / "logs"
    summary.check_log_dir(str(log_dir))
    (log_dir / "train").write_text("not a directory")  # the run directory is gone: a file in its place
    losses, alerts, warned = _fit(log_dir)

    base_losses, base_alerts, _ = baseline
    assert losses == base_losses and alerts == base_alerts
    assert len(warned) == 1
    assert str(log_dir) in str(warned[0].message) and "not a directory" in str(warned[0].message).lower()


def test_the_code_after_a_failed_write_in_the_same_block_still_runs(tmp_path, monkeypatch):
    _DiskFull(monkeypatch, after=0)
    writer = summary.writer_for(str(tmp_path), "unit")
    reached = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with writer.as_default():
            summary.write_record(summary.tag("fair", "groups"), "group_table", {"x": 1}, 1)  # fails
            reached.append("after record")
            summary.write_histogram(summary.tag("grad", "values", "v"), np.arange(3.0), np.ones(2), 1)
            tf.summary.image("raw", tf.zeros([1, 2, 2, 1]), step=1)   # a raw call: skipped while failed
            reached.append("after raw")
        writer.flush()
        assert summary.write_failures()[str(tmp_path / "unit")].startswith("ResourceExhaustedError")
        summary.close_writer(str(tmp_path), "unit")
    assert reached == ["after record", "after raw"]
    assert len([w for w in caught if issubclass(w.category, summary.SummaryWriteWarning)]) == 1


def test_a_raw_tf_summary_write_failing_inside_the_block_is_caught(tmp_path):
    writer = summary.writer_for(str(tmp_path), "raw")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with writer.as_default():
            raise tf.errors.PermissionDeniedError(None, None, "events file: Permission denied")
    summary.close_writer(str(tmp_path), "raw")
    (w,) = [w for w in caught if issubclass(w.category, summary.SummaryWriteWarning)]
    assert "Permission denied" in str(w.message) and str(tmp_path) in str(w.message)


def test_other_errors_in_the_block_still_raise(tmp_path):
    writer = summary.writer_for(str(tmp_path), "bugs")
    with pytest.raises(ValueError, match="edges must have"):
        with writer.as_default():
            summary.write_histogram("tfrs_diag/grad/values/v", np.arange(3.0), np.ones(5), 1)
    summary.close_writer(str(tmp_path), "bugs")


def test_scalar_batch_leaves_out_undefined_values_and_follows_a_new_writer(tmp_path):
    batch = summary.ScalarBatch()
    for i, run in enumerate(("a", "b")):  # same tags, a different writer: traced again for it
        writer = summary.writer_for(str(tmp_path), run)
        with writer.as_default():
            batch.write({"tfrs_diag/div/x": 1.0 + i, "tfrs_diag/div/undefined": None}, step=i)
        summary.close_writer(str(tmp_path), run)
    a, b = summary.read_run(str(tmp_path / "a")), summary.read_run(str(tmp_path / "b"))
    assert a.scalars == {"tfrs_diag/div/x": [(0, 1.0)]}
    assert b.scalars == {"tfrs_diag/div/x": [(1, 2.0)]}

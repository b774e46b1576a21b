"""The writers every diagnostic shares; the names they write are `tfrs_diag.summary.schema`'s.

Numbers a person may want to plot are ordinary scalar or histogram summaries (the stock
dashboards show them); structured records (alerts, tables) are tensor summaries owned by
the ``tfrs_diag`` plugin holding a versioned JSON payload (`tfrs_diag.summary.schema`).
Writes never kill a training run: a failing write warns once (`SummaryWriteWarning`) and
is retried later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import warnings
from typing import Any, Mapping

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.summary.schema import encode_record, record_metadata

_logger = logging.getLogger("tfrs_diag")


# ---------------------------------------------------------------- writers


class SummaryWriteWarning(RuntimeWarning):
    """A diagnostic could not write its summaries (disk full, permission lost, ...).

    Training goes on and the diagnostic's in-memory state (``alerts``, statistics) stays
    complete; only the event files miss what could not be written.
    """


# What a host-side write can raise when the file system fails under it: TensorFlow maps
# errno to these (ENOSPC/EDQUOT -> ResourceExhausted, EACCES/EROFS -> PermissionDenied,
# ENOENT -> NotFound, ENOTDIR -> FailedPrecondition, EIO -> Unavailable, else Unknown).
WRITE_ERRORS = (
    OSError,
    tf.errors.ResourceExhaustedError,
    tf.errors.PermissionDeniedError,
    tf.errors.NotFoundError,
    tf.errors.FailedPreconditionError,
    tf.errors.AlreadyExistsError,
    tf.errors.UnavailableError,
    tf.errors.DataLossError,
    tf.errors.UnknownError,
)

#: After a failed write, a writer skips writes for this long, then tries a fresh event file.
RETRY_SECONDS = 30.0

_writers: dict[str, "SummaryWriter"] = {}
writers_lock = threading.Lock()
# Per run directory: (step, alert payloads written at that step), see AlertLog._emit.
alerts_at_step: dict[str, tuple[int, list[dict]]] = {}
# abs log_dir -> the directory a non-chief worker writes it to (`tfrs_diag.summary.workers`).
worker_dirs: dict[str, str] = {}
# log_dirs (absolute) that have warned about a failed write: each warns once per process.
_warned_log_dirs: set[str] = set()
_current = threading.local()


def run_path(log_dir: str, run: str) -> str:
    root = os.path.abspath(log_dir)
    root = worker_dirs.get(root, root)
    return os.path.join(root, run) if run else root


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error}"
    message = (getattr(error, "message", None) or str(error)).strip()
    # TF's file errors read "<path>; <strerror>", after the op name ("{{function_node ...}}")
    # or, from a traced function, after "Graph execution error:" and the op's traceback.
    found = re.search(r"[^\s;{}]+; [^\n\[]+", message)
    if found:
        message = found.group(0).strip()
    elif message:
        message = re.sub(r"^\{\{[^}]*\}\}\s*", "", message).splitlines()[0]
        message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", message).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class SummaryWriter:
    """The shared writer of one run directory; a failing host-side write never raises.

    Wraps `tf.summary.create_file_writer`. A write, flush or close that fails with one of
    `WRITE_ERRORS` (disk full, permission lost, directory gone) warns once per log_dir
    (`SummaryWriteWarning`, naming the directory and the OS error) and is dropped; for
    `RETRY_SECONDS` later writes are skipped, then the writer starts a fresh event file
    and writes resume if the file system has recovered.

    Use it like the TensorFlow writer: ``with writer.as_default(): write_scalar(...)``.
    The ``write_*`` helpers of this module each catch their own failure, so the code
    after a failed write in the same block (alert checks, bookkeeping) still runs; the
    block itself also catches a failing raw ``tf.summary`` call.
    """

    def __init__(self, log_dir: str, run: str, path: str):
        self.log_dir = log_dir
        self.run = run
        self.path = path
        self.error: str | None = None  # the last write failure, None while writes succeed
        self.failures = 0
        self._tf_writer = None
        self._failed_at: float | None = None
        self._lock = threading.RLock()
        self._open()

    # -- state
    @property
    def ok(self) -> bool:
        """False while writes are being skipped after a failure."""
        return self._failed_at is None

    @property
    def tf_writer(self):
        """The underlying `tf.summary` writer (a no-op writer while writes are skipped)."""
        return self._tf_writer if self._tf_writer is not None and self.ok else tf.summary.create_noop_writer()

    def _open(self) -> bool:
        try:
            with tf.init_scope():
                self._tf_writer = tf.summary.create_file_writer(self.path)
            return True
        except WRITE_ERRORS as e:
            self._tf_writer = None
            self.fail(e)
            return False

    def _ready(self) -> bool:
        """True if writes should go ahead now (retrying a failed writer when due)."""
        if self._failed_at is None:
            return True
        if time.monotonic() - self._failed_at < RETRY_SECONDS:
            return False
        self._discard()
        self._failed_at = None
        if not self._open():
            return False
        _logger.info("tfrs_diag: retrying summary writes to %s in a new event file", self.path)
        return True

    def _discard(self):
        old, self._tf_writer = self._tf_writer, None
        if old is not None:
            try:
                old.close()
            except WRITE_ERRORS:
                pass

    def fail(self, error: BaseException) -> None:
        """Records a failed write: warns (once per log_dir) and skips writes for a while."""
        with self._lock:
            self.failures += 1
            self.error = _describe(error)
            self._failed_at = time.monotonic()
            root = os.path.abspath(self.log_dir)
            first = root not in _warned_log_dirs
            _warned_log_dirs.add(root)
            muted = getattr(_current, "muted", None)
            if getattr(_current, "writer", None) is self and muted is not None and not muted:
                # The rest of this writer's block skips raw tf.summary calls too.
                ctx = tf.summary.record_if(False)
                ctx.__enter__()
                muted.append(ctx)
        if first:
            warnings.warn(
                f"tfrs_diag could not write summaries to {self.path} (log_dir={self.log_dir!r}): {self.error}. "
                "Training goes on; the diagnostics keep their results in memory (e.g. callback.alerts) but "
                "these event files miss what could not be written. Free disk space or fix the directory's "
                f"permissions: writing is retried every {RETRY_SECONDS:g} s.",
                SummaryWriteWarning, stacklevel=3)
        else:
            _logger.debug("tfrs_diag: summary write to %s failed again: %s", self.path, self.error)

    # -- the tf.summary writer interface
    @contextlib.contextmanager
    def as_default(self, step=None):
        """Makes this the default writer; a failing write inside the block is dropped."""
        with self._lock:
            ready = self._ready()
        previous = getattr(_current, "writer", None), getattr(_current, "muted", None)
        _current.writer, _current.muted = self, []
        inner = self.tf_writer.as_default(step)
        inner.__enter__()
        try:
            try:
                yield self
            except WRITE_ERRORS as e:  # a raw tf.summary call outside the guarded helpers
                if not ready:
                    raise
                self.fail(e)
        finally:
            for ctx in reversed(_current.muted):
                ctx.__exit__(None, None, None)
            _current.writer, _current.muted = previous
            try:
                inner.__exit__(None, None, None)  # TensorFlow's writer flushes here
            except WRITE_ERRORS as e:
                self.fail(e)

    def flush(self) -> None:
        with self._lock:
            if self._tf_writer is None or not self._ready():
                return
            try:
                self._tf_writer.flush()
                if self.failures and self.error is not None:
                    _logger.info("tfrs_diag: summary writes to %s work again", self.path)
                    self.error = None
            except WRITE_ERRORS as e:
                self.fail(e)

    def close(self) -> None:
        with self._lock:
            if self._tf_writer is not None and self.ok:
                try:
                    self._tf_writer.flush()
                except WRITE_ERRORS as e:
                    self.fail(e)
            self._discard()


def _guarded(write) -> Any:
    """Runs ``write()`` (tf.summary calls) for the current `SummaryWriter`, dropping a failure."""
    writer = getattr(_current, "writer", None)
    if writer is not None and not writer.ok:
        return False
    try:
        return write()
    except WRITE_ERRORS as e:
        if writer is None:
            raise  # a writer of the caller's own (not from writer_for): its errors are its own
        writer.fail(e)
        return False


def writer_for(log_dir: str, run: str = "train") -> SummaryWriter:
    """Returns the process-wide `SummaryWriter` of ``log_dir/run``.

    Callbacks that share a log_dir share one writer, so one run has one event file
    per process rather than one per callback. Its writes never raise on a failing
    file system (see `SummaryWriter`).
    """
    path = run_path(log_dir, run)
    with writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = SummaryWriter(log_dir, run, path)
        return writer


def write_failures() -> dict[str, str]:
    """``{run directory: last error}`` of the shared writers whose writes are failing now."""
    with writers_lock:
        return {path: w.error for path, w in _writers.items() if w.error is not None}


def close_writer(log_dir: str, run: str = "train") -> None:
    """Flushes and forgets the shared writer of ``log_dir/run`` (files stay complete)."""
    path = run_path(log_dir, run)
    with writers_lock:
        writer = _writers.pop(path, None)
        alerts_at_step.pop(path, None)
    if writer is not None:
        writer.close()


def check_log_dir(log_dir: str, argument: str = "log_dir") -> str:
    """Creates ``log_dir`` if needed and proves it is writable, naming it on failure."""
    if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
        raise ValueError(f"{argument} must be a directory path, got {log_dir!r}")
    log_dir = os.fspath(log_dir)
    try:
        os.makedirs(log_dir, exist_ok=True)
        probe = os.path.join(log_dir, f".tfrs_diag_write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"{argument}={log_dir!r} is not a writable directory ({e.strerror or e}); "
            "pass a directory you can write to, e.g. log_dir='logs/run1'."
        ) from None
    return log_dir


def write_scalar(tag_: str, value: float, step: int) -> None:
    """Writes one scalar with the default writer (call inside ``writer.as_default()``)."""
    value, step = float(value), int(step)
    _guarded(lambda: tf.summary.scalar(tag_, value, step=step))


class ScalarBatch:
    """Writes many scalars in one call: one traced function per set of tags.

    Writing 50 scalars one eager op at a time costs ~10 ms of host time; a traced
    function runs the same writes in one call, which keeps cadence reads cheap.
    """

    def __init__(self):
        self._fns: dict[tuple[str, ...], Any] = {}
        self._traced_for = None  # the tf.summary writer the functions captured when traced

    def write(self, values: Mapping[str, float | None], step: int) -> None:
        """Writes ``{tag: value}``; a ``None`` value (undefined) is left out."""
        values = {t: v for t, v in values.items() if v is not None}
        if not values:
            return
        current = getattr(_current, "writer", None)
        if current is not None and not current.ok:
            return
        # A traced function writes to the writer that was the default when it was traced:
        # trace again when the writer changed (e.g. a fresh one after a failure or close).
        target = current.tf_writer if current is not None else None
        if target is not self._traced_for:
            self._fns, self._traced_for = {}, target
        tags = tuple(sorted(values))
        fn = self._fns.get(tags)
        if fn is None:
            def write_all(vector, step_):
                for i, t in enumerate(tags):
                    tf.summary.scalar(t, vector[i], step=step_)
                return tf.constant(True)

            fn = self._fns[tags] = tf.function(write_all, reduce_retracing=True)
        vector = tf.constant([float(values[t]) for t in tags], tf.float32)
        _guarded(lambda: fn(vector, tf.constant(int(step), tf.int64)))


def histogram_metadata():
    from tensorboard.plugins.histogram import metadata as hist_md

    return hist_md.create_summary_metadata(display_name=None, description=None)


def write_histogram(tag_: str, edges: np.ndarray, counts: np.ndarray, step: int) -> None:
    """Writes a pre-bucketed histogram: ``edges`` has ``len(counts) + 1`` entries.

    The buckets were computed in-graph; TensorBoard's histogram format is a
    ``[k, 3]`` tensor of (left edge, right edge, count).
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if edges.shape != (counts.shape[0] + 1,):
        raise ValueError(f"edges must have len(counts)+1 entries, got {edges.shape} for {counts.shape}")
    data = np.stack([edges[:-1], edges[1:], counts], axis=1)
    _guarded(lambda: tf.summary.write(tag_, tf.constant(data), step=int(step), metadata=histogram_metadata()))


def write_record(tag_: str, record_type: str, payload: Mapping[str, Any], step: int) -> None:
    """Writes a versioned JSON record as a tfrs_diag tensor summary."""
    text = tf.constant(encode_record(record_type, payload))
    _guarded(lambda: tf.summary.write(tag_, text, step=int(step), metadata=record_metadata(record_type)))

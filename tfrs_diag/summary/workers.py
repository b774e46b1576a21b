"""Multi-worker training: only the chief writes to ``log_dir``; every worker decides alike.

Under `tf.distribute.MultiWorkerMirroredStrategy` every worker process runs the same
callbacks. As Keras' own TensorBoard callback does, only the chief writes to the
user's ``log_dir``; every other worker writes the same records to a temporary directory
of its own (a local ``tempfile`` directory rather than Keras' ``log_dir/workertemp_<i>``,
so TensorBoard on a shared ``log_dir`` never shows a worker's run for a moment) and
removes it at the end of ``fit``. Non-chief workers do *all* the chief's work, reads
included: a statistic read from a ``SUM`` variable is a collective op that every worker
must join, so a worker that skipped a read or a write would leave the others waiting.

Values that differ between workers (Keras' epoch ``logs`` hold the first *local*
replica's loss of a `tfrs.Model`) are replaced by the chief's with `agree` before a
detector sees them, so alerts and actions (``on_overfit="stop"``) are the same on
every worker. With one worker every function here is a no-op:

>>> from tfrs_diag.summary import workers
>>> strategy = tf.distribute.get_strategy()
>>> workers.is_multi_worker(strategy), workers.is_chief(strategy)
(False, True)
>>> workers.agree(strategy, {"loss": 1.5})
{'loss': 1.5}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Mapping

from tfrs_diag._keras import tf
from tfrs_diag.summary import writer as _w

# abs log_dir -> (this worker's temporary directory, ids of the callbacks using it)
_entered: dict[str, tuple[str, set[int]]] = {}
_agree_fns: dict[tuple[int, int], object] = {}


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` spans more than one worker process."""
    # tf.distribute has no public "how many workers"; Keras itself asks this method.
    in_multi_worker = getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode", None)
    return bool(in_multi_worker()) if callable(in_multi_worker) else False


def is_chief(strategy) -> bool:
    """Whether this process writes to ``log_dir`` (the chief; True without workers)."""
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def enter(log_dir: str, strategy, owner: object) -> str:
    """The directory this worker writes ``log_dir``'s records to, for ``owner`` (a callback).

    The chief (and a single process) writes to ``log_dir``; another worker gets a
    temporary directory, shared by its callbacks of that ``log_dir`` and removed by
    `leave` when the last of them leaves.
    """
    root = os.path.abspath(log_dir)
    if is_chief(strategy):
        return log_dir
    if root not in _entered:
        task = getattr(strategy.cluster_resolver, "task_id", None)
        temp = tempfile.mkdtemp(prefix=f"tfrs_diag_worker{task}_")
        _entered[root] = (temp, set())
        _w.worker_dirs[root] = temp
    _entered[root][1].add(id(owner))
    return _entered[root][0]


def leave(log_dir: str, owner: object) -> None:
    """``owner`` is done with ``log_dir``; the last one closes and removes the temporary directory."""
    root = os.path.abspath(log_dir)
    entry = _entered.get(root)
    if entry is None:
        return
    temp, owners = entry
    owners.discard(id(owner))
    if owners:
        return
    del _entered[root]
    for path in [p for p in list(_w._writers) if p == temp or p.startswith(temp + os.sep)]:
        with _w.writers_lock:
            writer = _w._writers.pop(path, None)
            _w.alerts_at_step.pop(path, None)
        if writer is not None:
            writer.close()
    _w.worker_dirs.pop(root, None)
    shutil.rmtree(temp, ignore_errors=True)


def agree(strategy, values: Mapping[str, float]) -> dict[str, float]:
    """The chief's ``values`` on every worker (one all-reduce); ``values`` itself with one worker.

    Every worker must call it at the same point with the same keys (Keras gives every
    worker the same log keys). NaN and Inf pass through unchanged.
    """
    values = dict(values)
    if not values or not is_multi_worker(strategy):
        return values
    keys = sorted(values)
    key = (id(strategy), len(keys))
    fn = _agree_fns.get(key)
    if fn is None:
        def in_replica(x):
            ctx = tf.distribute.get_replica_context()
            # Replica 0 of the whole group is the chief's first device.
            mine = tf.where(tf.equal(ctx.replica_id_in_sync_group, 0), x, tf.zeros_like(x))
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        @tf.function
        def broadcast(x):
            return strategy.experimental_local_results(strategy.run(in_replica, args=(x,)))[0]

        fn = _agree_fns[key] = broadcast
    out = fn(tf.constant([float(values[k]) for k in keys], tf.float64)).numpy()
    return {k: float(v) for k, v in zip(keys, out)}

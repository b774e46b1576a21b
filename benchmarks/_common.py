"""Helpers every benchmark shares: timing, peak memory, child processes, tables, machine facts.

Only the standard library is imported at module level, so a benchmark can use these
before importing TensorFlow (or in a parent process that never imports it). The Keras
helpers (`keras_fit_timer`) import TensorFlow when called.

Conventions the benchmarks follow:

- progress goes to stderr (`log`), results to stdout (`format_table`) and, on request,
  to a JSON file (`write_json`);
- variants are timed in one process, interleaved in alternating order
  (`interleaved_order`: ABCD, DCBA, ABCD, ...) so slow drift of the machine cancels;
  medians are reported;
- peak memory is measured in a fresh child process per variant (`run_child`), where
  other variants cannot pollute it; the child reports with `emit_result`. Use
  `peak_rss_mb` (VmHWM) there, not `ru_maxrss_mb`: Linux copies the parent's
  ``ru_maxrss`` into the child at fork/exec.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_MARKER = "@@BENCH_RESULT@@ "
_T0 = time.perf_counter()


# ---------------------------------------------------------------- progress


def log(message: str) -> None:
    """Prints a progress line to stderr with wall-clock time and seconds since start."""
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- timing


class Stopwatch:
    """Wall (`perf_counter`) and process CPU (`process_time`, all threads) seconds of a block.

    >>> with Stopwatch() as sw:
    ...     _ = sum(range(1000))
    >>> sw.wall >= 0 and sw.cpu >= 0
    True
    """

    def __enter__(self) -> "Stopwatch":
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self.wall = self.cpu = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


def interleaved_order(names: Sequence[str], repeat: int) -> list[str]:
    """Order of the variants in repetition ``repeat``: forward on even, reversed on odd.

    Alternating the order (ABC, CBA, ABC, ...) cancels a linear drift of the machine's
    speed between variants, and no variant always runs right after the same other one.

    >>> interleaved_order(["a", "b", "c"], 0), interleaved_order(["a", "b", "c"], 1)
    (['a', 'b', 'c'], ['c', 'b', 'a'])
    """
    names = list(names)
    return names if repeat % 2 == 0 else names[::-1]


def median(values: Iterable[float]) -> float:
    """Median of the finite values (NaN when there are none).

    >>> median([3.0, 1.0, float("nan"), 2.0])
    2.0
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when either is missing or ``b`` is not positive."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return float("nan")
    return a / b


def spread(values: Sequence[float]) -> float:
    """(max - min) / median of the finite values: a crude noise figure of repeated timings."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return float("nan")
    return (max(finite) - min(finite)) / statistics.median(finite)


def keras_fit_timer():
    """A Keras callback that timestamps a `fit`: train begin, end of its first batch, train end.

    Put it last in the callback list, so that the other callbacks' ``on_train_end`` work
    is inside the measured span. It declares ``_supports_tf_logs`` so that adding it does
    not make Keras convert the logs to numpy after every batch (which would add a
    per-step host sync to a plain `fit` that it otherwise does not have).

    Attributes after `fit`: ``batches`` (steps run), ``first_batch_end``, ``train_end``
    and ``train_begin`` (`time.perf_counter` values), ``cpu_first_batch_end`` and
    ``cpu_train_end`` (`time.process_time` values), ``batch_ends`` (the
    `time.perf_counter` value at the end of every batch) and `step_durations()`.
    """
    from tfrs_diag._keras import tf  # noqa: PLC0415  (TensorFlow only when asked for)

    class FitTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._supports_tf_logs = True
            self.reset()

        def reset(self):
            self.batches = 0
            self.batch_ends: list[float] = []
            self.train_begin = self.first_batch_end = self.train_end = float("nan")
            self.cpu_first_batch_end = self.cpu_train_end = float("nan")

        def on_train_begin(self, logs=None):
            self.reset()
            self.train_begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            self.batch_ends.append(time.perf_counter())
            if self.batches == 1:
                self.first_batch_end = time.perf_counter()
                self.cpu_first_batch_end = time.process_time()

        def on_train_end(self, logs=None):
            self.train_end = time.perf_counter()
            self.cpu_train_end = time.process_time()

        def step_durations(self) -> list[float]:
            """Seconds between consecutive batch ends (steps 2..n; step 1 has no start mark)."""
            return [b - a for a, b in zip(self.batch_ends, self.batch_ends[1:])]

    return FitTimer()


# ---------------------------------------------------------------- memory


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB.

    Beware in a child process: Linux carries the parent's high-water mark over
    ``fork``/``exec`` into the child's ``ru_maxrss``, so a child started by a big parent
    reports at least the parent's peak. `peak_rss_mb` does not have that problem.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _proc_status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, in MiB.

    ``VmHWM`` from /proc/self/status (the high-water mark of this process's own memory
    map, which `reset_peak_rss` can reset); where there is no /proc, `ru_maxrss_mb`.
    """
    value = _proc_status_mb("VmHWM")
    return value if math.isfinite(value) else ru_maxrss_mb()


def reset_peak_rss() -> bool:
    """Resets ``VmHWM`` to the current RSS (Linux >= 4.0), so `peak_rss_mb` measures from now.

    Returns False where that is not possible (then the peak includes everything before).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    """Current resident set size in MiB (from /proc; NaN where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError, IndexError):
        return float("nan")


# ---------------------------------------------------------------- child processes


def emit_result(payload: Mapping[str, Any]) -> None:
    """Prints a child's result as one marked JSON line on stdout (read by `run_child`)."""
    print(RESULT_MARKER + json.dumps(payload, default=_json_default), flush=True)


def run_child(argv: Sequence[str], *, timeout: float = 900.0, env: Mapping[str, str] | None = None) -> dict:
    """Runs ``python <argv...>`` with this interpreter and returns the JSON it emitted.

    On a crash, a timeout or a missing result, returns ``{"error": ...}`` with the tail
    of the child's stderr, so the caller can report it instead of hiding it.
    """
    cmd = [sys.executable, *map(str, argv)]
    child_env = dict(os.environ)
    child_env.update(env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s: {' '.join(cmd)}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    return {"error": f"exit code {proc.returncode}, no result; stderr tail:\n{tail}"}


# ---------------------------------------------------------------- machine facts


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS, Python and (if imported) TensorFlow facts, plus the load average."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        info["tensorflow"] = getattr(tf, "__version__", "?")
        try:
            info["gpus"] = len(tf.config.list_physical_devices("GPU"))
        except Exception:  # pragma: no cover
            info["gpus"] = None
    for name in ("tf_keras", "tensorflow_recommenders", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            info[name] = getattr(mod, "__version__", "?")
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_available_gb() -> float | None:
    """MemAvailable from /proc/meminfo in GB (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0 / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024.0 / 1024.0, 1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- output


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """Formats a number for a table; missing values as an em dash.

    >>> fmt(1.23456), fmt(float("nan")), fmt(None), fmt(1.5, 3, "x")
    ('1.23', '—', '—', '1.500x')
    """
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}{suffix}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text), columns padded to equal width.

    >>> print(format_table(["a", "bb"], [[1, "x"]]))
    | a | bb |
    |---|----|
    | 1 | x  |
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_clean(obj: Any) -> Any:
    # JSON has no NaN/Infinity: write null instead, so any JSON reader can load the file.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _json_clean(obj.tolist())
    return obj


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` as indented JSON (NaN as null), creating parent directories."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_json_clean(payload), f, indent=2, default=_json_default)
        f.write("\n")

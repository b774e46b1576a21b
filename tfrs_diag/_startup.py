"""A quiet start for the ``tfrs-diag`` command: TensorFlow's start-up lines kept off the console.

Importing TensorFlow prints native log lines (no CUDA driver, oneDNN, CPU instructions,
absl's "before InitializeLog" warning) that ``TF_CPP_MIN_LOG_LEVEL`` no longer silences:
absl writes them before it reads any setting. For the console command only, and unless the
user set ``TF_CPP_MIN_LOG_LEVEL`` (then they chose what to see), the import runs with the
process's stderr (file descriptor 2) captured, and whatever is not start-up noise is
written back, so a real error still shows. Library users are never affected.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings

COMMAND = "tfrs-diag"

# Start-up lines of TensorFlow and XLA on machines without a GPU, by their text.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] "
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IWE] \S+\.cc:\d+\] "  # TensorFlow 2.16's format
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|\s*$)")


def is_command() -> bool:
    """Whether this process is the ``tfrs-diag`` console command (or ``python -m tfrs_diag.cli``)."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 in (COMMAND, COMMAND + ".exe", COMMAND + "-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return "-m" in orig and orig[orig.index("-m") + 1:orig.index("-m") + 2] == ["tfrs_diag.cli"]


def not_noise(text: str) -> str:
    """The lines of ``text`` that are not TensorFlow start-up noise.

    >>> not_noise("I0000 00:00:1796188748.509726   30127 cudart_stub.cc:31] Could not find cuda drivers\\n"
    ...           "2026-12-02 06:17:19.753492: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.\\n"
    ...           "Traceback (most recent call last):\\n")
    'Traceback (most recent call last):\\n'
    """
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE.match(line))


def quiet_tensorflow_import() -> None:
    """Imports TensorFlow (and lets it find its devices) with start-up noise held back."""
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # Python-side and later native INFO/WARNING lines
    # Python warnings of TensorFlow, Keras and absl are theirs to fix; the command shows ours (set before
    # the import: google.api_core warns about the Python version while TensorFlow loads).
    for module in ("tensorflow", "keras", "tf_keras", "absl", "tensorboard", "tensorflow_recommenders", "google"):
        warnings.filterwarnings("ignore", module=module)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery prints too (cuInit)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = not_noise(captured.read().decode("utf-8", "replace"))
            if rest:
                sys.stderr.write(rest)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)

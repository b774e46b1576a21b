"""tfrs_diag: training diagnostics for TensorFlow Recommenders and Keras.

Set `TF_USE_LEGACY_KERAS=1` before importing TensorFlow (TFRS needs Keras 2).

>>> import tfrs_diag
>>> cb = tfrs_diag.callbacks.GradientStatistics(log_dir=tmp_log_dir)  # doctest: +SKIP
>>> model.fit(data, callbacks=[cb])                                    # doctest: +SKIP
"""

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:
    # TFRS needs Keras 2; when tfrs_diag is imported before TensorFlow and the user has
    # not chosen, choose tf-keras. An explicit TF_USE_LEGACY_KERAS=0 is respected (and
    # then fails below with the fix in the message).
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
elif getattr(vars(_sys.modules["tensorflow"]).get("keras"), "__dict__", {}).get("_tfll_initialized") is False:
    # TensorFlow is imported but has not resolved `tf.keras` yet (TensorBoard loads the
    # tfrs_diag plugin after importing it): the choice is still open, so make the same one.
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfrs_diag import _startup  # noqa: E402

if _startup.is_command():  # the tfrs-diag console command: TensorFlow's start-up lines held back
    _startup.quiet_tensorflow_import()

from tfrs_diag import _keras  # noqa: E402,F401  (fails early, with the fix, on Keras 3)

__version__ = "0.1.0"

from tfrs_diag import callbacks, datasets, metrics, summary  # noqa: E402
from tfrs_diag.capture import GradientCapture  # noqa: E402
from tfrs_diag import explain, layers  # noqa: E402
from tfrs_diag.evaluation import EvaluationResult, TopKEvaluator, evaluate  # noqa: E402

__all__ = ["callbacks", "datasets", "explain", "layers", "metrics", "summary", "evaluate",
           "EvaluationResult", "GradientCapture", "TopKEvaluator", "__version__"]

"""Resolves which Keras `tf.keras` is, and fails early when it is the wrong one.

TensorFlow Recommenders 0.7 requires Keras 2 (the `tf-keras` package). TensorFlow 2.16+
ships Keras 3 as `tf.keras` unless `TF_USE_LEGACY_KERAS=1` is set *before* TensorFlow is
imported, so this is the one place that checks it and says how to fix it.
"""

from __future__ import annotations

import os

LEGACY_KERAS_HINT = (
    "tfrs_diag needs Keras 2 (the tf-keras package), which TensorFlow Recommenders "
    "requires. Set the environment variable TF_USE_LEGACY_KERAS=1 before TensorFlow is "
    "imported (e.g. `export TF_USE_LEGACY_KERAS=1`, or "
    "`os.environ['TF_USE_LEGACY_KERAS'] = '1'` at the very top of your script) and "
    "install tf-keras matching your TensorFlow version (`pip install tf-keras==<tf version>`)."
)


class KerasVersionError(ImportError):
    """Raised when `tf.keras` is Keras 3, which TFRS (and so tfrs_diag) cannot use."""


def keras_flavor(tf_module) -> str:
    """Returns "tf_keras" when `tf.keras` is Keras 2 (tf-keras), else "keras3"."""
    try:
        model_module = tf_module.keras.Model.__module__
    except Exception:  # pragma: no cover - broken installs
        return "unknown"
    return "tf_keras" if model_module.startswith("tf_keras") else "keras3"


def resolve():
    """Imports TensorFlow and returns it, checking that `tf.keras` is Keras 2.

    Raises:
      KerasVersionError: `tf.keras` is Keras 3; the message says to set
        `TF_USE_LEGACY_KERAS=1`.
    """
    import tensorflow as tf

    flavor = keras_flavor(tf)
    if flavor != "tf_keras":
        current = os.environ.get("TF_USE_LEGACY_KERAS")
        raise KerasVersionError(
            f"tf.keras is Keras 3 here (TF_USE_LEGACY_KERAS={current!r}). " + LEGACY_KERAS_HINT
        )
    return tf


tf = resolve()
keras = tf.keras

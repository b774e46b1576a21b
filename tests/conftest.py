"""Test set-up: Keras 2 for TFRS, two logical CPUs for MirroredStrategy tests."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must run before TensorFlow initialises its devices; logical CPUs stand in for GPUs.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # pragma: no cover - devices already initialised by an import
    pass

REPO = pathlib.Path(__file__).resolve().parents[1]


def movielens_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TFRS_DIAG_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "movielens-100k"))


@pytest.fixture
def movielens_path() -> pathlib.Path:
    path = movielens_dir()
    if not (path / "u.data").exists():
        pytest.skip(f"MovieLens-100k not found at {path} (set TFRS_DIAG_MOVIELENS_DIR)")
    return path


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over two logical CPUs for the whole session.

    Two strategies in one process hand out the same collective instance keys, and
    TensorFlow then aborts with "Collective instance ... expected type" errors.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

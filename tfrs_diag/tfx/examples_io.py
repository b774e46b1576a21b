"""Reading the examples TFX writes: TFRecord files of `tf.Example`, one folder per split."""

from __future__ import annotations

import glob
import os
from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf

_KINDS = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}


def split_files(uri: str, split: str) -> list[str]:
    """The TFRecord files of one split of an `Examples` artifact (``uri/Split-<split>/*``).

    ``uri`` may also be the split folder itself, or one file.
    """
    if os.path.isfile(uri):
        return [uri]
    folder = os.path.join(uri, f"Split-{split}")
    if not os.path.isdir(folder):
        folder = uri
    files = sorted(f for f in glob.glob(os.path.join(folder, "*")) if os.path.isfile(f))
    if not files:
        present = sorted(d[len("Split-"):] for d in os.listdir(uri) if d.startswith("Split-")) if os.path.isdir(uri) else []
        raise ValueError(f"split={split!r}: no TFRecord files under {uri!r}"
                         + (f"; its splits are {present}" if present else "; pass an Examples artifact's URI"))
    return files


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def _spec(first: bytes, feature_names: Sequence[str]) -> dict:
    """A parsing spec read off the first record: each named feature's kind and length."""
    example = tf.train.Example.FromString(first)
    spec = {}
    for name in feature_names:
        if name not in example.features.feature:
            raise ValueError(f"feature {name!r} is not in the examples; they hold "
                             f"{sorted(example.features.feature)} (check the feature-name parameters)")
        feature = example.features.feature[name]
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value
        # CsvExampleGen writes one value per column: read those as scalars.
        shape = [] if len(values) == 1 else [len(values)]
        spec[name] = tf.io.FixedLenFeature(shape, _KINDS[kind])
    return spec


def read_examples(uri: str, feature_names: Sequence[str], split: str = "eval") -> dict[str, np.ndarray]:
    """Reads ``feature_names`` from one split of TFRecord `tf.Example` files into numpy arrays.

    Args:
      uri: an `Examples` artifact's URI (with ``Split-<name>`` folders, as ExampleGen writes
        them), a split folder, or one file; ``.gz`` files are read as GZIP.
      feature_names: the features to read; their types and lengths come from the first
        record (bytes become ``str`` arrays).
      split: the split to read.

    Returns:
      ``{name: array}``, one row per example.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "data.tfrecord")
    >>> with tf.io.TFRecordWriter(path) as w:
    ...     for u, i in [("u1", 3), ("u2", 5)]:
    ...         w.write(tf.train.Example(features=tf.train.Features(feature={
    ...             "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[u.encode()])),
    ...             "item": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))})).SerializeToString())
    >>> read_examples(path, ["user_id", "item"])["user_id"].tolist()
    ['u1', 'u2']
    """
    feature_names = [feature_names] if isinstance(feature_names, str) else list(dict.fromkeys(feature_names))
    files = split_files(uri, split)
    compression = _compression(files[0])
    records = tf.data.TFRecordDataset(files, compression_type=compression)
    first = next(iter(records.take(1)), None)
    if first is None:
        raise ValueError(f"split={split!r}: the files under {uri!r} hold no examples")
    spec = _spec(first.numpy(), feature_names)
    columns: dict[str, list] = {name: [] for name in feature_names}
    for batch in records.batch(4096).map(lambda x: tf.io.parse_example(x, spec)):
        for name in feature_names:
            columns[name].append(batch[name].numpy())
    out = {}
    for name, parts in columns.items():
        array = np.concatenate(parts)
        out[name] = array.astype(str) if array.dtype == object else array
    return out


def _feature(value) -> tf.train.Feature:
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode() if isinstance(value, str) else value]))
    if isinstance(value, (float, np.floating)):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def write_examples(features: dict[str, np.ndarray], uri: str, split: str) -> str:
    """Writes a feature dict of 1-D arrays as ``uri/Split-<split>/data.tfrecord.gz``, the
    layout ExampleGen writes (for tests and for data made outside a pipeline).

    >>> import tempfile
    >>> uri = tempfile.mkdtemp()
    >>> _ = write_examples({"user_id": np.array(["u1"]), "rating": np.array([4.5])}, uri, "eval")
    >>> read_examples(uri, ["rating"])["rating"].tolist()
    [4.5]
    """
    folder = os.path.join(uri, f"Split-{split}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "data.tfrecord.gz")
    columns = {name: np.asarray(v).tolist() for name, v in features.items()}
    rows = len(next(iter(columns.values()))) if columns else 0
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(rows):
            example = tf.train.Example(features=tf.train.Features(
                feature={name: _feature(values[i]) for name, values in columns.items()}))
            writer.write(example.SerializeToString())
    return path

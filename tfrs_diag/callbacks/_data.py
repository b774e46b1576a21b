"""The data a callback is given: checked, and its first examples taken as one batch of tensors."""

from __future__ import annotations

import collections.abc
from typing import Mapping

import numpy as np

from tfrs_diag._keras import tf


def leaves(x) -> list:
    return tf.nest.flatten(x)


def num_examples(example) -> int:
    return int(leaves(example)[0].shape[0])


def head(example, n: int):
    return tf.nest.map_structure(lambda t: t[:n], example)


def is_batched(element_spec) -> bool:
    """Whether a dataset's elements are batches: every component has a leading axis, of one size.

    Static sizes count too: ``batch(n, drop_remainder=True)`` (what TPUs need) gives
    ``[n, ...]`` shapes, not ``[None, ...]``. A scalar component means one example per
    element. Unbatched elements whose every component is a vector of one length look
    like batches; such data should be passed batched.
    """
    shapes = [s.shape for s in tf.nest.flatten(element_spec) if hasattr(s, "shape")]
    if not shapes or any(sh.rank is None or sh.rank == 0 for sh in shapes):
        return False
    return len({sh[0] for sh in shapes} - {None}) <= 1


def check_rereadable(data, argument: str) -> None:
    """Rejects data that can be read only once (a generator, an iterator).

    ``validation_data`` is evaluated at every epoch end; a probe would take its first
    examples out of a stream that may also feed `fit`, and its items may be examples or
    batches. A `tf.data.Dataset` (also one made with ``from_generator``) is re-readable.
    """
    if data is None or isinstance(data, (tf.data.Dataset, Mapping, tuple, list, np.ndarray, tf.Tensor)):
        return
    if isinstance(data, (collections.abc.Iterator, tf.data.Iterator)):
        when = "at every epoch end" if argument == "validation_data" else "and would consume it"
        raise ValueError(
            f"{argument} is a {type(data).__name__}, which can be read only once, and the monitor reads it {when}. "
            "Pass arrays (a feature dict or an (x, y) tuple) or a tf.data.Dataset, e.g. "
            "tf.data.Dataset.from_generator(make_generator, output_signature=...), which re-runs the generator.")


def take_examples(data, size: int, argument: str):
    """The first ``size`` examples of ``data`` as a structure of tensors (one batch)."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        ds = data.unbatch() if is_batched(data.element_spec) else data
        example = next(iter(ds.take(size).batch(size)), None)
    else:
        if isinstance(data, list):
            data = tuple(data)
        try:
            example = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a)[:size], data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{argument} must be a feature dict, an (x, y) tuple of arrays or a tf.data.Dataset; "
                             f"converting it to tensors failed: {e}") from None
    if example is None or not leaves(example) or num_examples(example) == 0:
        raise ValueError(f"{argument} holds no examples; pass at least 2 examples (e.g. the first few hundred "
                         "rows of the test split), or leave it out (None).")
    sizes = {int(t.shape[0]) for t in leaves(example)}
    if len(sizes) != 1:
        raise ValueError(f"all arrays of {argument} must have the same number of rows, got {sorted(sizes)}")
    return example

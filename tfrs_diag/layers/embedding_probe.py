"""`EmbeddingProbe`: an `Embedding` that counts, in-graph, how often each row is looked up."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from tfrs_diag._keras import tf
from tfrs_diag.summary import workers

_state = threading.local()


@contextlib.contextmanager
def counting_paused() -> Iterator[None]:
    """Calls (and traces) inside this block do not count lookups (used by the monitor's probes)."""
    before = getattr(_state, "paused", False)
    _state.paused = True
    try:
        yield
    finally:
        _state.paused = before


class EmbeddingProbe(tf.keras.layers.Layer):
    """Wraps an `Embedding` layer and keeps per-row usage counts in a non-trainable variable.

    Drop-in inside a TFRS tower: it returns exactly what the wrapped embedding returns,
    and adds one ``scatter_add`` of ones on the looked-up ids per call (no host
    round-trip, so it works under ``jit_compile=True`` on integer-id models).
    `tfrs_diag.callbacks.OverfittingMonitor` finds every probe in the model and reports,
    each epoch, dead rows, row norms by popularity bucket (memorisation of rare rows)
    and the table's information abundance (collapse).

    Counting: every call with ``training`` not explicitly False counts. TFRS models call
    their towers without a ``training`` argument, so their evaluation passes count too:
    ``usage_counts`` measures lookups, and a row with count 0 was never looked up at all.
    The monitor's own probe evaluations do not count (`counting_paused`).

    Args:
      embedding: the `tf.keras.layers.Embedding` to wrap (built or not).

    Example:

    >>> from tfrs_diag.layers import EmbeddingProbe
    >>> tower = tf.keras.Sequential([
    ...     tf.keras.layers.StringLookup(vocabulary=["a", "b", "c"], mask_token=None),
    ...     EmbeddingProbe(tf.keras.layers.Embedding(4, 8))])
    >>> _ = tower(tf.constant(["a", "a", "c", "zzz"]))
    >>> tower.layers[1].usage_counts.numpy().tolist()   # row 0 is the OOV row
    [1.0, 2.0, 0.0, 1.0]
    """

    def __init__(self, embedding: tf.keras.layers.Embedding, **kwargs):
        if not isinstance(embedding, tf.keras.layers.Embedding):
            raise TypeError(
                f"embedding must be a tf.keras.layers.Embedding, got {type(embedding).__name__}; wrap the "
                "Embedding itself, e.g. EmbeddingProbe(tf.keras.layers.Embedding(vocab_size, dim)).")
        kwargs.setdefault("name", f"{embedding.name}_probe")
        super().__init__(**kwargs)
        self.embedding = embedding
        self.input_dim = int(embedding.input_dim)
        self.output_dim = int(embedding.output_dim)
        self.supports_masking = embedding.supports_masking

    def build(self, input_shape):
        if not self.embedding.built:
            self.embedding.build(input_shape)
        # float32: exact up to 2**24 lookups per row, and scatter_add of float32 compiles
        # everywhere (XLA, TPU); the monitor only needs zero / order / ratios.
        self.usage_counts = self.add_weight(
            name="usage_counts", shape=(self.input_dim,), dtype=tf.float32,
            initializer="zeros", trainable=False,
            # Under tf.distribute each replica counts its own lookups; reads sum them.
            synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM)
        super().build(input_shape)

    @property
    def embeddings(self) -> tf.Variable:
        """The wrapped table (``[input_dim, output_dim]``)."""
        return self.embedding.embeddings

    def call(self, inputs, training=None):
        if training is not False and not getattr(_state, "paused", False):
            ids = inputs.flat_values if isinstance(inputs, tf.RaggedTensor) else inputs
            if ids.dtype not in (tf.int32, tf.int64):
                ids = tf.cast(ids, tf.int32)
            # One op: the raw scatter takes ids of any shape and a scalar update. On `.handle`,
            # because under tf.distribute that is this replica's own copy of the ON_READ
            # variable (whose scatter_add method is not implemented).
            handle = self._counts_handle()
            if handle is not None:
                tf.raw_ops.ResourceScatterAdd(resource=handle, indices=ids, updates=tf.constant(1.0, tf.float32))
        return self.embedding(inputs)

    def _counts_handle(self):
        """This replica's copy of the counts; outside a replica (a mirrored model's tower
        called in cross-replica context: a candidates ``dataset.map(tower)``, a
        BruteForce index, eager calls after fit) the first copy, which the SUM read
        adds like any other, so every lookup counts once. With several workers every
        worker makes that cross-replica call: only the chief counts it (None elsewhere)."""
        counts = self.usage_counts
        try:
            return counts.handle
        except ValueError:  # DistributedVariable.handle outside a replica context
            if not workers.is_chief(counts.distribute_strategy):
                return None
            return counts.values[0].handle

    def compute_mask(self, inputs, mask=None):
        return self.embedding.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        return self.embedding.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["embedding"] = tf.keras.layers.serialize(self.embedding)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["embedding"] = tf.keras.layers.deserialize(config["embedding"])
        return cls(**config)

"""`ReRanker`: the base of the re-ranking and exploration layers, and their shared helpers.

A re-ranker reads one query batch's retrieved pool (``N`` candidates per query, from a
TFRS top-K index or the evaluation's search) and picks ``k`` of them, in order. It
returns **positions into the pool** ([B, k] int32), so the caller gathers whatever it
holds per pool slot (identifiers, scores). Every layer is batched over queries (a
`tf.while_loop` over the ``k`` slots where the algorithm is greedy), keeps its knob in a
non-trainable variable (a sweep assigns it without retracing; a SavedModel keeps it),
and uses only stateless random ops seeded from ``seed`` and a call counter.

The inputs are one dict, so that Keras traces and saves the layer like any other:

- ``"scores"``: [B, N] relevance, higher is better (``-inf`` marks an excluded slot);
- ``"embeddings"``: [B, N, d] the pool's item embeddings (MMR on cosine, DPP);
- ``"groups"``: [B, N] int item group codes (MMR on categories, calibration);
- ``"is_tail"``: [B, N] bool, the long-tail items (epsilon-greedy).
"""

from __future__ import annotations

from typing import Mapping

from tfrs_diag._keras import tf

NEG_INF = float("-inf")


class ReRanker(tf.keras.layers.Layer):
    """Base class: ``layer(inputs, k=None) -> [B, k]`` positions into the pool.

    Subclasses set `knob` (the name of their trade-off parameter), `requires` (the input
    keys they read) and implement ``_rerank(inputs, k)``.

    Args:
      k: default list length (``call(k=...)`` overrides it).
      knob_value: initial value of the knob.
    """

    knob: str = ""
    requires: tuple[str, ...] = ("scores",)

    def __init__(self, k: int = 10, knob_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if int(k) < 1:
            raise ValueError(f"k must be a positive list length, got {k}")
        self.k = int(k)
        self._check_knob(float(knob_value))
        self._knob_variable = self.add_weight(
            name=self.knob or "knob", shape=(), dtype=tf.float32, trainable=False,
            initializer=tf.keras.initializers.Constant(float(knob_value)))

    # -- the knob
    @property
    def knob_value(self) -> float:
        """The current value of the trade-off knob."""
        return float(self._knob_variable.numpy())

    def set_knob(self, value: float) -> None:
        """Assigns the knob (no retracing: traced calls read the variable)."""
        self._check_knob(float(value))
        self._knob_variable.assign(float(value))

    def _check_knob(self, value: float) -> None:
        """Subclasses raise ``ValueError`` naming the knob when ``value`` is out of range."""

    # -- calling
    def call(self, inputs: Mapping[str, tf.Tensor], k: int | None = None) -> tf.Tensor:
        if not isinstance(inputs, Mapping) or "scores" not in inputs:
            raise ValueError(f"{type(self).__name__}: inputs must be a dict with 'scores' ([B, N]) and "
                             f"{', '.join(repr(r) for r in self.requires if r != 'scores') or 'nothing else'}")
        missing = [r for r in self.requires if inputs.get(r) is None]
        if missing:
            raise ValueError(f"{type(self).__name__}: inputs lack {missing}; pass them in the inputs dict "
                             "(ReRankedTopK gathers them when its index() is given them)")
        k = self.k if k is None else int(k)
        scores = tf.cast(inputs["scores"], tf.float32)
        n = scores.shape[-1]
        if n is not None and k > n:
            raise ValueError(f"k={k} is larger than the pool ({n} candidates per query); retrieve a larger pool")
        return tf.cast(self._rerank({**inputs, "scores": scores}, k), tf.int32)

    def _rerank(self, inputs: Mapping[str, tf.Tensor], k: int) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "knob_value": self.knob_value}


def unit_rows(embeddings: tf.Tensor) -> tf.Tensor:
    """Rows scaled to unit length (zero rows stay zero), for cosine similarity."""
    return tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=-1)


def masked(values: tf.Tensor, taken: tf.Tensor) -> tf.Tensor:
    """``values`` with taken slots at the lowest float (so an argmax never picks them again).

    Untaken slots whose value is not finite (an excluded item's ``-inf`` score, NaN) get
    half the lowest float instead: they lose to every real candidate, yet beat the taken
    slots when the pool has fewer real candidates than ``k``. (Not ``-inf`` for taken
    slots: TF's CPU argmax returns index 0 when no entry exceeds the lowest float.)
    """
    lowest = tf.constant(values.dtype.min, values.dtype)
    values = tf.where(tf.math.is_finite(values), values, lowest / 2)
    return tf.where(taken, lowest, values)


def greedy_select(k: int, init_state, pick_fn) -> tf.Tensor:
    """Runs ``k`` greedy steps batched over queries; returns the [B, k] picks.

    ``pick_fn(t, taken, state) -> (pick [B] int32, state)``: ``taken`` is the [B, N] bool
    mask of the slots picked so far. One `tf.while_loop` over slots (XLA-compatible),
    never a loop over queries.
    """
    taken0 = tf.zeros_like(init_state["scores"], tf.bool)
    picks0 = tf.TensorArray(tf.int32, size=k)

    def body(t, taken, picks, state):
        pick, state = pick_fn(t, taken, state)
        taken = tf.logical_or(taken, tf.one_hot(pick, tf.shape(taken)[1], on_value=True, off_value=False))
        return t + 1, taken, picks.write(t, pick), state

    _, _, picks, _ = tf.while_loop(lambda t, *_: t < k, body, (tf.constant(0), taken0, picks0, init_state))
    return tf.transpose(picks.stack())


def stateless_seed(seed: int, counter: tf.Variable) -> tf.Tensor:
    """A fresh stateless seed per call: reproducible from ``seed`` and the call count."""
    step = counter.assign_add(1)
    return tf.stack([tf.constant(int(seed), tf.int64), tf.cast(step, tf.int64)])

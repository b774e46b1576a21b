"""Exploration layers: `EpsilonGreedy` long-tail slot replacement and `Boltzmann` sampling.

Both draw stateless random numbers from ``(seed, call count)``: two layers built with
the same seed give the same lists call for call, and a SavedModel keeps the counter.
Under XLA (``jit_compile=True``) the stateless kernels draw other numbers than on the
CPU kernels: still seeded and reproducible, with the same distribution.
"""

from __future__ import annotations

from tfrs_diag._keras import tf
from tfrs_diag.layers.rerank import NEG_INF, ReRanker, stateless_seed


class _Seeded(ReRanker):
    def __init__(self, k: int, knob_value: float, seed: int, **kwargs):
        super().__init__(k=k, knob_value=knob_value, **kwargs)
        self.seed = int(seed)
        self._calls = self.add_weight(name="calls", shape=(), dtype=tf.int64, trainable=False,
                                      initializer="zeros")

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


class EpsilonGreedy(_Seeded):
    """Each of the top-k slots is, with probability epsilon, given to a random long-tail item.

    The replacement items are drawn uniformly, without replacement, from the pool's
    long-tail items (input ``"is_tail"``) that are not in the top-k already, so a list
    never repeats an item; replaced slots keep their rank. A slot's chance of holding a
    tail item is therefore ``epsilon + (1 - epsilon) * P(the top-k item there is tail)``
    while the pool has tail items left. Draw from the whole catalog's tail by retrieving
    the whole catalog as the pool.

    Args:
      epsilon: replacement probability in [0, 1] (the knob, ``"epsilon"``).
      k: default list length.
      seed: the random seed.

    >>> eg = EpsilonGreedy(epsilon=1.0, k=2, seed=0)
    >>> out = eg({"scores": tf.constant([[3.0, 2.0, 1.0, 0.0]]),
    ...           "is_tail": tf.constant([[False, False, True, True]])})
    >>> sorted(out.numpy()[0].tolist())   # both slots go to the two tail items
    [2, 3]
    """

    knob = "epsilon"
    requires = ("scores", "is_tail")

    def __init__(self, epsilon: float = 0.1, k: int = 10, seed: int = 0, **kwargs):
        kwargs.pop("knob_value", None)
        super().__init__(k=k, knob_value=epsilon, seed=seed, **kwargs)

    def _check_knob(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must be a probability in [0, 1], got {value}")

    def _rerank(self, inputs, k):
        scores = inputs["scores"]
        n = tf.shape(scores)[1]
        _, top = tf.math.top_k(scores, k=k)
        in_top = tf.reduce_any(tf.one_hot(top, n, on_value=True, off_value=False), axis=1)
        pool = tf.logical_and(tf.cast(inputs["is_tail"], tf.bool), tf.math.is_finite(scores))
        pool = tf.logical_and(pool, tf.logical_not(in_top))
        seed = stateless_seed(self.seed, self._calls)
        keys = tf.random.stateless_uniform(tf.shape(scores), seed=seed, alg="philox")
        # Uniform sampling without replacement: the k largest random keys over the pool.
        pool_keys, tail = tf.math.top_k(tf.where(pool, keys, -1.0), k=k)
        coin = tf.random.stateless_uniform(tf.shape(top), seed=seed + tf.constant([0, 1 << 40], tf.int64),
                                         alg="philox")
        replace = tf.logical_and(coin < self._knob_variable, pool_keys >= 0.0)
        return tf.where(replace, tail, top)


class Boltzmann(_Seeded):
    """Samples the k slots without replacement from ``softmax(s / temperature)`` over the pool.

    Gumbel-top-k: the k largest ``s_i / T + G_i`` (``G_i`` standard Gumbel) are an
    ordered sample without replacement, so slot 1 is item i with probability
    ``softmax(s / T)_i`` exactly. ``T -> 0`` gives the plain top-K, large ``T`` a uniform
    draw over the pool; excluded slots (``-inf``) are never drawn.

    Args:
      temperature: the softmax temperature, > 0 (the knob, ``"temperature"``).
      k: default list length.
      seed: the random seed.

    >>> b = Boltzmann(temperature=1e-3, k=2, seed=0)
    >>> b({"scores": tf.constant([[0.1, 3.0, 2.0]])}).numpy().tolist()   # T near 0: the top-K
    [[1, 2]]
    """

    knob = "temperature"

    def __init__(self, temperature: float = 1.0, k: int = 10, seed: int = 0, **kwargs):
        kwargs.pop("knob_value", None)
        super().__init__(k=k, knob_value=temperature, seed=seed, **kwargs)

    def _check_knob(self, value: float) -> None:
        if not value > 0.0:
            raise ValueError(f"temperature must be > 0 (near 0 = plain top-K), got {value}")

    def _rerank(self, inputs, k):
        scores = inputs["scores"]
        u = tf.random.stateless_uniform(tf.shape(scores), seed=stateless_seed(self.seed, self._calls),
                                        minval=1e-12, maxval=1.0, alg="philox")
        gumbel = -tf.math.log(-tf.math.log(u))
        keys = tf.where(tf.math.is_finite(scores), scores / self._knob_variable + gumbel, NEG_INF)
        return tf.math.top_k(keys, k=k).indices

"""`DPP`: greedy MAP inference of a determinantal point process (Chen et al. 2018), batched."""

from __future__ import annotations

from tfrs_diag._keras import tf
from tfrs_diag.layers.rerank import ReRanker, greedy_select, masked, unit_rows


class DPP(ReRanker):
    """Greedy MAP DPP over the kernel ``L = Diag(r) S Diag(r)``, O(N k^2) per query.

    As in Chen, Zhang & Zhou (NeurIPS 2018, Algorithm 1 and section 5): ``S`` is the
    cosine similarity of the pool's item embeddings, the quality is
    ``r_i = exp(alpha * s_i)`` with ``alpha = theta / (2 (1 - theta))``, and each slot
    takes the item that most increases ``log det L_Y``, kept incrementally by a Cholesky
    row per pick (``d_i^2`` is the item's remaining marginal gain). ``theta`` near 1
    favours relevance, near 0 diversity. Scores are shifted by their per-query maximum
    first (the same factor on every item: the picks do not change, exp cannot overflow).
    When every remaining gain is at most ``epsilon`` (the picked items span the embedding
    space, so at most ``d`` items are picked by the DPP) the remaining slots take the most
    relevant items left, in score order.

    Args:
      theta: relevance weight in [0, 1) (the knob, ``"theta"``).
      k: default list length.
      epsilon: the stopping threshold on ``d_i^2`` (Chen et al.'s epsilon).

    >>> dpp = DPP(theta=0.5, k=2)
    >>> emb = tf.constant([[[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]])
    >>> dpp({"scores": tf.constant([[0.9, 0.85, 0.5]]), "embeddings": emb}).numpy().tolist()
    [[0, 2]]
    """

    knob = "theta"
    requires = ("scores", "embeddings")

    def __init__(self, theta: float = 0.5, k: int = 10, epsilon: float = 1e-6, **kwargs):
        kwargs.pop("knob_value", None)
        super().__init__(k=k, knob_value=theta, **kwargs)
        self.epsilon = float(epsilon)

    def _check_knob(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"theta must lie in [0, 1) (near 1 = relevance, 0 = diversity only), got {value}")

    def _rerank(self, inputs, k):
        scores = inputs["scores"]
        features = unit_rows(inputs["embeddings"])
        finite = tf.math.is_finite(scores)
        alpha = self._knob_variable / (2.0 * (1.0 - self._knob_variable))
        top = tf.reduce_max(tf.where(finite, scores, tf.float32.min), axis=1, keepdims=True)
        quality = tf.where(finite, tf.exp(alpha * (scores - top)), tf.zeros_like(scores))
        n = tf.shape(scores)[1]
        eps = tf.constant(self.epsilon, tf.float32)
        state = {
            "scores": scores,
            "d2": quality * quality * tf.reduce_sum(features * features, axis=-1),  # L_ii
            "c": tf.zeros(tf.stack([tf.shape(scores)[0], k, n])),  # Cholesky rows, [B, k, N]
            "done": tf.zeros([tf.shape(scores)[0]], tf.bool),
        }

        def pick_fn(t, taken, s):
            gains = masked(s["d2"], taken)
            best = tf.argmax(gains, axis=1, output_type=tf.int32)
            done = tf.logical_or(s["done"], tf.reduce_max(gains, axis=1) <= eps)
            by_score = tf.argmax(masked(scores, taken), axis=1, output_type=tf.int32)
            pick = tf.where(done, by_score, best)
            # Chen et al.'s update for the picked j: e_i = (L_ji - <c_j, c_i>) / d_j.
            d_j = tf.sqrt(tf.maximum(tf.gather(s["d2"], pick, batch_dims=1), eps))
            c_j = tf.gather(s["c"], pick, axis=2, batch_dims=1)  # [B, k]
            f_j = tf.gather(features, pick, batch_dims=1)
            q_j = tf.gather(quality, pick, batch_dims=1)
            l_j = q_j[:, None] * quality * tf.einsum("bnd,bd->bn", features, f_j)
            e = (l_j - tf.einsum("bk,bkn->bn", c_j, s["c"])) / d_j[:, None]
            e = tf.where(done[:, None], tf.zeros_like(e), e)  # finished queries keep their state
            row = tf.one_hot(t, k)[None, :, None]
            return pick, {"scores": scores, "d2": s["d2"] - e * e, "c": s["c"] + row * e[:, None, :],
                          "done": done}

        return greedy_select(k, state, pick_fn)

    def get_config(self) -> dict:
        config = super().get_config()
        config["theta"] = config.pop("knob_value")
        return {**config, "epsilon": self.epsilon}

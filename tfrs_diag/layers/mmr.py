"""`MMR`: maximal marginal relevance re-ranking (Carbonell & Goldstein 1998), batched."""

from __future__ import annotations

from tfrs_diag._keras import tf
from tfrs_diag.layers.rerank import ReRanker, greedy_select, masked, unit_rows


class MMR(ReRanker):
    """Greedy MMR: slot t takes ``argmax_i lambda * s_i - (1 - lambda) * max_{j picked} sim(i, j)``.

    ``sim`` is the cosine of the pool's item embeddings (``similarity="cosine"``, input
    ``"embeddings"``) or 1 for two items of the same group and 0 otherwise
    (``similarity="category"``, input ``"groups"``). With nothing picked yet the penalty
    is 0, so slot 1 is the most relevant item; ``lambda=1`` is the plain top-K. The
    scores are used as given: the penalty lies in [-1, 1], so put the scores on a
    comparable scale (e.g. cosine scores of unit embeddings) for lambda to mean the same
    across models. Cost: O(N k d) per query (O(N k) on categories).

    Args:
      lambda_: relevance weight in [0, 1] (the knob, ``"lambda"``).
      k: default list length.
      similarity: ``"cosine"`` or ``"category"``.

    >>> mmr = MMR(lambda_=0.5, k=2)
    >>> emb = tf.constant([[[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]])   # items 0 and 1 are near twins
    >>> mmr({"scores": tf.constant([[0.9, 0.85, 0.5]]), "embeddings": emb}).numpy().tolist()
    [[0, 2]]
    """

    knob = "lambda"

    def __init__(self, lambda_: float = 0.5, k: int = 10, similarity: str = "cosine", **kwargs):
        if similarity not in ("cosine", "category"):
            raise ValueError(f"similarity must be 'cosine' (item embeddings) or 'category' (item groups), "
                             f"got {similarity!r}")
        kwargs.pop("knob_value", None)
        super().__init__(k=k, knob_value=lambda_, **kwargs)
        self.similarity = similarity
        self.requires = ("scores", "embeddings") if similarity == "cosine" else ("scores", "groups")

    def _check_knob(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"lambda_ must lie in [0, 1] (1 = plain top-K, 0 = diversity only), got {value}")

    def _rerank(self, inputs, k):
        scores = inputs["scores"]
        lam = self._knob_variable
        # lambda * -inf would be NaN at lambda = 0: excluded slots stay -inf.
        relevance = tf.where(tf.math.is_finite(scores), lam * scores, scores)
        if self.similarity == "cosine":
            features = unit_rows(inputs["embeddings"])

            def sim_to(pick):
                chosen = tf.gather(features, pick, batch_dims=1)  # [B, d]
                return tf.einsum("bnd,bd->bn", features, chosen)
        else:
            groups = tf.cast(inputs["groups"], tf.int32)

            def sim_to(pick):
                chosen = tf.gather(groups, pick, batch_dims=1)
                return tf.cast(tf.equal(groups, chosen[:, None]), tf.float32)

        def pick_fn(t, taken, state):
            # Before the first pick the penalty is 0, not the -1 floor of max_sim's start.
            penalty = tf.where(t > 0, state["max_sim"], tf.zeros_like(state["max_sim"]))
            pick = tf.argmax(masked(relevance - (1.0 - lam) * penalty, taken), axis=1, output_type=tf.int32)
            return pick, {**state, "max_sim": tf.maximum(state["max_sim"], sim_to(pick))}

        return greedy_select(k, {"scores": scores, "max_sim": tf.fill(tf.shape(scores), -1.0)}, pick_fn)

    def get_config(self) -> dict:
        config = super().get_config()
        config["lambda_"] = config.pop("knob_value")
        return {**config, "similarity": self.similarity}

"""`Calibrated`: re-ranking towards target shares per item group (Steck 2018), batched."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.layers.rerank import ReRanker, greedy_select, masked


class Calibrated(ReRanker):
    """Greedy calibration: slot t takes ``argmax_i (1 - lambda) s_i - lambda KL(p || q~(Y + i))``.

    ``p`` is the target share of each item group (e.g. ``[0.7, 0.3]`` for head and long
    tail), ``q(Y)`` the groups' shares among the items picked so far and
    ``q~ = (1 - a) q + a p`` (``a = smoothing``, Steck's 0.01, keeps KL finite). This is
    the marginal-gain greedy for Steck's objective ``(1 - lambda) sum s - lambda KL``;
    lists count every slot equally. ``lambda=0`` is the plain top-K. Cost: O(N k + G^2 k)
    per query for G groups.

    Args:
      target_shares: [G] non-negative shares of groups 0..G-1 (normalised to sum 1).
      lambda_: calibration weight in [0, 1] (the knob, ``"lambda"``).
      k: default list length.
      smoothing: ``a`` above, in (0, 1).

    >>> cal = Calibrated([0.5, 0.5], lambda_=0.5, k=2)
    >>> cal({"scores": tf.constant([[0.9, 0.8, 0.1]]),
    ...      "groups": tf.constant([[0, 0, 1]])}).numpy().tolist()   # one of each group
    [[0, 2]]
    """

    knob = "lambda"
    requires = ("scores", "groups")

    def __init__(self, target_shares: Sequence[float], lambda_: float = 0.5, k: int = 10,
                 smoothing: float = 0.01, **kwargs):
        shares = np.asarray(target_shares, np.float64).reshape(-1)
        if shares.size == 0 or (shares < 0).any() or not np.isfinite(shares).all() or shares.sum() <= 0:
            raise ValueError(f"target_shares must be non-negative shares of the groups 0..G-1 with a positive sum, "
                             f"got {list(target_shares)}")
        if not 0.0 < smoothing < 1.0:
            raise ValueError(f"smoothing must lie in (0, 1) (Steck uses 0.01), got {smoothing}")
        kwargs.pop("knob_value", None)
        super().__init__(k=k, knob_value=lambda_, **kwargs)
        self.target_shares = (shares / shares.sum()).tolist()
        self.smoothing = float(smoothing)

    def _check_knob(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"lambda_ must lie in [0, 1] (0 = plain top-K, 1 = calibration only), got {value}")

    def _rerank(self, inputs, k):
        scores = inputs["scores"]
        p = tf.constant(self.target_shares, tf.float32)
        num_groups = len(self.target_shares)
        groups = tf.cast(inputs["groups"], tf.int32)
        check = tf.debugging.assert_less(groups, num_groups, message=(
            "Calibrated: an item group code is >= len(target_shares); give a target share to every group"))
        with tf.control_dependencies([check]):
            groups = tf.identity(groups)
        lam, a = self._knob_variable, self.smoothing
        relevance = tf.where(tf.math.is_finite(scores), (1.0 - lam) * scores, scores)
        plogp = tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0))
        eye = tf.eye(num_groups)

        def pick_fn(t, taken, s):
            # Adding an item of group h gives counts + e_h: one KL per group, gathered per item.
            counts = s["counts"][:, None, :] + eye[None]  # [B, h, g]
            q = (1.0 - a) * counts / tf.cast(t + 1, tf.float32) + a * p
            kl = plogp - tf.reduce_sum(p * tf.math.log(q), axis=-1)  # [B, h]
            gain = relevance - lam * tf.gather(kl, groups, batch_dims=1)
            pick = tf.argmax(masked(gain, taken), axis=1, output_type=tf.int32)
            picked_group = tf.gather(groups, pick, batch_dims=1)
            return pick, {**s, "counts": s["counts"] + tf.one_hot(picked_group, num_groups)}

        state = {"scores": scores, "counts": tf.zeros(tf.stack([tf.shape(scores)[0], num_groups]))}
        return greedy_select(k, state, pick_fn)

    def get_config(self) -> dict:
        config = super().get_config()
        config["lambda_"] = config.pop("knob_value")
        return {**config, "target_shares": self.target_shares, "smoothing": self.smoothing}

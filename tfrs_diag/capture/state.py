"""The capture's tf.Variables: what the compiled step writes and the host reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.stats import gradients as G

if TYPE_CHECKING:
    from tfrs_diag.capture.gradients import GradientCapture
    from tfrs_diag.capture.variables import TrackedVariable

# Columns of the per-variable snapshot matrix.
SNAPSHOT_COLUMNS = ("norm", "max_abs", "zero_fraction", "weight_norm", "update_ratio")
# Columns of the per-embedding-table snapshot matrix.
EMBEDDING_COLUMNS = ("unique_rows", "batch_rows", "row_grad_norm_mean", "row_grad_norm_max", "row_update_ratio")

SCOPE = "tfrs_diag_capture"
# An empty slot of the exploding window: above any log10 norm (those are capped at 39).
EMPTY = 1e30


class CaptureState:
    """The capture's tf.Variables (created once, on the first trace)."""

    def __init__(self, tracked: "list[TrackedVariable]", cfg: "GradientCapture", num_replicas: int, weights):
        v_count = len(tracked)
        e_count = sum(t.sparse for t in tracked)
        # ON_READ: each replica writes its own copy with no cross-replica sync (a
        # mirrored write would need a merge_call, which tf.cond branches cannot hold).
        # The values are computed from all-reduced gradients, so every copy is equal
        # and the host reads the first one.
        sync = dict(synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        def var(init, name, dtype=tf.float32):
            return tf.Variable(tf.constant(init, dtype=dtype), trainable=False, name=name, **sync)

        with tf.name_scope(SCOPE):
            # Starts at the optimizer's count (a resumed or second fit continues from it).
            self.step = var(int(cfg._optimizer.iterations.numpy()), "step", tf.int64)
            self.last_sumsq = var(np.zeros([v_count]), "last_sumsq")
            self.nonfinite_first = var(np.full([v_count], -1), "nonfinite_first_step", tf.int64)
            self.nonfinite_count = var(np.zeros([v_count]), "nonfinite_count", tf.int64)
            self.nonfinite_last_step = var(-1, "nonfinite_last_step", tf.int64)
            # log10 global norms of the last steps; empty slots hold a sentinel above any value.
            self.log_norm_window = var(np.full([cfg.exploding_window], EMPTY), "log_norm_window")
            self.overflow_count = var(0, "loss_scale_overflow_steps", tf.int64)
            self.exploding_first = var(np.full([v_count], -1), "exploding_first_step", tf.int64)
            self.exploding_ratio = var(np.zeros([v_count]), "exploding_ratio")
            self.exploding_share = var(np.zeros([v_count]), "exploding_share")
            self.snap_step = var(-1, "snapshot_step", tf.int64)
            self.snap = var(np.zeros([v_count, len(SNAPSHOT_COLUMNS)]), "snapshot")
            self.emb = var(np.zeros([max(e_count, 1), len(EMBEDDING_COLUMNS)]), "embedding_snapshot")
            self.emb_hist = var(np.zeros([max(e_count, 1), len(G.ROW_NORM_LOG10_EDGES) - 1]), "row_norm_hist")
            self.hist_step = var(-1, "histogram_step", tf.int64)
            self.hist = var(np.zeros([v_count, cfg.histogram_bins]), "histogram")
            self.hist_range = var(np.zeros([v_count, 2]), "histogram_range")
            self.prev = {}
            for t, w in zip(tracked, weights):
                if t.update_ratio and not t.sparse:
                    # Starts as the weights before the first step; afterwards refreshed on
                    # the step before each snapshot.
                    self.prev[t.index] = tf.Variable(
                        lambda w=w: tf.cast(w.read_value(), tf.float32), trainable=False, name=f"prev_{t.index}",
                        **sync)
            self.noise = None
            if num_replicas > 1:
                # [EMA of |G|^2 estimate, EMA of tr(Sigma) estimate, updates so far, last B_small]
                self.noise = var(np.zeros([4]), "noise_scale")

"""The in-graph statistics of one step's rare branches: snapshots, histograms, noise scale.

Functions of the attached `GradientCapture` (its state variables and settings), called
while the train step is traced; every one returns a tensor so that it fits a `tf.cond`.
"""

from __future__ import annotations

from tfrs_diag._keras import tf
from tfrs_diag.stats import gradients as G


def update_ratio(update_norm, weight_norm):
    """||dw|| / ||w||; NaN where the weights were all zero (a fresh bias): undefined."""
    return tf.where(weight_norm > 0, update_norm / tf.maximum(weight_norm, 1e-30), float("nan"))


def keep_weights(capture, variables):
    def keep():
        for i, prev in capture.state.prev.items():
            prev.assign(tf.cast(variables[i], tf.float32))
        return tf.constant(True)

    return keep

def sum_of_squares(capture, grad, variable):
    """Squared norm of the (dense equivalent of the) gradient, duplicates summed.

    For `IndexedSlices` also returns the touched rows before the update (ids,
    validity mask, values) for the row update ratio of a snapshot.
    """
    if not isinstance(grad, tf.IndexedSlices):
        return G.sum_of_squares(grad), None
    if capture._xla:
        d = G.deduplicate_rows(grad)
        return G.sum_of_squares(d), (d.indices, d.valid, tf.gather(variable, d.indices))
    ids, summed = G.unique_rows(grad)
    return G.sum_of_squares(summed), (ids, None, tf.gather(variable, ids))

def snapshot(capture, step, grads, dedup, variables, sumsq, touched):
    s, tracked = capture.state, capture.tracked
    grad_norms = tf.unstack(tf.sqrt(sumsq))
    row_ratios, row_norms_now = {}, {}
    for t, v, rows in zip(tracked, variables, touched):
        if rows is None:
            continue
        ids, valid, before = rows
        before = tf.cast(before, tf.float32)
        now = tf.cast(tf.gather(v, ids), tf.float32)
        if valid is not None:  # padded slots of the static-shape deduplication
            mask = tf.reshape(tf.cast(valid, tf.float32), [-1] + [1] * (before.shape.rank - 1))
            now, before = now * mask, before * mask
        # ||dw|| / ||w|| over the rows this step touched, before the update.
        row_ratios[t.index] = update_ratio(G.l2_norm(now - before), G.l2_norm(before))
        row_norms_now[t.index] = G.l2_norm(now)
    cols = []
    for t, g, d, v in zip(tracked, grads, dedup, variables):
        vals = d.values if d is not None else g
        if t.sparse:
            # A dense read of a table after a sparse update copies the whole table
            # (copy-on-read): embeddings report the touched rows' norm.
            w_norm = row_norms_now[t.index]
        else:
            w = tf.cast(v, tf.float32)
            w_norm = G.l2_norm(w)
        if t.index in s.prev:
            prev = s.prev[t.index]
            ratio = update_ratio(G.l2_norm(w - prev), G.l2_norm(prev))
        elif t.sparse:
            ratio = row_ratios[t.index]
        else:
            ratio = tf.constant(float("nan"))
        cols.append(tf.stack([grad_norms[t.index], G.max_abs(vals),
                              G.zero_fraction(d if d is not None else g), w_norm, ratio]))
    s.snap.assign(tf.stack(cols))
    sparse = [t for t in tracked if t.sparse]
    if sparse:
        emb_rows, emb_hists = [], []
        for t in sparse:
            d = dedup[t.index]
            norms = G.row_norms(d)
            validf = tf.cast(d.valid, tf.float32)
            n_unique = tf.cast(d.num_unique, tf.float32)
            emb_rows.append(tf.stack([
                n_unique, tf.cast(tf.shape(grads[t.index].indices)[0], tf.float32),
                tf.reduce_sum(norms * validf) / tf.maximum(n_unique, 1.0),
                tf.reduce_max(norms * validf), row_ratios[t.index]]))
            emb_hists.append(G.log10_histogram(norms, d.valid))
        s.emb.assign(tf.stack(emb_rows))
        s.emb_hist.assign(tf.stack(emb_hists))
    s.snap_step.assign(step)
    return tf.constant(True)

def expected_overflow(capture):
    """True while a dynamic LossScaleOptimizer's scale is above 1 (None otherwise)."""
    opt = capture._optimizer
    if not (getattr(opt, "dynamic", False) and hasattr(opt, "loss_scale")):
        return None
    return tf.convert_to_tensor(opt.loss_scale) > 1.0

def zero_if(flag, g):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(tf.where(flag, tf.zeros_like(g.values), g.values), g.indices, g.dense_shape)
    return tf.where(flag, tf.zeros_like(g), g)

def histograms(capture, step, grads, dedup):
    s, bins = capture.state, capture.histogram_bins
    counts, ranges = [], []
    for g, d in zip(grads, dedup):
        if d is not None:
            values = d.values
            weights = tf.broadcast_to(tf.reshape(tf.cast(d.valid, tf.float32),
                                                 [-1] + [1] * (values.shape.rank - 1)), tf.shape(values))
        else:
            values, weights = tf.cast(g, tf.float32), None
        flat = tf.reshape(values, [-1])
        finite = tf.math.is_finite(flat)
        big = tf.constant(3.0e38)
        lo = tf.reduce_min(tf.where(finite, flat, big))
        hi = tf.reduce_max(tf.where(finite, flat, -big))
        lo, hi = tf.minimum(lo, hi), tf.maximum(lo, hi)
        counts.append(G.histogram_counts(values, lo, hi, bins, weights))
        ranges.append(tf.stack([lo, hi]))
    s.hist.assign(tf.stack(counts))
    s.hist_range.assign(tf.stack(ranges))
    s.hist_step.assign(step)
    return tf.constant(True)

def record_noise(capture, local_grads, big_sumsq):
    s, r = capture.state, capture.num_replicas
    local_sq = tf.add_n([G.sum_of_squares(g) for g in local_grads])
    ctx = tf.distribute.get_replica_context()
    mean_local_sq = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, local_sq)
    small_sq = float(r * r) * mean_local_sq
    big_sq = tf.reduce_sum(big_sumsq)
    batch = getattr(capture._tls, "batch_size", None)
    b = tf.cast(batch, tf.float32) if batch is not None else tf.constant(1.0)
    g2, trace = G.noise_scale_terms(small_sq, big_sq, b, r)
    ok = tf.math.is_finite(g2) & tf.math.is_finite(trace)
    beta = capture.noise_ema
    old = s.noise.read_value()
    upd = tf.stack([beta * old[0] + (1 - beta) * g2, beta * old[1] + (1 - beta) * trace, old[2] + 1.0, b])
    s.noise.assign(tf.where(ok, upd, old))

"""The pure gradient computations against hand-computed and numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag.stats import gradients as G


def _dense_rows(indices, values, num_rows):
    dense = np.zeros((num_rows,) + values.shape[1:], np.float64)
    np.add.at(dense, indices, values)
    return dense


@pytest.mark.parametrize("jit", [False, True])
def test_deduplicated_row_norms_equal_densified_reference(jit):
    rng = np.random.default_rng(1)
    indices = rng.integers(0, 12, size=40)  # many duplicates
    values = rng.normal(size=(40, 5)).astype(np.float32)

    @tf.function(jit_compile=jit)
    def stats(idx, vals):
        rows = G.deduplicate_rows(tf.IndexedSlices(vals, idx, tf.constant([12, 5], tf.int64)))
        return rows.indices, G.row_norms(rows), rows.num_unique, rows.valid, G.sum_of_squares(rows)

    idx, norms, n_unique, valid, sumsq = [t.numpy() for t in stats(tf.constant(indices), tf.constant(values))]
    dense = _dense_rows(indices, values, 12)
    unique = np.unique(indices)
    assert n_unique == len(unique)
    assert valid.sum() == len(unique) and not valid[len(unique):].any()
    np.testing.assert_array_equal(np.sort(idx[valid]), unique)
    np.testing.assert_allclose(norms[valid], np.linalg.norm(dense[idx[valid]], axis=1), rtol=1e-5)
    np.testing.assert_allclose(sumsq, (dense ** 2).sum(), rtol=1e-5)


def test_zero_fraction_and_max_abs_of_sparse_gradient_count_the_untouched_rows():
    g = tf.IndexedSlices(tf.constant([[1.0, 0.0], [-3.0, 0.0]]), tf.constant([2, 2]), tf.constant([5, 2]))
    rows = G.deduplicate_rows(g)
    # Dense equivalent: 10 entries, one non-zero (row 2 = [-2, 0]).
    assert float(G.zero_fraction(rows)) == pytest.approx(0.9)
    assert float(G.max_abs(rows.values)) == pytest.approx(2.0)


def test_histogram_counts_hand_case():
    values = tf.constant([0.0, 0.1, 0.5, 0.99, 1.0, 2.0, -1.0, np.nan])
    counts = G.histogram_counts(values, tf.constant(0.0), tf.constant(1.0), 4).numpy()
    # Buckets [0,.25) [.25,.5) [.5,.75) [.75,1]; out-of-range values clip, NaN is dropped.
    np.testing.assert_array_equal(counts, [3, 0, 1, 3])


def test_log10_histogram_uses_fixed_edges_and_ignores_padding():
    counts = G.log10_histogram(tf.constant([1e-3, 1.0, 5.0, 7.0]), tf.constant([True, True, True, False])).numpy()
    edges = G.ROW_NORM_LOG10_EDGES
    expected = np.histogram(np.log10([1e-3, 1.0, 5.0]), bins=edges)[0]
    np.testing.assert_array_equal(counts, expected)


def test_noise_scale_terms_match_the_paper_formulas():
    small_sq, big_sq, b, r = 9.0, 4.0, 32, 4
    g2, trace = G.noise_scale_terms(tf.constant(small_sq), tf.constant(big_sq), tf.constant(b), r)
    expected = G.numpy_noise_scale(small_sq, big_sq, b, b * r)
    assert float(trace / g2) == pytest.approx(expected, rel=1e-6)
    # Hand computation: |G|^2 = (4*4 - 9)/3 = 7/3; tr = 32*4*(9-4)/3 = 640/3; B = 640/7.
    assert float(g2) == pytest.approx(7 / 3, rel=1e-6)
    assert float(trace) == pytest.approx(640 / 3, rel=1e-6)


def test_noise_scale_recovers_planted_gradient_noise():
    # Per-example gradients g = mu + eps, eps ~ N(0, sigma^2 I): B_simple = d sigma^2 / |mu|^2.
    rng = np.random.default_rng(0)
    d, b, r, sigma = 20, 16, 2, 0.5
    mu = np.full(d, 0.2)
    g2s, traces = [], []
    for _ in range(400):
        per_example = mu + sigma * rng.normal(size=(r, b, d))
        local_means = per_example.mean(axis=1)  # mean gradient of each replica's batch
        small_sq = float(np.mean(np.sum(local_means ** 2, axis=1)))
        big_sq = float(np.sum(local_means.mean(axis=0) ** 2))
        g2, tr = G.noise_scale_terms(tf.constant(small_sq, tf.float32), tf.constant(big_sq, tf.float32), b, r)
        g2s.append(float(g2))
        traces.append(float(tr))
    planted = d * sigma ** 2 / np.sum(mu ** 2)
    assert np.mean(traces) / np.mean(g2s) == pytest.approx(planted, rel=0.15)

"""The tf-explain adapter: dense and image inputs, its limits, and the error without the extra."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrs_diag.explain import tf_explain as adapter_module
from tfrs_diag.explain.tf_explain import TfExplainAdapter


def test_missing_extra_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf_explain", None)
    monkeypatch.setitem(sys.modules, "tf_explain.core", None)
    with pytest.raises(ImportError, match=r"tfrs-diag\[tf-explain\]"):
        TfExplainAdapter(tf.keras.Sequential([tf.keras.layers.Dense(1)]))


@pytest.mark.filterwarnings("ignore:Unsupported model architecture")
def test_dense_inputs_highlight_the_planted_feature():
    pytest.importorskip("tf_explain")
    # Output column 0 depends on feature 3 only (weight 5), column 1 on feature 0.
    inp = tf.keras.Input((6,))
    dense = tf.keras.layers.Dense(2, use_bias=False)
    model = tf.keras.Model(inp, dense(inp))
    kernel = np.zeros((6, 2), np.float32)
    kernel[3, 0], kernel[0, 1] = 5.0, 1.0
    dense.set_weights([kernel])
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    adapter = TfExplainAdapter(model, "vanilla_gradients")
    grid = adapter.explain(x, class_index=0)  # a visualisation (uint8 grid of the 4 examples)
    assert grid.ndim == 2 and grid.shape[1] % 6 == 0 and grid.dtype == np.uint8
    np.testing.assert_allclose(adapter.attribute(x, class_index=0), np.tile(kernel[:, 0], (4, 1)))
    np.testing.assert_allclose(TfExplainAdapter(model, "gradients_inputs").attribute(x, class_index=1),
                               x * kernel[:, 1], rtol=1e-6)
    # tf-explain's "integrated gradients" is the mean gradient (here constant), not IG.
    mean_grad = TfExplainAdapter(model, "integrated_gradients", n_steps=8).attribute(x, class_index=0)
    np.testing.assert_allclose(mean_grad, np.tile(kernel[:, 0], (4, 1)), rtol=1e-6)
    with pytest.raises(ValueError, match="visualisation only"):
        TfExplainAdapter(model, "occlusion_sensitivity", patch_size=1).attribute(x)


def test_image_inputs_and_bad_shapes():
    pytest.importorskip("tf_explain")
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(2, 3, name="conv"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
    images = np.random.default_rng(1).random((2, 8, 8, 1)).astype(np.float32)
    grid = TfExplainAdapter(model, "grad_cam", layer_name="conv").explain(images, class_index=1)
    assert grid.ndim == 3 and grid.dtype == np.uint8
    with pytest.raises(ValueError, match=r"\[n, d\] or images"):
        TfExplainAdapter(model).explain(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="method"):
        TfExplainAdapter(model, method="deep_lift")
    with pytest.raises(ValueError, match="grad_cam"):
        TfExplainAdapter(tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)]),
                         "grad_cam").explain(np.zeros((1, 3)))
    assert set(adapter_module.TF_EXPLAIN_METHODS) >= {"vanilla_gradients", "grad_cam", "integrated_gradients"}

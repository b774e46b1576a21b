"""Hands dense or image inputs to tf-explain (optional extra: ``pip install 'tfrs-diag[tf-explain]'``).

tf-explain 0.3.1 (its last release, 2021) explains image classifiers: it takes a 4-D
batch ``[n, height, width, channels]``, a Keras model and a class index, and returns a
**visualisation grid** (uint8 heatmaps of all examples tiled into one image), not
attribution values. Limits, which is why the feature-dict explainers of
`tfrs_diag.explain` exist:

- inputs must be one dense tensor: no feature dicts, no string ids, no lookups
  (shap#1945-like cases): for TFRS models use `Shapley`, `IntegratedGradients`, ... ;
- its ``IntegratedGradients`` returns the average gradient along the path, not
  (input - baseline) times it, so it has no completeness property (use ours);
- ``grad_cam`` needs a convolutional layer (4-D activations);
- its grids are visualisations: ``vanilla_gradients`` standardises the heatmap and casts
  it to uint8, so negative standardised values wrap around (in 0.3.1 the largest
  gradient can come out darker than zero gradients); `TfExplainAdapter.attribute`
  returns the raw values of the gradient methods instead;
- importing it needs OpenCV (``opencv-python-headless``).

This adapter accepts ``[n, d]`` dense inputs too: it wraps the model so that tf-explain
sees ``[n, 1, d, 1]`` "images", and the returned grid shows one row of d cells per example.

>>> adapter = TfExplainAdapter(model, method="vanilla_gradients")   # doctest: +SKIP
>>> grid = adapter.explain(x_dense, class_index=0)                   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from tfrs_diag._keras import tf

#: Our method names -> tf-explain classes.
TF_EXPLAIN_METHODS = {
    "vanilla_gradients": "VanillaGradients",
    "gradients_inputs": "GradientsInputs",
    "smooth_grad": "SmoothGrad",
    "integrated_gradients": "IntegratedGradients",
    "occlusion_sensitivity": "OcclusionSensitivity",
    "grad_cam": "GradCAM",
}


def _tf_explain_core():
    try:
        return importlib.import_module("tf_explain.core")
    except ImportError as e:  # the package, or OpenCV under it
        raise ImportError(
            f"tfrs_diag.explain.tf_explain needs tf-explain and OpenCV ({e}); install them with "
            "pip install 'tfrs-diag[tf-explain]', or use the built-in explainers (tfrs_diag.explain.Shapley, "
            "IntegratedGradients, ...), which also handle feature dicts") from None


class TfExplainAdapter:
    """Runs a tf-explain method on a Keras model with one dense or image input.

    Args:
      model: a `tf.keras.Model` taking one tensor ``[n, d]`` or ``[n, h, w, c]``.
      method: a key of `TF_EXPLAIN_METHODS`.
      **method_kwargs: passed to the tf-explain ``explain`` call (e.g. ``n_steps``,
        ``patch_size``, ``layer_name``).
    """

    def __init__(self, model, method: str = "vanilla_gradients", **method_kwargs: Any):
        if method not in TF_EXPLAIN_METHODS:
            raise ValueError(f"method must be one of {sorted(TF_EXPLAIN_METHODS)}, got {method!r}")
        if isinstance(getattr(model, "input", None), (dict, list)) or isinstance(model, dict):
            raise ValueError("tf-explain takes a model with one tensor input; for feature-dict (TFRS) models use "
                             "tfrs_diag.explain.Shapley or IntegratedGradients")
        self.model = model
        self.method = method
        self.method_kwargs = method_kwargs
        self._explainer = getattr(_tf_explain_core(), TF_EXPLAIN_METHODS[method])()

    def _as_images(self, inputs: np.ndarray):
        if inputs.ndim == 4:
            return inputs, self.model
        if inputs.ndim == 2:
            d = inputs.shape[1]
            image = tf.keras.Input((1, d, 1))
            wrapped = tf.keras.Model(image, self.model(tf.keras.layers.Reshape((d,))(image)))
            if self.method == "grad_cam":
                raise ValueError("grad_cam needs a convolutional model on image inputs; for dense inputs use "
                                 "'vanilla_gradients', 'gradients_inputs', 'smooth_grad' or 'occlusion_sensitivity'")
            return inputs.reshape(inputs.shape[0], 1, d, 1), wrapped
        raise ValueError(f"inputs must be dense [n, d] or images [n, h, w, c], got shape {inputs.shape}; "
                         "tf-explain does not take other shapes")

    def explain(self, inputs, class_index: int = 0) -> np.ndarray:
        """tf-explain's visualisation grid for ``inputs`` and output column ``class_index``."""
        inputs = np.asarray(inputs, dtype=np.float32)
        images, model = self._as_images(inputs)
        return np.asarray(self._explainer.explain((images, None), model, class_index, **self.method_kwargs))

    def attribute(self, inputs, class_index: int = 0) -> np.ndarray:
        """Raw per-input values (shape of ``inputs``) from tf-explain's gradient functions.

        ``vanilla_gradients``: d output / d input; ``gradients_inputs``: input times that;
        ``integrated_gradients``: what tf-explain computes, the *mean* gradient along the
        path from 0 (multiply by the input for IG with a zero baseline).
        """
        inputs = np.asarray(inputs, dtype=np.float32)
        images, model = self._as_images(inputs)
        if self.method in ("vanilla_gradients", "gradients_inputs"):
            values = self._explainer.compute_gradients(images, model, class_index)
        elif self.method == "integrated_gradients":
            steps = int(self.method_kwargs.get("n_steps", 10))
            path = self._explainer.generate_interpolations(images, steps)
            values = self._explainer.get_integrated_gradients(path, model, class_index, steps)
        else:
            raise ValueError(f"method={self.method!r} gives a visualisation only; call explain(), or use "
                             "'vanilla_gradients', 'gradients_inputs' or 'integrated_gradients' for values")
        return np.asarray(values).reshape(inputs.shape)

"""Agreement of exact `Shapley` with `shap.KernelExplainer` on a small TFRS ranking model.

With nsamples covering every coalition, KernelExplainer's weighted regression is exact,
and with the same background it computes the same interventional Shapley values.
KernelExplainer takes a numeric matrix, so each feature column is encoded as an index
into that column's values and decoded into the model's feature dict inside the wrapper
(the hand-rolled wrapper TFRS users write today).
"""

import numpy as np
import pytest

from tfrs_diag import datasets, models
from tfrs_diag.explain import Shapley
from tfrs_diag.explain.embedding_space import FeatureCodec

shap = pytest.importorskip("shap")


def test_exact_shapley_agrees_with_kernel_explainer():
    data = datasets.synthetic(num_users=40, num_items=60, num_interactions=800, seed=4)
    model = models.RankingModel(data.train, embedding_dim=4, hidden=(8,))
    background = {k: v[:12] for k, v in data.train.items()}
    examples = {k: v[:4] for k, v in data.test.items()}
    names = model.feature_names
    ours = Shapley(model, background).attribute(examples)

    codec = FeatureCodec(model, names, background, examples)
    explainer = shap.KernelExplainer(codec.predict, codec.encode(background))
    theirs = np.asarray(explainer.shap_values(codec.encode(examples), nsamples=2 ** len(names), l1_reg=False, silent=True))
    assert theirs.shape == ours.values.shape
    np.testing.assert_allclose(explainer.expected_value, ours.base_value[0], atol=1e-5)
    np.testing.assert_allclose(ours.values, theirs, atol=1e-4)
    assert np.abs(theirs).max() > 1e-3  # a real comparison, not of zeros

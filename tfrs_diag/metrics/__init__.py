"""Streaming top-K metrics: accuracy, diversity, popularity bias, exposure, user-group gaps.

Every family is a `tf.keras.metrics.Metric` whose ``update_state`` takes one `TopKBatch`
per step: the indices of one shared top-K search (`tfrs_diag.metrics.topk.top_k`) with the
step's positives and groups, so one search feeds them all and what they share is computed
once on the batch. `metric_families` builds the families of an evaluation.
"""

from tfrs_diag.metrics.adaptive import FittedComposite, fit_composite
from tfrs_diag.metrics.batch import TopKBatch
from tfrs_diag.metrics.composite import CompositeScore
from tfrs_diag.metrics.diversity import ItemDiversity, PopularityBias
from tfrs_diag.metrics.factory import metric_families
from tfrs_diag.metrics.fairness import ItemExposure, UserGroupAccuracy
from tfrs_diag.metrics.ranking import RankingAccuracy
from tfrs_diag.metrics.topk import IdMapper, TopK, top_k

__all__ = ["CompositeScore", "FittedComposite", "fit_composite", "IdMapper", "ItemDiversity", "ItemExposure", "PopularityBias", "RankingAccuracy", "TopK",
           "TopKBatch", "UserGroupAccuracy", "metric_families", "top_k"]

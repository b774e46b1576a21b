"""`metric_families`: the one place the metric families of an evaluation are assembled.

`tfrs_diag.evaluate`/`TopKEvaluator`, `tfrs_diag.evaluate_ranking` and
`FactorizedTopKMetrics` all build their families here, from the same arguments, and feed
them one `TopKBatch` per step:

>>> import tensorflow as tf
>>> from tfrs_diag.metrics.batch import TopKBatch
>>> families = metric_families((2,), num_items=4, user_group_names={"gender": ("f", "m")})
>>> list(families)
['accuracy', 'diversity', 'exposure', 'group:gender']
>>> batch = TopKBatch(tf.constant([[0, 1], [2, 3]]), tf.constant([[1], [0]]),
...                   user_groups={"gender": tf.constant([0, 1])})
>>> for family in families.values():
...     family.update_state(batch)
>>> float(families["group:gender"].result()["hit_rate_at_2/f"])
1.0
"""

from __future__ import annotations

from typing import Mapping, Sequence

from tfrs_diag.metrics.diversity import ItemDiversity, PopularityBias
from tfrs_diag.metrics.fairness import ItemExposure, UserGroupAccuracy
from tfrs_diag.metrics.family import TopKMetric
from tfrs_diag.metrics.ranking import RankingAccuracy

#: Key prefix of the per-user-grouping families: ``"group:<grouping>"``.
USER_GROUP_PREFIX = "group:"


def metric_families(ks: Sequence[int], num_items: int, *, item_popularity=None, item_is_head=None,
                    item_groups=None, item_group_names: Sequence[str] = (),
                    user_group_names: Mapping[str, Sequence[str]] | None = None,
                    item_embeddings=None) -> dict[str, TopKMetric]:
    """Every metric family the arguments call for, keyed by family.

    Args:
      ks: list lengths, all from one search of the largest.
      num_items: catalog size (candidate indices are 0..num_items-1).
      item_popularity: phi(i) per candidate: adds novelty and the ``"popularity"`` family.
      item_is_head: head/tail split for popularity bias (default: the 80% rule).
      item_groups, item_group_names: item group index per candidate and the groups' names,
        for exposure shares (default: one group).
      user_group_names: ``{grouping: group names}``: one ``"group:<grouping>"`` family per
        grouping, reading the batch's ``user_groups[grouping]``.
      item_embeddings: [num_items, d] candidate embeddings for ILD.

    Returns ``{"accuracy", "diversity", "popularity" (with item_popularity), "exposure",
    "group:<grouping>"...}``, in that order.
    """
    families: dict[str, TopKMetric] = {
        "accuracy": RankingAccuracy(ks),
        "diversity": ItemDiversity(num_items, ks, item_popularity=item_popularity, item_embeddings=item_embeddings),
    }
    if item_popularity is not None:
        families["popularity"] = PopularityBias(ks, item_popularity, item_is_head=item_is_head)
    families["exposure"] = ItemExposure(num_items, ks, item_groups, item_group_names or ())
    for grouping, names in (user_group_names or {}).items():
        families[USER_GROUP_PREFIX + grouping] = UserGroupAccuracy(ks, names, group_key=grouping,
                                                                   name=f"by_{grouping}")
    return families

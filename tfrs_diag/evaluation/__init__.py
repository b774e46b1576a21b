"""`tfrs_diag.evaluate`: accuracy, diversity, popularity bias, exposure and fairness in one pass.

Candidate embeddings are computed once; each query batch runs one matmul and one
`tf.math.top_k` of the largest K, and every metric family reads that one result.

- `api`: `evaluate` (retrieval, one call) and `evaluate_ranking` (given scores);
- `evaluator`: `TopKEvaluator`, the pass itself, also used by `BeyondAccuracy`;
- `queries`: interactions and candidates as users pass them, grouped per query;
- `towers`: the query and candidate towers found by their tutorial names;
- `result`: `EvaluationResult`, the metrics and what they average over.

>>> from tfrs_diag import datasets, models, evaluate
>>> data = datasets.synthetic(num_users=40, num_items=60, num_interactions=600)
>>> model = models.TwoTowerModel(data.users["user_id"], data.items["item_id"], embedding_dim=8)
>>> result = evaluate(model, data.items["item_id"], data.test, k=(5, 10), user_group_keys=("user_group",),
...                   item_popularity=data.item_popularity)
>>> 0.0 <= result["ndcg_at_10"] <= 1.0, result.queries > 0
(True, True)
"""

from tfrs_diag.evaluation.api import evaluate, evaluate_ranking
from tfrs_diag.evaluation.evaluator import TopKEvaluator, collect_results
from tfrs_diag.evaluation.queries import as_feature_dict, as_ids, group_queries
from tfrs_diag.evaluation.result import EvaluationResult
from tfrs_diag.evaluation.towers import CANDIDATE_TOWERS, QUERY_TOWERS, keras_attributes, resolve_tower

__all__ = ["CANDIDATE_TOWERS", "QUERY_TOWERS", "EvaluationResult", "TopKEvaluator", "as_feature_dict", "as_ids",
           "collect_results", "evaluate", "evaluate_ranking", "group_queries", "keras_attributes", "resolve_tower"]

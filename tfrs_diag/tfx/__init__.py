"""tfrs_diag in TFX pipelines (``pip install tfrs-diag[tfx]``).

- in a Trainer's ``run_fn``: `diagnostic_callbacks` (our callbacks under
  ``fn_args.model_run_dir``, configured by ``fn_args.custom_config``) and `save_towers`;
- after it: `RecommenderEvaluator`, a TFX component that evaluates the trained towers on
  the eval split (the one-pass top-K evaluation: accuracy, fairness, diversity,
  popularity bias, per user group), writes JSON and TensorBoard logs, and a
  ``ModelBlessing`` when every threshold holds (`parse_thresholds`), so a Pusher can be
  gated on it. `evaluate_artifacts` is the same work without TFX.

Only `RecommenderEvaluator` needs TFX (imported when first used); ``import tfrs_diag``
never imports this package. docs/tfx.md shows a whole pipeline.

>>> from tfrs_diag.tfx import parse_thresholds
>>> [str(t) for t in parse_thresholds("user_group/ndcg_at_10_ratio >= 0.8")]
['user_group/ndcg_at_10_ratio >= 0.8']
"""

from tfrs_diag.tfx.artifacts import ArtifactEvaluation, evaluate_artifacts
from tfrs_diag.tfx.blessing import Check, Threshold, check_thresholds, is_blessed, parse_thresholds
from tfrs_diag.tfx.examples_io import read_examples, write_examples
from tfrs_diag.tfx.run_fn import diagnostic_callbacks, load_towers, save_towers

__all__ = ["ArtifactEvaluation", "Check", "RecommenderEvaluator", "Threshold", "check_thresholds",
           "diagnostic_callbacks", "evaluate_artifacts", "is_blessed", "load_towers", "parse_thresholds",
           "read_examples", "save_towers", "write_examples"]


def __getattr__(name):
    if name == "RecommenderEvaluator":
        try:
            from tfrs_diag.tfx.component import RecommenderEvaluator  # noqa: PLC0415
        except ImportError as e:
            raise ImportError(f"tfrs_diag.tfx.RecommenderEvaluator needs TFX ({e}); install it with "
                              "pip install 'tfrs-diag[tfx]' (TFX 1.16 runs on Python 3.10 with TensorFlow 2.16; "
                              "see constraints-tfx.txt)") from e
        return RecommenderEvaluator
    raise AttributeError(f"module 'tfrs_diag.tfx' has no attribute {name!r}")

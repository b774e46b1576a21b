"""The evaluation component's work, without TFX: towers and examples from artifact folders in,
metrics JSON, TensorBoard logs and a blessing decision out."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from tfrs_diag.evaluation import EvaluationResult, evaluate
from tfrs_diag.tfx.blessing import Check, check_thresholds, is_blessed, parse_thresholds
from tfrs_diag.tfx.examples_io import read_examples
from tfrs_diag.tfx.run_fn import load_towers

#: The file the component writes into its evaluation artifact.
METRICS_FILE = "tfrs_diag_metrics.json"
#: TensorBoard runs under the evaluation artifact.
EVAL_RUN, BASELINE_RUN = "eval", "baseline"


@dataclasses.dataclass
class ArtifactEvaluation:
    """What `evaluate_artifacts` found: the result, the baseline's, each rule checked, the verdict."""

    result: EvaluationResult
    baseline: EvaluationResult | None
    checks: list[Check]
    blessed: bool

    def to_dict(self) -> dict:
        return {"blessed": self.blessed, "checks": [c.to_dict() for c in self.checks],
                "result": self.result.to_dict(),
                "baseline": None if self.baseline is None else self.baseline.to_dict()}


def parse_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")`` (TFX parameters are plain strings)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(s.strip() for s in items if s and s.strip())


def parse_ks(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"10,100"``, ``10`` or ``(10, 100)`` -> ``(10, 100)``."""
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(x) for x in (parse_list(value) if isinstance(value, str) else value))
    except ValueError:
        raise ValueError(f"k: must be list lengths separated by commas (e.g. '10,100'), got {value!r}") from None


def catalog(eval_items: np.ndarray, train_items: np.ndarray | None, eval_groups=None, train_groups=None):
    """Candidate ids (every item of train and eval, sorted), their training popularity
    (share of training interactions; None without a train split) and, with item groups,
    each item's group (its first row's)."""
    items = eval_items if train_items is None else np.concatenate([train_items, eval_items])
    ids, first = np.unique(items, return_index=True)
    popularity = None
    if train_items is not None and len(train_items):
        counts = np.zeros(len(ids))
        np.add.at(counts, np.searchsorted(ids, train_items), 1.0)
        popularity = counts / counts.sum()
    groups = None
    if eval_groups is not None:
        all_groups = eval_groups if train_groups is None else np.concatenate([train_groups, eval_groups])
        groups = all_groups[first]
    return ids, popularity, groups


def evaluate_artifacts(model_uri: str, examples_uri: str, output_dir: str, *, query_key: str, item_key: str,
                       k: str | Sequence[int] = (10, 100), user_group_keys: str | Sequence[str] = (),
                       item_group_key: str | None = None, thresholds: str | Sequence[str] = "",
                       baseline_model_uri: str | None = None, eval_split: str = "eval",
                       train_split: str | None = "train", batch_size: int = 1024) -> ArtifactEvaluation:
    """Evaluates the towers saved under ``model_uri`` on the examples under ``examples_uri``.

    Reads the eval split (``query_key``, ``item_key``, ``user_group_keys``,
    ``item_group_key``) and the train split's items (the catalog and each item's training
    popularity), runs `tfrs_diag.evaluate` on the towers `save_towers` wrote, and on the
    baseline's when given, checks ``thresholds`` (`parse_thresholds`), and writes into
    ``output_dir``: `METRICS_FILE` (everything `ArtifactEvaluation.to_dict` holds) and
    TensorBoard runs ``eval`` (and ``baseline``) that the Recsys diagnostics plugin and
    ``tfrs-diag report`` read.

    Example:

    Not run here: it needs saved towers and TFRecords (tests/test_tfx_helpers.py runs it on both).

    >>> out = evaluate_artifacts(model_dir, examples_dir, "eval_out", query_key="user_id",  # doctest: +SKIP
    ...                          item_key="item_id", k="10", thresholds="ndcg_at_10 >= 0.05")
    >>> out.blessed                                                                         # doctest: +SKIP
    True
    """
    from tfrs_diag.callbacks.beyond_accuracy import write_evaluation  # noqa: PLC0415

    ks = parse_ks(k)
    groups = parse_list(user_group_keys)
    rules = parse_thresholds(thresholds) if isinstance(thresholds, str) else parse_thresholds(list(thresholds))
    for name, value in (("query_key", query_key), ("item_key", item_key)):
        if not value:
            raise ValueError(f"{name}: name the feature of the examples that holds it")
    wanted = [query_key, item_key, *groups] + ([item_group_key] if item_group_key else [])
    data = read_examples(examples_uri, wanted, eval_split)
    train = None
    if train_split:
        train = read_examples(examples_uri, [item_key] + ([item_group_key] if item_group_key else []), train_split)
    ids, popularity, item_groups = catalog(
        data[item_key], None if train is None else train[item_key],
        data.get(item_group_key) if item_group_key else None,
        train.get(item_group_key) if (train is not None and item_group_key) else None)
    eval_data = {name: data[name] for name in (query_key, item_key, *groups)}

    def run(uri):
        query, candidate = load_towers(uri)
        return evaluate(query, ids, eval_data, ks, candidate_model=candidate, query_key=query_key,
                        item_key=item_key, user_group_keys=groups, item_groups=item_groups,
                        item_popularity=popularity, batch_size=batch_size, verbose=0)

    result = run(model_uri)
    baseline = run(baseline_model_uri) if baseline_model_uri else None
    checks = check_thresholds(rules, result.metrics, None if baseline is None else baseline.metrics)
    out = ArtifactEvaluation(result, baseline, checks, is_blessed(checks))
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(out.to_dict(), f, indent=1, default=float)
    write_evaluation(output_dir, result, step=0, run=EVAL_RUN)
    if baseline is not None:
        write_evaluation(output_dir, baseline, step=0, run=BASELINE_RUN)
    return out

"""`RecommenderEvaluator`: a TFX component that evaluates retrieval towers and blesses them.

Needs TFX (``pip install 'tfrs-diag[tfx]'``); everything it does is
`tfrs_diag.tfx.evaluate_artifacts`, which needs none.
"""

import os  # no `from __future__ import annotations`: TFX reads the annotations as objects

from tfx import v1 as tfx

from tfrs_diag.tfx.artifacts import evaluate_artifacts

_dsl = tfx.dsl.components
_types = tfx.types.standard_artifacts

#: The files a ModelBlessing holds, as TFX's own Evaluator writes them.
BLESSED_FILE, NOT_BLESSED_FILE = "BLESSED", "NOT_BLESSED"


@_dsl.component
def RecommenderEvaluator(  # noqa: N802 - TFX components are named like classes
    model: _dsl.InputArtifact[_types.Model],
    examples: _dsl.InputArtifact[_types.Examples],
    evaluation: _dsl.OutputArtifact[_types.ModelEvaluation],
    blessing: _dsl.OutputArtifact[_types.ModelBlessing],
    baseline_model: _dsl.InputArtifact[_types.Model] = None,  # optional: TFX's form
    query_key: _dsl.Parameter[str] = "user_id",
    item_key: _dsl.Parameter[str] = "item_id",
    k: _dsl.Parameter[str] = "10,100",
    user_group_keys: _dsl.Parameter[str] = "",
    item_group_key: _dsl.Parameter[str] = "",
    thresholds: _dsl.Parameter[str] = "",
    eval_split: _dsl.Parameter[str] = "eval",
    train_split: _dsl.Parameter[str] = "train",
) -> None:
    """Top-K accuracy, fairness, diversity and popularity bias of a trained model, and a blessing.

    Loads the towers `tfrs_diag.tfx.save_towers` wrote into ``model`` (and
    ``baseline_model``), evaluates them on the ``eval_split`` of ``examples`` (TFRecords of
    `tf.Example`, features named by the parameters) with `tfrs_diag.evaluate`, and writes

    - into ``evaluation``: ``tfrs_diag_metrics.json`` (metrics, group tables, each rule
      checked, the verdict) and TensorBoard runs ``eval`` and ``baseline`` for the Recsys
      diagnostics plugin and ``tfrs-diag report``;
    - into ``blessing``: the file ``BLESSED`` or ``NOT_BLESSED`` and the custom property
      ``blessed`` (1 or 0) a Pusher reads, with ``current_model``/``baseline_model`` URIs.

    Parameters are strings (TFX passes them as such): ``k`` "10,100";
    ``user_group_keys`` "user_gender,age_group"; ``thresholds`` rules separated by ``;``
    (`tfrs_diag.tfx.parse_thresholds`), e.g. ``"ndcg_at_10 >= 0.05;
    change(exposure_gini_at_10) <= 0.02; user_group/ndcg_at_10_ratio >= 0.8"``.
    ``train_split`` "" reads no train split (then no popularity metrics).

    Example:

    Not run here: it needs a pipeline (examples/tfx_pipeline.py, run by tests/tfx/).

    >>> evaluator = RecommenderEvaluator(model=trainer.outputs["model"],  # doctest: +SKIP
    ...     examples=example_gen.outputs["examples"], query_key="user_id", item_key="item_id",
    ...     k="10", thresholds="ndcg_at_10 >= 0.05")
    >>> pusher = tfx.components.Pusher(model=trainer.outputs["model"],  # doctest: +SKIP
    ...     model_blessing=evaluator.outputs["blessing"], push_destination=...)
    """
    out = evaluate_artifacts(model.uri, examples.uri, evaluation.uri, query_key=query_key, item_key=item_key,
                             k=k, user_group_keys=user_group_keys, item_group_key=item_group_key or None,
                             thresholds=thresholds, baseline_model_uri=baseline_model.uri if baseline_model else None,
                             eval_split=eval_split, train_split=train_split or None)
    os.makedirs(blessing.uri, exist_ok=True)
    with open(os.path.join(blessing.uri, BLESSED_FILE if out.blessed else NOT_BLESSED_FILE), "w"):
        pass
    blessing.set_int_custom_property("blessed", int(out.blessed))
    blessing.set_string_custom_property("current_model", model.uri)
    if model.id:
        blessing.set_int_custom_property("current_model_id", model.id)
    if baseline_model is not None:
        blessing.set_string_custom_property("baseline_model", baseline_model.uri)
        if baseline_model.id:
            blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    failed = [str(c.rule) for c in out.checks if c.passed is False]
    print(f"RecommenderEvaluator: {'blessed' if out.blessed else 'NOT blessed'}"
          + (f" (failed: {'; '.join(failed)})" if failed else ""), flush=True)

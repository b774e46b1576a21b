"""Re-ranked evaluation and the accuracy/diversity trade-off of a re-ranker's knob.

`TopKEvaluator(reranker=...)` searches a pool of ``rerank_pool`` candidates per query and
lets the re-ranker pick the top-K every metric family reads (`rerank`). `sweep` runs one
evaluation per knob value: each row's accuracy and beyond-accuracy metrics come from the
same re-ranked lists. The knob is a variable, so the traced step is reused for every value.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.metrics.topk import TopK

#: The metrics a trade-off row keeps, per K (those the evaluation computed).
TRADE_OFF_METRICS = ("ndcg", "recall", "coverage", "ild", "novelty", "aplt", "gini", "exposure_gini")


class RerankTables:
    """What a re-ranker reads per candidate, gathered per pool slot in the traced step."""

    def __init__(self, reranker, num_items: int, item_groups=None, item_is_head=None, item_popularity=None):
        from tfrs_diag.datasets import head_tail_split  # noqa: PLC0415  (datasets import evaluation helpers)

        self.reranker = reranker
        self.groups = None if item_groups is None else tf.constant(np.asarray(item_groups, np.int32))
        tail = None
        if item_is_head is not None:
            tail = ~np.asarray(item_is_head, bool)
        elif item_popularity is not None:
            tail = ~head_tail_split(np.asarray(item_popularity, np.float64))
        self.is_tail = None if tail is None else tf.constant(tail)
        for key, table, arg in (("groups", self.groups, "item_groups"), ("is_tail", self.is_tail,
                                                                          "item_popularity (or item_is_head)")):
            if key in reranker.requires and table is None:
                raise ValueError(f"reranker: {type(reranker).__name__} reads {key!r}; pass {arg}= to the evaluation")
        self.num_items = num_items


def rerank(top: TopK, candidate_embeddings: tf.Tensor, tables: RerankTables, k: int) -> tf.Tensor:
    """[B, k] candidate indices: the re-ranker's picks from the searched pool ``top``."""
    inputs: dict[str, tf.Tensor] = {"scores": top.scores}
    needs = tables.reranker.requires
    if "embeddings" in needs:
        inputs["embeddings"] = tf.gather(candidate_embeddings, top.indices)
    if "groups" in needs:
        inputs["groups"] = tf.gather(tables.groups, top.indices)
    if "is_tail" in needs:
        inputs["is_tail"] = tf.gather(tables.is_tail, top.indices)
    picks = tables.reranker(inputs, k=k)
    return tf.gather(top.indices, picks, batch_dims=1)


def trade_off_row(knob: str, value: float, metrics: dict[str, float], ks: Sequence[int]) -> dict[str, Any]:
    """One row of a sweep: the knob's value and the `TRADE_OFF_METRICS` at each K."""
    row: dict[str, Any] = {"knob": knob, "value": float(value)}
    for k in ks:
        for name in TRADE_OFF_METRICS:
            key = f"{name}_at_{k}"
            if key in metrics:
                row[key] = metrics[key]
    return row


def sweep(evaluator, model, values: Sequence[float], **run_kwargs) -> list[dict[str, Any]]:
    """One `TopKEvaluator.run` per knob value, the knob restored afterwards; the rows, in order."""
    reranker = evaluator.reranker
    if reranker is None:
        raise ValueError("sweep: the evaluator has no reranker; pass reranker= (e.g. tfrs_diag.layers.MMR()) to it")
    values = [float(v) for v in np.atleast_1d(np.asarray(values, np.float64))]
    if not values:
        raise ValueError("sweep: give at least one knob value, e.g. sweep=[0.2, 0.5, 0.8, 1.0]")
    for v in values:
        reranker._check_knob(v)  # a bad value fails before the first pass, naming the knob
    before = reranker.knob_value
    rows = []
    try:
        for v in values:
            reranker.set_knob(v)
            result = evaluator.run(model, **run_kwargs)
            rows.append(trade_off_row(reranker.knob, v, result.metrics, result.ks))
    finally:
        reranker.set_knob(before)
    return rows


def format_trade_off(rows: Sequence[dict[str, Any]], k: int) -> list[str]:
    """The text table of a sweep at one K (what `tfrs-diag report` and ``print(result)`` show)."""
    if not rows:
        return []
    names = [n for n in TRADE_OFF_METRICS if any(f"{n}_at_{k}" in r for r in rows)]
    lines = [f"trade-off of {rows[0]['knob']} (@{k}; means over queries)",
             f"  {rows[0]['knob']:>11}" + "".join(f"{n:>14}" for n in names)]
    for r in rows:
        cells = "".join(f"{'' if r.get(f'{n}_at_{k}') is None else format(r[f'{n}_at_{k}'], '.4f'):>14}"
                        for n in names)
        lines.append(f"  {r['value']:>11.4g}" + cells)
    return lines

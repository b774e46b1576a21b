"""`EvaluationResult`: the metrics of one evaluation, with what they average over."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping


@dataclasses.dataclass
class EvaluationResult(Mapping[str, float]):
    """Scalar metrics (a read-only mapping) plus per-group tables.

    Every accuracy, diversity and popularity metric is a mean over the ``queries``
    evaluated: one query per distinct ``query_key`` value (e.g. per user), or one per test
    row when ``query_key`` is None. ``tables[key]`` holds one row per user group of ``key``
    (``count`` queries and each accuracy metric, a mean over that group's queries);
    ``item_group_table`` one row per item group (relevant share, exposure share and
    disparity per K).
    """

    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]]
    item_group_table: list[dict[str, Any]]
    ks: tuple[int, ...]
    queries: int
    missing_positives: int
    #: Per K, the Lorenz curve of per-item exposure (`ItemExposure.lorenz`), 101 points.
    exposure_lorenz: dict[int, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    #: What a query is: the feature queries are grouped by ("user_id"), or None (one per test row).
    query_key: str | None = None
    #: Candidates whose embedding holds NaN/Inf (a diverged tower: the top-K lists mean nothing).
    nonfinite_candidates: int = 0
    #: With a reranker and a sweep: one row per knob value (`TopKEvaluator.sweep`), else empty.
    trade_off: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def averaged_over(self) -> str:
        """What the metrics are means over, e.g. "998 queries (one per user_id)"."""
        unit = f"one per {self.query_key}" if self.query_key else "one per test row"
        return f"{self.queries} queries ({unit})"

    def __getitem__(self, key: str) -> float:
        try:
            return self.metrics[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a computed metric; available: {', '.join(sorted(self.metrics))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "tables": self.tables, "item_groups": self.item_group_table,
                "ks": list(self.ks), "queries": self.queries, "query_key": self.query_key,
                "missing_positives": self.missing_positives, "nonfinite_candidates": self.nonfinite_candidates,
                "trade_off": self.trade_off}

    def __str__(self) -> str:
        lines = [f"means over {self.averaged_over}, K = {', '.join(map(str, self.ks))}"
                 + (f", {self.missing_positives} positives not in the candidate set" if self.missing_positives else "")]
        if self.nonfinite_candidates:
            lines.append(f"WARNING: {self.nonfinite_candidates} candidate embeddings hold NaN/Inf (a diverged "
                         "candidate tower): these top-K lists are arbitrary")
        families = [("accuracy", ("recall", "ndcg", "mrr", "hit_rate")),
                    ("diversity", ("coverage", "gini", "entropy_norm", "novelty", "ild")),
                    ("popularity", ("arp", "aplt", "pop_rsp", "pop_reo")),
                    ("exposure", ("exposure_gini", "exposure_gap"))]
        for title, names in families:
            rows = [(n, [self.metrics.get(f"{n}_at_{k}") for k in self.ks]) for n in names]
            rows = [(n, v) for n, v in rows if any(x is not None for x in v)]
            if rows:
                lines.append("")
                lines.append(f"{title:<14}" + "".join(f"{'@' + str(k):>10}" for k in self.ks))
                for n, vals in rows:
                    lines.append(f"  {n:<12}" + "".join(f"{'' if v is None else f'{v:.4f}':>10}" for v in vals))
        for key, rows in self.tables.items():
            k = self.ks[0]
            lines.append("")
            lines.append(f"by {key} (@{k}; count = queries, the rest means over them)")
            lines.append(f"  {'':<14}" + "  ".join(f"{c:>9}" for c in ("count", "recall", "ndcg", "hit_rate")))
            for r in rows:
                lines.append(f"  {str(r['group']):<14}" + "  ".join(
                    f"{r[c] if c == 'count' else r[f'{c}_at_{k}']:>9.4g}" for c in ("count", "recall", "ndcg", "hit_rate")))
            lines.append(f"  gap (max-min) ndcg@{k}: {self.metrics.get(f'{key}/ndcg_at_{k}_gap', float('nan')):.4f}")
        if self.trade_off:
            from tfrs_diag.evaluation.tradeoff import format_trade_off  # noqa: PLC0415

            lines += [""] + format_trade_off(self.trade_off, self.ks[0])
        return "\n".join(lines)

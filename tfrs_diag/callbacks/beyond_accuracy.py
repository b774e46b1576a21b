"""`BeyondAccuracy`: the one-pass top-K evaluation during training, streamed to TensorBoard."""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

from tfrs_diag import detectors as D
from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag.capture.checks import check_xla_compatible
from tfrs_diag.evaluation import EvaluationResult, TopKEvaluator
from tfrs_diag.metrics.composite import CompositeScore
from tfrs_diag.summary import schema, workers


class BeyondAccuracy(tf.keras.callbacks.Callback):
    """Accuracy, diversity, popularity bias, exposure and user-group fairness every N epochs.

    Runs `tfrs_diag.TopKEvaluator` (one top-K search per query batch feeds every metric)
    on ``data`` at the end of every ``every_n_epochs`` epochs and

    - writes scalars under ``log_dir/<run>``: ``tfrs_diag/rank/...`` (Recall, NDCG, MRR,
      hit rate), ``tfrs_diag/div/...`` (coverage, Gini, entropy, novelty, ILD, ARP, APLT),
      ``tfrs_diag/fair/...`` (exposure Gini, exposure gap, PopRSP/PopREO, per-group
      accuracy and its gaps), and one ``tfrs_diag/fair/groups`` table record per
      evaluation (user-group and item-group rows) and one ``tfrs_diag/fair/exposure_lorenz``
      record (type "lorenz": per K the Lorenz curve of per-item exposure and its Gini);
    - adds a short headline to the epoch's Keras ``logs`` (what the progress line shows):
      ``val_recall_at_<K>``, ``val_ndcg_at_<K>`` and ``val_coverage_at_<K>`` at the first
      K, each user-group key's gap of ``alert_metric`` (``val_user_group/ndcg_at_10_gap``)
      and ``val_composite`` when there is one. ``log_metrics`` names more metrics to add
      (e.g. ``("hit_rate_at_100",)`` for an `EarlyStopping` that monitors it) or
      ``"all"`` for every metric. `EarlyStopping` and `ModelCheckpoint` listed **after**
      this callback can monitor these keys. TensorBoard gets every metric either way.
      (Until 0.1.0 every metric went to the logs, about 60 keys at two Ks.)
    - fires ``fairness_gap`` when a user group's ``alert_metric`` falls below
      ``fairness_ratio`` of the best group's (`tfrs_diag.detectors.FairnessGap`: one alert
      per user-group key, moved to the new worst group when it changes, cleared when the
      gap closes), and ``exposure_concentration`` when the exposure Gini at the smallest
      K exceeds ``exposure_gini`` (`tfrs_diag.detectors.ExposureConcentration`). After an
      evaluation with NaN/Inf metrics or candidate embeddings (a diverged model: its top-K
      lists are arbitrary) both pause, with one note, until the values are finite again.

    Args:
      log_dir: TensorBoard log directory.
      data: held-out interactions: a feature dict of arrays (e.g. ``dataset.test``) or a
        `tf.data.Dataset` of feature dicts, batched or not; converted to numpy once.
      candidates: the catalog: candidate item ids, or a `tf.data.Dataset` of ids (e.g.
        the tutorials' ``movies``).
      k, user_group_keys, item_groups, item_popularity, exclude_seen, query_key,
        item_key, query_features: as in `tfrs_diag.evaluate` (``query_features`` names
        the feature(s) the query tower takes; with it and no ``query_key`` every row is
        its own query).
      query_model, candidate_model: the towers, or the names of the model's attributes
        that hold them (e.g. ``query_model="_query_model"``); by default the tutorials'
        names are looked for (`tfrs_diag.evaluation.QUERY_TOWERS`, `CANDIDATE_TOWERS`).
      composite: optional `CompositeScore` (or its weights dict).
      reranker, rerank_pool: a `tfrs_diag.layers.ReRanker` that picks each query's top-K
        from its ``rerank_pool`` best candidates, as in `tfrs_diag.evaluate`: every metric
        is then the re-ranked lists'.
      sweep: knob values of ``reranker``: each evaluation also runs one pass per value and
        writes the trade-off as one ``tfrs_diag/div/pareto`` record (type "pareto": per
        value NDCG, recall, coverage, ILD, novelty, APLT, Gini, exposure Gini), which
        `tfrs-diag report` prints; ``history_trade_off`` keeps the rows per epoch.
      log_metrics: ``"headline"`` (default: the keys above), ``"all"``, or metric names
        (without ``val_``) added to the headline; a name the evaluation does not compute
        is reported once, with the names it does.

    Under `tf.distribute.MirroredStrategy` (``fit`` inside ``strategy.scope()``) the
    evaluation runs once per epoch, not per replica, with the one-device values; with
    several workers every worker evaluates and only the chief writes (docs/scale.md).

    Example:

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> cb = tfrs_diag.callbacks.BeyondAccuracy("logs/run1", data.test, data.items["item_id"],  # doctest: +SKIP
    ...     k=(10, 100), user_group_keys=("user_group",), item_popularity=data.item_popularity)
    >>> stop = tf.keras.callbacks.EarlyStopping("val_ndcg_at_10", mode="max", patience=2)  # doctest: +SKIP
    >>> model.fit(train_ds, epochs=20, callbacks=[cb, stop])                              # doctest: +SKIP

    The sequential retrieval tutorial's model (towers ``_query_model``/``_candidate_model``,
    found by name; each row's query is its watch history):

    >>> cb = tfrs_diag.callbacks.BeyondAccuracy("logs/seq", test_ds, unique_movie_ids,  # doctest: +SKIP
    ...     k=(10,), query_features="context_movie_id", item_key="label_movie_id")
    """

    def __init__(self, log_dir: str, data, candidates, *, every_n_epochs: int = 1,
                 k: Sequence[int] | int = (10, 100), user_group_keys: Sequence[str] = (),
                 user_group_names: Mapping[str, Sequence[str]] | None = None, item_groups=None,
                 item_group_names: Sequence[str] | None = None, item_popularity=None, item_is_head=None,
                 exclude_seen=None, query_key: str | None = None, item_key: str | None = None,
                 query_features: str | Sequence[str] | None = None, query_model=None, candidate_model=None,
                 composite: CompositeScore | Mapping[str, float] | None = None, alert_metric: str | None = None,
                 fairness_ratio: float = 0.8, exposure_gini: float = 0.9, batch_size: int = 1024,
                 log_metrics: str | Sequence[str] = "headline", run: str = "validation", verbose: int = 1,
                 reranker=None, rerank_pool: int = 100, sweep: Sequence[float] | None = None):
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs <= 0:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if not 0 < fairness_ratio <= 1:
            raise ValueError(f"fairness_ratio must be in (0, 1], got {fairness_ratio!r}")
        self.log_dir = S.check_log_dir(log_dir)
        self.every_n_epochs = every_n_epochs
        self.evaluator = TopKEvaluator(candidates, data, k, query_key=query_key, item_key=item_key,
                                       query_features=query_features, query_model=query_model,
                                       candidate_model=candidate_model,
                                       user_group_keys=user_group_keys, user_group_names=user_group_names,
                                       item_groups=item_groups, item_group_names=item_group_names,
                                       item_popularity=item_popularity, item_is_head=item_is_head,
                                       exclude_seen=exclude_seen, batch_size=batch_size,
                                       reranker=reranker, rerank_pool=rerank_pool)
        if sweep is not None and reranker is None:
            raise ValueError("sweep: needs reranker=, the layer whose knob it sweeps (e.g. tfrs_diag.layers.MMR())")
        self.sweep = None if sweep is None else [float(v) for v in sweep]
        for v in self.sweep or ():
            reranker._check_knob(v)
        self.history_trade_off: list[tuple[int, list[dict]]] = []
        if composite is not None and not isinstance(composite, CompositeScore):
            composite = CompositeScore(composite)
        self.composite = composite
        self.alert_metric = alert_metric or f"ndcg_at_{self.evaluator.ks[0]}"
        self.fairness_ratio = fairness_ratio
        self.exposure_gini = exposure_gini
        if isinstance(log_metrics, str):
            if log_metrics not in ("headline", "all"):
                raise ValueError(f"log_metrics must be 'headline', 'all' or a sequence of metric names, got "
                                 f"{log_metrics!r}")
            self.log_metrics: str | tuple[str, ...] = log_metrics
        else:
            self.log_metrics = tuple(m[len("val_"):] if m.startswith("val_") else m for m in log_metrics)
        self._warned_unknown = False
        self.run = run
        self.verbose = verbose
        self.alert_log = S.AlertLog(self.log_dir, run, echo=bool(verbose))
        self._scalars = S.ScalarBatch()
        self.history: list[tuple[int, EvaluationResult]] = []
        self.fairness = D.FairnessGap(self.alert_metric, fairness_ratio)
        self.exposure = D.ExposureConcentration(exposure_gini)
        self.pause = D.NonFinitePause("BeyondAccuracy")
        self.notes: list[str] = []

    @property
    def alerts(self) -> list[S.Alert]:
        return list(self.alert_log.history)

    def on_train_begin(self, logs=None):
        for d in (self.fairness, self.exposure, self.pause):
            d.reset()
        check_xla_compatible(self.model, "BeyondAccuracy")
        workers.enter(self.log_dir, self.model.distribute_strategy, self)
        # Unknown towers or features fail before the first epoch, not after it.
        self.evaluator.query_tower(self.model)
        self.evaluator.candidate_tower(self.model)
        self.evaluator.queries(self.model)

    def on_train_end(self, logs=None):
        workers.leave(self.log_dir, self)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        result = self.evaluator.run(self.model)
        step = int(self.model.optimizer.iterations.numpy()) if getattr(self.model, "optimizer", None) else epoch + 1
        self.history.append((epoch, result))
        values = dict(result.metrics)
        if self.composite is not None:
            values[self.composite.name] = self.composite(result.metrics)
        if logs is not None:
            logs.update({f"val_{k}": values[k] for k in self._logged(values)})
        self._write(result, values, step, epoch)
        if self.sweep:
            self._write_trade_off(self.evaluator.sweep(self.model, self.sweep), step, epoch)
        self._check_alerts(result, step, epoch)

    def headline(self, values: Mapping[str, float]) -> list[str]:
        """The metric names the progress line gets by default (those of ``values`` that exist)."""
        k = self.evaluator.ks[0]
        names = [f"recall_at_{k}", f"ndcg_at_{k}", f"coverage_at_{k}"]
        names += [f"{key}/{self.alert_metric}_gap" for key in self.evaluator.user_group_keys]
        if self.composite is not None:
            names.append(self.composite.name)
        return [n for n in names if n in values]

    def _logged(self, values: Mapping[str, float]) -> list[str]:
        if self.log_metrics == "all":
            return list(values)
        names = self.headline(values)
        if self.log_metrics != "headline":
            unknown = [m for m in self.log_metrics if m not in values]
            if unknown and not self._warned_unknown:
                self._warned_unknown = True
                warnings.warn(f"BeyondAccuracy(log_metrics=...): {unknown} are not computed by this evaluation; "
                              f"it computes {sorted(values)}", stacklevel=3)
            names += [m for m in self.log_metrics if m in values and m not in names]
        return names

    def _write(self, result: EvaluationResult, values: Mapping[str, float], step: int, epoch: int):
        write_evaluation(self.log_dir, result, step=step, epoch=epoch, run=self.run, values=values,
                         scalars=self._scalars)

    def _write_trade_off(self, rows: list[dict], step: int, epoch: int):
        self.history_trade_off.append((epoch, rows))
        writer = S.writer_for(self.log_dir, self.run)
        with writer.as_default():
            S.write_record(schema.TAGS["div_pareto"], schema.PARETO_RECORD,
                           {"epoch": epoch, "ks": list(self.evaluator.ks), "knob": rows[0]["knob"],
                            "reranker": type(self.evaluator.reranker).__name__, "rows": rows}, step)
        writer.flush()

    def _check_alerts(self, result: EvaluationResult, step: int, epoch: int):
        k = result.ks[0]
        gini = result.metrics.get(f"exposure_gini_at_{k}")
        finite = D.all_finite([result.metrics.get(self.alert_metric), gini]) and not result.nonfinite_candidates
        note = self.pause.update(finite, step)
        if note:
            self.notes.append(note)
            if self.verbose:
                print(note, flush=True)
        if self.pause.paused:
            return
        findings = self.fairness.update(result.tables) + self.exposure.update(
            k, gini, result.metrics.get(f"coverage_at_{k}"))
        D.apply_findings(self.alert_log, findings, step, epoch)


def write_evaluation(log_dir: str, result: EvaluationResult, *, step: int, epoch: int = 0, run: str = "validation",
                     values: Mapping[str, float] | None = None, scalars: S.ScalarBatch | None = None) -> None:
    """Writes one evaluation as `BeyondAccuracy` does: every metric as a scalar, the group
    table and the exposure Lorenz record, under ``log_dir/run`` at ``step``.

    Used by the callback every N epochs and by `tfrs_diag.tfx` for one evaluation after
    training (the plugin and ``tfrs-diag report`` read both alike). ``values`` defaults
    to ``result.metrics`` (the callback adds its composite score).

    Example:

    Not run here: it needs an evaluation result (tests/test_tfx_helpers.py writes and reads one).

    >>> write_evaluation("logs/eval", tfrs_diag.evaluate(model, items, test, k=10), step=0)  # doctest: +SKIP
    """
    values = result.metrics if values is None else values
    scalars = S.ScalarBatch() if scalars is None else scalars
    out = {}
    for name, value in values.items():
        out[schema.tag(schema.metric_family(name), *name.split("/"))] = value
    for key, rows in result.tables.items():
        for row in rows:
            for name, value in row.items():
                if name not in ("group", "count"):
                    out[S.tag("fair", key, name, row["group"])] = value
    for row in result.item_group_table:
        for name, value in row.items():
            if name != "group":
                out[S.tag("fair", "item_group", name, row["group"])] = value
    writer = S.writer_for(log_dir, run)
    with writer.as_default():
        scalars.write(out, step)
        S.write_record(S.tag("fair", "groups"), "group_table",
                       {"epoch": epoch, "ks": list(result.ks), "queries": result.queries,
                        "query_key": result.query_key,
                        "missing_positives": result.missing_positives, "user_groups": result.tables,
                        "item_groups": result.item_group_table}, step)
        if result.exposure_lorenz:
            S.write_record(S.tag("fair", "exposure_lorenz"), "lorenz",
                           {"epoch": epoch, "curves": [
                               {"k": k, "gini": values.get(f"exposure_gini_at_{k}"), **curve}
                               for k, curve in sorted(result.exposure_lorenz.items())]}, step)
    writer.flush()

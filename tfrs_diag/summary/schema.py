"""The summary schema: every tag, record type and alert line tfrs_diag writes or reads.

The callbacks write through `tfrs_diag.summary.writer`, the report and the plugin read
back through `tfrs_diag.summary.events`; none of them spells a ``tfrs_diag/...`` literal of its own (the
front end gets the names from the plugin's ``runs`` route).

- Names: `PLUGIN_NAME`, `PREFIX`, the `FAMILY` table (``grad``, ``embed``, ``overfit``,
  ``rank``, ``fair``, ``div``, ``explain``), the named tags and prefixes of `TAGS`
  (documented in `TAG_TABLE`), `tag` to build one, `metric_family` for an evaluation
  metric.
- Records: tensor summaries owned by the ``tfrs_diag`` plugin holding versioned JSON
  (`encode_record`, `record_metadata`; `decode_record`, `record_type_of`), of the types
  in `RECORD_TYPES`; `Alert` is the payload of the ``alert`` type and `format_alert`
  its one line of text.
- The page: which view shows each alert kind's evidence (`ALERT_VIEWS`), which tags share
  a chart (`CHART_RULES`), what a tag's step counts (`x_unit`); `frontend_schema` sends them.
- Reading the files back is `tfrs_diag.summary.events`'s (`read_run`).

>>> tag("grad", "norm", "user_model/embedding/embeddings:0")
'tfrs_diag/grad/norm/user_model/embedding/embeddings'
>>> TAGS["alerts"], FAMILY["div"].prefix, metric_family("ndcg_at_10")
('tfrs_diag/alerts', 'tfrs_diag/div/', 'rank')
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping

import numpy as np

PLUGIN_NAME = "tfrs_diag"
PREFIX = PLUGIN_NAME + "/"
SCHEMA_VERSION = 1


# ---------------------------------------------------------------- families and tags


@dataclasses.dataclass(frozen=True)
class Family:
    """A tag family ``tfrs_diag/<name>/...``: what it holds and who writes it."""

    name: str
    label: str
    written_by: str
    #: What one point of the family's figures stands for (the page's caption); ``{queries}``
    #: is filled in with the evaluation's query count where the run has one.
    over: str = ""

    @property
    def prefix(self) -> str:
        return PREFIX + self.name + "/"


FAMILY: dict[str, Family] = {f.name: f for f in (
    Family("grad", "Gradient health", "GradientStatistics", "per training batch (one step's gradients)"),
    Family("embed", "Embedding tables", "GradientStatistics, OverfittingMonitor",
           "per training batch: the rows it touched (health statistics: the whole table)"),
    Family("overfit", "Overfitting", "OverfittingMonitor", "per epoch or per probe reading"),
    Family("rank", "Top-K accuracy", "BeyondAccuracy", "per evaluation, averaged over {queries}"),
    Family("fair", "Fairness & exposure", "BeyondAccuracy", "per evaluation, over the top-K lists of {queries}"),
    Family("div", "Diversity & coverage", "BeyondAccuracy", "per evaluation, over the top-K lists of {queries}"),
    Family("explain", "Explanations", "ExplanationCallback, explain.write_attribution",
           "per probe example of one explanation"),
)}
FAMILIES = tuple(FAMILY)

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def clean_name(name: str) -> str:
    """Makes a variable or layer name safe as a tag component (drops ``:0``).

    >>> clean_name("user_model/embedding/embeddings:0"), clean_name("a b<c>")
    ('user_model/embedding/embeddings', 'a_b_c_')
    """
    name = re.sub(r":\d+$", "", name)
    return _TAG_UNSAFE.sub("_", name).strip("/")


def tag(family: str, *parts: str) -> str:
    """Builds ``tfrs_diag/<family>/<part>/...`` from a schema family and name parts.

    >>> tag("fair", "user_group", "ndcg_at_10_gap")
    'tfrs_diag/fair/user_group/ndcg_at_10_gap'
    """
    if family not in FAMILY:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return PREFIX + "/".join([family] + [clean_name(p) for p in parts])


# Evaluation metrics by name: what is not accuracy or exposure/popularity is diversity.
_ACCURACY_METRICS = ("recall_at_", "ndcg_at_", "mrr_at_", "hit_rate_at_")
_FAIRNESS_METRICS = ("exposure_", "pop_rsp_at_", "pop_reo_at_")


def metric_family(name: str) -> str:
    """The family of an evaluation metric of `tfrs_diag.evaluate` (``BeyondAccuracy``'s scalars).

    >>> [metric_family(m) for m in ("recall_at_10", "exposure_gini_at_10", "user_group/ndcg_at_10_gap",
    ...                             "coverage_at_10", "composite")]
    ['rank', 'fair', 'fair', 'div', 'div']
    """
    if "/" in name:
        return "fair"  # user-group gaps: "<key>/<metric>_gap"
    if name.startswith(_ACCURACY_METRICS):
        return "rank"
    if name.startswith(_FAIRNESS_METRICS):
        return "fair"
    return "div"


# Record types (the ``type`` of a record's JSON payload) the readers know how to show.
RECORD_TYPES = {
    "alert": "one diagnosis (an `Alert`), with the alerts written before it at its step",
    "group_table": "per-user-group and per-item-group metric rows of one evaluation",
    "lorenz": "per K, the Lorenz curve of item exposure and its Gini",
    "attribution_table": "feature-group attributions of the probe examples",
    "pareto": "a re-ranker's knob sweep: per value, accuracy against diversity, coverage, novelty, tail share",
}
#: The record type of `BeyondAccuracy(sweep=...)` (the page's "Re-ranking trade-off" view).
PARETO_RECORD = "pareto"


@dataclasses.dataclass(frozen=True)
class TagSpec:
    """One named tag (or tag prefix, ending in ``/`` or ``_``) of the schema."""

    key: str  # the name readers use: ``TAGS[key]``
    tag: str
    kind: str  # "scalar", "histogram", "image" or "record <type>"
    meaning: str
    x: str = "step"  # what the tag's step counts: the optimizer "step" or the "epoch" index
    over: str = ""  # what one point stands for, when it is not the family's `Family.over`

    @property
    def is_prefix(self) -> bool:
        return self.tag.endswith(("/", "_"))


def _spec(key: str, family: str, parts: str, kind: str, meaning: str, **kw) -> TagSpec:
    return TagSpec(key, FAMILY[family].prefix + parts, kind, meaning, **kw)


#: Every tag and prefix a reader looks up by name; a ``<...>`` in ``meaning`` is what follows a prefix.
TAG_TABLE: tuple[TagSpec, ...] = (
    TagSpec("alerts", PREFIX + "alerts", "record alert", "every alert of every callback"),
    _spec("grad_layer_norm", "grad", "layer_norm/", "scalar", "<layer>: gradient norm of a layer's variables"),
    _spec("grad_global_norm", "grad", "global_norm", "scalar", "gradient norm over all variables"),
    _spec("grad_noise_scale", "grad", "noise_scale", "scalar", "gradient noise scale B_simple (two or more replicas)"),
    _spec("grad_norm", "grad", "norm/", "scalar", "<variable>: gradient norm"),
    _spec("grad_max_abs", "grad", "max_abs/", "scalar", "<variable>: largest absolute gradient entry"),
    _spec("grad_zero_fraction", "grad", "zero_fraction/", "scalar", "<variable>: share of zero gradient entries"),
    _spec("grad_weight_norm", "grad", "weight_norm/", "scalar", "<variable>: weight norm"),
    _spec("grad_update_ratio", "grad", "update_ratio/", "scalar",
          "<variable>: ||w_after - w_before|| / ||w_before|| of one step"),
    _spec("grad_values", "grad", "values/", "histogram", "<variable>: gradient values"),
    _spec("embed_unique_rows", "embed", "unique_rows/", "scalar", "<table>: unique rows one step touched"),
    _spec("embed_batch_rows", "embed", "batch_rows/", "scalar", "<table>: rows looked up in one step"),
    _spec("embed_row_grad_norm_mean", "embed", "row_grad_norm_mean/", "scalar", "<table>: mean gradient norm of a touched row"),
    _spec("embed_row_grad_norm_max", "embed", "row_grad_norm_max/", "scalar", "<table>: largest gradient norm of a row"),
    _spec("embed_row_update_ratio", "embed", "row_update_ratio/", "scalar", "<table>: update/weight of the touched rows"),
    _spec("overfit_probe", "overfit", "probe/", "scalar", "held-out vs. seen probe losses per example and their gap",
          over="per probe reading: the loss per example on the same fixed examples (held-out: not trained on; "
               "seen: trained on)"),
    # At the epoch index: OverfittingMonitor writes them once per epoch with step=epoch.
    _spec("overfit_epoch", "overfit", "epoch/", "scalar",
          "<metric>/train|val|gap|relative_gap per epoch (no gap for incomparable losses), trend tests",
          x="epoch", over="per epoch (train: as fit logged it; validation: evaluate on the validation data)"),
    _spec("div_pareto", "div", "pareto", "record pareto",
          "the trade-off of a re-ranker's knob: one row per value (BeyondAccuracy(sweep=...))"),
    _spec("fair_groups", "fair", "groups", "record group_table", "per-group tables of each evaluation"),
    _spec("fair_exposure_lorenz", "fair", "exposure_lorenz", "record lorenz", "Lorenz curves of item exposure"),
    _spec("fair_exposure_gini", "fair", "exposure_gini_at_", "scalar", "<K>: Gini of item exposure in the top K"),
    _spec("explain_attributions", "explain", "attributions", "record attribution_table", "attribution tables"),
    _spec("explain_bar_chart", "explain", "bar_chart", "image", "the attributions as bar charts"),
    _spec("explain_mean_abs", "explain", "mean_abs/", "scalar", "<group>: mean |attribution| of a feature group"),
)
TAGS: dict[str, str] = {s.key: s.tag for s in TAG_TABLE}
ALERT_TAG = TAGS["alerts"]

#: Per-variable prefixes: hundreds of tags on a big model, left out of overviews.
PER_VARIABLE_PREFIXES = tuple(TAGS[k] for k in (
    "grad_norm", "grad_max_abs", "grad_zero_fraction", "grad_weight_norm", "grad_update_ratio"))


def family_of(tag_: str) -> str:
    """``tfrs_diag/<family>/...`` -> ``<family>`` (``alerts`` for the alert tag).

    >>> family_of("tfrs_diag/grad/global_norm"), family_of(ALERT_TAG)
    ('grad', 'alerts')
    """
    return tag_[len(PREFIX):].split("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class ChartRule:
    """How the page charts a group of tags: one y quantity per chart.

    Tags ``prefix + <name>/<leaf>`` (or ``prefix + <leaf>``) whose ``leaf`` is a key of
    ``series`` share one chart per ``<name>``: its y axis is ``quantity`` (``{name}``
    filled in), one line per leaf, named ``series[leaf]``; ``domain`` fixes the y range;
    ``over`` replaces the tag spec's caption. The first rule a tag matches wins; other
    tags get one chart per first name part.
    """

    prefix: str
    series: Mapping[str, str]
    quantity: str
    domain: tuple[float, float] | None = None
    over: str = ""


# What OverfittingMonitor writes: train and validation of a metric on one chart, each
# difference and each trend statistic on its own (they are other quantities, on other scales).
# A metric may come without gap rows (losses summed over the batch are not comparable).
_TREND_OVER = "per epoch: a trend test over the recent epochs' values"
CHART_RULES: tuple[ChartRule, ...] = (
    ChartRule(TAGS["overfit_epoch"] + "trend/", {"slope": "slope"}, "slope of {name} per epoch",
              over=_TREND_OVER),
    ChartRule(TAGS["overfit_epoch"] + "trend/", {"p_worse": "p-value"}, "p-value that {name} gets worse", (0.0, 1.0),
              over=_TREND_OVER),
    ChartRule(TAGS["overfit_epoch"], {"train": "train", "val": "validation"}, "{name}"),
    ChartRule(TAGS["overfit_epoch"], {"gap": "validation − train"}, "{name} gap (validation − train)"),
    ChartRule(TAGS["overfit_epoch"], {"relative_gap": "(validation − train) / |train|"}, "{name} relative gap"),
    ChartRule(TAGS["overfit_probe"], {"heldout_loss": "held-out", "seen_loss": "seen"}, "probe loss"),
    ChartRule(TAGS["overfit_probe"], {"gap": "held-out − seen"}, "probe loss gap (held-out − seen)"),
)


def x_unit(tag_: str) -> str:
    """What a scalar tag's step counts: "epoch" under an epoch-indexed prefix, else "step".

    >>> x_unit(TAGS["overfit_epoch"] + "loss/train"), x_unit(TAGS["grad_global_norm"])
    ('epoch', 'step')
    """
    for s in TAG_TABLE:
        if s.x != "step" and (tag_ == s.tag or (s.is_prefix and tag_.startswith(s.tag))):
            return s.x
    return "step"


def frontend_schema() -> dict[str, Any]:
    """The names the plugin's front end uses, as JSON (the ``schema`` of the ``runs`` route).

    >>> s = frontend_schema()
    >>> s["tags"]["grad_global_norm"], s["families"][0]["prefix"], "lorenz" in s["record_types"]
    ('tfrs_diag/grad/global_norm', 'tfrs_diag/grad/', True)
    """
    return {
        "version": SCHEMA_VERSION,
        "plugin": PLUGIN_NAME,
        "prefix": PREFIX,
        "families": [{"name": f.name, "label": f.label, "prefix": f.prefix, "written_by": f.written_by,
                      "over": f.over} for f in FAMILY.values()],
        "tags": dict(TAGS),
        "record_types": sorted(RECORD_TYPES),
        # Longest first, so the first spec a tag starts with is the most specific.
        "tag_specs": [{"key": s.key, "tag": s.tag, "prefix": s.is_prefix, "x": s.x, "over": s.over}
                      for s in sorted(TAG_TABLE, key=lambda s: -len(s.tag))],
        "charts": [{"prefix": r.prefix, "series": dict(r.series), "quantity": r.quantity,
                    "domain": list(r.domain) if r.domain else None, "over": r.over} for r in CHART_RULES],
        "alert_kinds": list(ALERT_KINDS),
        "alert_views": dict(ALERT_VIEWS),
        "severities": list(SEVERITIES),
    }


def markdown_tag_table() -> str:
    """The tag table of docs/plugin.md ("Schema"), generated from `TAG_TABLE` and `FAMILY`.

    >>> markdown_tag_table().splitlines()[0]
    '| tag | kind | what | written by |'
    """
    lines = ["| tag | kind | what | written by |", "| --- | --- | --- | --- |"]
    for s in TAG_TABLE:
        family = FAMILY.get(family_of(s.tag))
        written_by = family.written_by if family else "every callback"
        lines.append(f"| `{s.tag}` | {s.kind} | {s.meaning} | {written_by} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- alerts

ALERT_KINDS = (
    "nonfinite_gradients",
    "exploding_gradients",
    "vanishing_gradients",
    "overfitting",
    "one_epoch_overfitting",
    "underfitting",
    "embedding_collapse",
    "embedding_memorization",
    "dead_embedding_rows",
    "fairness_gap",
    "exposure_concentration",
)
SEVERITIES = ("info", "warning", "critical")
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}

#: The page's view that shows the evidence of each alert kind (its summary links there).
ALERT_VIEWS = {
    **dict.fromkeys(("nonfinite_gradients", "exploding_gradients", "vanishing_gradients"), "gradients"),
    **dict.fromkeys(("overfitting", "one_epoch_overfitting", "underfitting"), "overfitting"),
    **dict.fromkeys(("embedding_collapse", "embedding_memorization", "dead_embedding_rows"), "embeddings"),
    "fairness_gap": "fairness",
    "exposure_concentration": "exposure",
}


def jsonable(x: Any) -> Any:
    """``x`` with numpy values as Python ones and NaN/Inf as strings (JSON has neither).

    >>> jsonable({"a": np.float32(0.5), "b": [np.int64(2), float("nan")]})
    {'a': 0.5, 'b': [2, 'nan']}
    """
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else str(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@dataclasses.dataclass
class Alert:
    """One diagnosis, with one sentence that says what to try (the ``alert`` record's payload).

    ``status`` is "firing" when raised and "cleared" when the condition went away.

    >>> print(Alert("exploding_gradients", "warning", 50, 0, "tower/dense", "Lower the learning rate."))
    [tfrs_diag] WARNING exploding_gradients (tower/dense, step 50, epoch 1): Lower the learning rate.
    """

    kind: str
    severity: str
    step: int
    epoch: int | None
    subject: str
    message: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "firing"

    def __post_init__(self):
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"alert kind must be one of {ALERT_KINDS}, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    def __str__(self) -> str:
        return f"[{PLUGIN_NAME}] {format_alert(self.to_dict())}"


def format_alert(alert: Mapping[str, Any]) -> str:
    """The one line of an alert (an `Alert.to_dict` or a record read back), as every reader prints it.

    Epochs are counted from 1, as Keras prints them ("Epoch 1/3"); the record keeps
    Keras' 0-based epoch index.

    >>> format_alert({"kind": "fairness_gap", "severity": "warning", "step": 7, "epoch": None,
    ...               "subject": "user_group=new", "message": "Reweight them."})
    'WARNING fairness_gap (user_group=new, step 7): Reweight them.'
    >>> format_alert({"kind": "fairness_gap", "status": "cleared", "step": 9, "epoch": 1, "subject": "s",
    ...               "message": "The condition no longer holds."})
    'cleared fairness_gap (s, step 9, epoch 2): The condition no longer holds.'
    """
    epoch = alert.get("epoch")
    where = f"step {alert.get('step')}" + (f", epoch {int(epoch) + 1}" if isinstance(epoch, (int, float)) else "")
    status = "cleared" if alert.get("status") == "cleared" else str(alert.get("severity", "")).upper()
    return f"{status} {alert.get('kind')} ({alert.get('subject')}, {where}): {alert.get('message')}"


def expand_alert_records(records: Iterable[tuple[int, Mapping[str, Any]]]) -> list[dict]:
    """The alerts in ``(step, record)`` pairs of ``tfrs_diag/alerts``, each once, by step.

    A record holds one alert and, under ``earlier_at_step``, the alerts written before it
    at the same record step (TensorBoard may keep only the last record of a step); this
    flattens them, drops repeats and orders them by the alerts' own steps (stable), so
    every reader sees the same list.

    >>> a, b = {"kind": "k", "subject": "a", "step": 5}, {"kind": "k", "subject": "b", "step": 5}
    >>> expand_alert_records([(5, {**b, "earlier_at_step": [a]})]) == [a, b]
    True
    """
    out: list[dict] = []
    seen: set[str] = set()
    for _, record in sorted(records, key=lambda sr: sr[0]):
        nested = record.get("earlier_at_step") or []
        top = {k: v for k, v in record.items() if k != "earlier_at_step"}
        for alert in [*nested, top]:
            alert = {k: v for k, v in alert.items() if k not in ("version", "type")}
            key = json.dumps(alert, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(alert)
    return sorted(out, key=lambda a: a.get("step") if isinstance(a.get("step"), int) else 0)


# ---------------------------------------------------------------- record encoding


class RecordError(ValueError):
    """A tfrs_diag record whose payload is not a JSON object (foreign, damaged or from a newer writer)."""


def encode_record(record_type: str, payload: Mapping[str, Any]) -> str:
    """The JSON text of a record: ``version``, ``type`` and the payload (made `jsonable`).

    >>> decode_record(encode_record("lorenz", {"curves": []}))
    {'curves': [], 'type': 'lorenz', 'version': 1}
    """
    return json.dumps({"version": SCHEMA_VERSION, "type": record_type, **jsonable(payload)}, sort_keys=True)


def record_metadata(record_type: str):
    """SummaryMetadata of a tfrs_diag record (plugin-owned, ``DATA_CLASS_TENSOR``)."""
    from tensorboard.compat.proto import summary_pb2

    content = json.dumps({"version": SCHEMA_VERSION, "type": record_type}).encode()
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def record_type_of(plugin_content: bytes) -> str:
    """The record type a record's metadata names ("unknown" when it names none).

    >>> record_type_of(b'{"version": 1, "type": "lorenz"}'), record_type_of(b"\\xff")
    ('lorenz', 'unknown')
    """
    try:
        meta = json.loads(plugin_content.decode("utf-8")) if plugin_content else {}
    except (ValueError, UnicodeDecodeError):
        return "unknown"
    return str(meta.get("type", "unknown")) if isinstance(meta, dict) else "unknown"


def decode_record(value: Any) -> dict:
    """The payload of one record: from its tensor (a numpy array of one string), bytes or text.

    Raises `RecordError` when it is not a JSON object.

    >>> decode_record(np.array(b'{"a": 1}', dtype=object))
    {'a': 1}
    >>> decode_record(b"\\x00garbage")
    Traceback (most recent call last):
    ...
    tfrs_diag.summary.schema.RecordError: not a JSON object (Expecting value)
    """
    try:
        if isinstance(value, np.ndarray):
            value = value.item() if value.shape == () else value.reshape(-1)[0]
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        payload = json.loads(text)
    except IndexError:
        raise RecordError("an empty tensor") from None
    except UnicodeDecodeError:
        raise RecordError("not UTF-8 text") from None
    except ValueError as e:
        raise RecordError(f"not a JSON object ({str(e).split(':')[0]})") from None
    if not isinstance(payload, dict):
        raise RecordError(f"not a JSON object (a {type(payload).__name__})")
    return payload

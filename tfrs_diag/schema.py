"""The summary schema: every tag, record type and alert line tfrs_diag writes or reads.

The callbacks write through `tfrs_diag.summary`, the report and the plugin read back
through this module; none of them spells a ``tfrs_diag/...`` literal of its own (the
front end gets the names from the plugin's ``runs`` route).

- Names: `PLUGIN_NAME`, `PREFIX`, the `FAMILY` table (``grad``, ``embed``, ``overfit``,
  ``rank``, ``fair``, ``div``, ``explain``), the named tags and prefixes of `TAGS`
  (documented in `TAG_TABLE`), `tag` to build one, `metric_family` for an evaluation
  metric.
- Records: tensor summaries owned by the ``tfrs_diag`` plugin holding versioned JSON
  (`encode_record`, `record_metadata`; `decode_record`, `record_type_of`), of the types
  in `RECORD_TYPES`; `Alert` is the payload of the ``alert`` type and `format_alert`
  its one line of text.
- Reading: `read_run` decodes a run directory's event files without TensorFlow, skipping
  (and listing in ``RunData.skipped``) what it cannot read: a record cut short by a
  killed writer, a file that is not an event file, a foreign or undecodable record.

>>> tag("grad", "norm", "user_model/embedding/embeddings:0")
'tfrs_diag/grad/norm/user_model/embedding/embeddings'
>>> TAGS["alerts"], FAMILY["div"].prefix, metric_family("ndcg_at_10")
('tfrs_diag/alerts', 'tfrs_diag/div/', 'rank')
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import struct
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import numpy as np

PLUGIN_NAME = "tfrs_diag"
PREFIX = PLUGIN_NAME + "/"
SCHEMA_VERSION = 1

_logger = logging.getLogger("tfrs_diag")

# ---------------------------------------------------------------- families and tags


@dataclasses.dataclass(frozen=True)
class Family:
    """A tag family ``tfrs_diag/<name>/...``: what it holds and who writes it."""

    name: str
    label: str
    written_by: str

    @property
    def prefix(self) -> str:
        return PREFIX + self.name + "/"


FAMILY: dict[str, Family] = {f.name: f for f in (
    Family("grad", "Gradient health", "GradientStatistics"),
    Family("embed", "Embedding tables", "GradientStatistics, OverfittingMonitor"),
    Family("overfit", "Overfitting", "OverfittingMonitor"),
    Family("rank", "Top-K accuracy", "BeyondAccuracy"),
    Family("fair", "Fairness & exposure", "BeyondAccuracy"),
    Family("div", "Diversity & coverage", "BeyondAccuracy"),
    Family("explain", "Explanations", "ExplanationCallback, explain.write_attribution"),
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
}


@dataclasses.dataclass(frozen=True)
class TagSpec:
    """One named tag (or tag prefix, ending in ``/`` or ``_``) of the schema."""

    key: str  # the name readers use: ``TAGS[key]``
    tag: str
    kind: str  # "scalar", "histogram", "image" or "record <type>"
    meaning: str

    @property
    def is_prefix(self) -> bool:
        return self.tag.endswith(("/", "_"))


def _spec(key: str, family: str, parts: str, kind: str, meaning: str) -> TagSpec:
    return TagSpec(key, FAMILY[family].prefix + parts, kind, meaning)


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
    _spec("overfit_probe", "overfit", "probe/", "scalar", "held-out vs. seen probe losses and their gap"),
    _spec("overfit_epoch", "overfit", "epoch/", "scalar", "<metric>/train|val|gap|relative_gap per epoch, trend tests"),
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
        "families": [{"name": f.name, "label": f.label, "prefix": f.prefix, "written_by": f.written_by}
                     for f in FAMILY.values()],
        "tags": dict(TAGS),
        "record_types": sorted(RECORD_TYPES),
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
    [tfrs_diag] WARNING exploding_gradients (tower/dense, step 50, epoch 0): Lower the learning rate.
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

    >>> format_alert({"kind": "fairness_gap", "severity": "warning", "step": 7, "epoch": None,
    ...               "subject": "user_group=new", "message": "Reweight them."})
    'WARNING fairness_gap (user_group=new, step 7): Reweight them.'
    >>> format_alert({"kind": "fairness_gap", "status": "cleared", "step": 9, "epoch": 1, "subject": "s",
    ...               "message": "The condition no longer holds."})
    'cleared fairness_gap (s, step 9, epoch 1): The condition no longer holds.'
    """
    where = f"step {alert.get('step')}" + (f", epoch {alert['epoch']}" if alert.get("epoch") is not None else "")
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
    tfrs_diag.schema.RecordError: not a JSON object (Expecting value)
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


# ---------------------------------------------------------------- reading event files

EVENT_FILE_GLOB = "events.out.tfevents.*"

# TFRecord framing: uint64 length, uint32 masked CRC32C of the length, data, uint32 CRC of the data.
_HEADER = struct.Struct("<QI")
_FOOTER_BYTES = 4


def _masked_crc32c(data: bytes) -> int:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    return masked_crc32c(data)


@dataclasses.dataclass
class FileScan:
    """How far the records of one event file could be framed: see `scan_records`."""

    records: int = 0
    end: int = 0  # the offset after the last whole record
    problem: str | None = None


def scan_records(f: BinaryIO, scan: FileScan | None = None, *, read_data: bool = True
                 ) -> Iterator[tuple[int, bytes | None]]:
    """Yields ``(offset, data)`` of the TFRecord records of ``f`` from ``scan.end`` on.

    Checks each length against its CRC (so random bytes or a foreign file are caught at
    the first record, and a cut-short file at its last), not the data's CRC (a pure-Python
    CRC of every byte costs ~0.2 s/MB; a damaged record fails to parse instead). Updates
    ``scan`` as it goes and sets ``scan.problem`` where framing stops. ``read_data=False``
    seeks over the data (yields None): a cheap integrity check that resumes where it ended.
    """
    scan = scan if scan is not None else FileScan()
    f.seek(scan.end)
    while True:
        offset = scan.end
        header = f.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            scan.problem = _cut_short(offset, scan.records)
            return
        length, length_crc = _HEADER.unpack(header)
        if _masked_crc32c(header[:8]) != length_crc:
            scan.problem = ("not an event file (no TFRecord at byte 0)" if offset == 0 else
                            f"corrupted record at byte {offset}; the rest of the file skipped after "
                            f"{scan.records} record(s)")
            return
        if read_data:
            data = f.read(length)
            whole = len(data) == length and len(f.read(_FOOTER_BYTES)) == _FOOTER_BYTES
        else:
            data = None
            f.seek(length, os.SEEK_CUR)
            whole = len(f.read(_FOOTER_BYTES)) == _FOOTER_BYTES
        if not whole:
            scan.problem = _cut_short(offset, scan.records)
            return
        scan.end = f.tell()
        scan.records += 1
        yield offset, data


def _cut_short(offset: int, records: int) -> str:
    return (f"ends in a record cut short at byte {offset} (its writer was killed or is still writing); "
            f"the {records} record(s) before it were read")


def check_event_file(path: str, scan: FileScan | None = None) -> FileScan:
    """Frames ``path`` without parsing it, from ``scan.end`` on (for a file that grew since).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".host") as f:
    ...     _ = f.write(b"\\x01" * 40); f.flush()
    ...     check_event_file(f.name).problem
    'not an event file (no TFRecord at byte 0)'
    """
    scan = dataclasses.replace(scan) if scan is not None else FileScan()
    scan.problem = None
    try:
        with open(path, "rb") as f:
            if scan.end == 0:  # the first record says whether this is an event file at all
                for _, raw in scan_records(f, scan):
                    if not _is_first_event(raw):
                        scan.problem = _NOT_EVENTS
                        return scan
                    break
            for _ in scan_records(f, scan, read_data=False):
                pass
    except OSError as e:
        scan.problem = f"could not be read ({e.strerror or e})"
    return scan


@dataclasses.dataclass
class RunData:
    """What a run's event files hold, as plain Python (for tests and the report).

    ``skipped`` lists ``(file, reason)`` of what could not be read: a record cut short,
    a file that is not an event file, undecodable events or records.
    """

    scalars: dict[str, list[tuple[int, float]]]
    histograms: dict[str, list[tuple[int, np.ndarray]]]
    records: dict[str, list[tuple[int, dict]]]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def alerts(self) -> list[dict]:
        return expand_alert_records(self.records.get(ALERT_TAG, []))


def read_run(run_dir: str) -> RunData:
    """Reads every event file in ``run_dir`` (not recursive) into a `RunData`.

    Never raises on damaged files: whatever can be read is, the rest is in ``skipped``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = open(os.path.join(d, "events.out.tfevents.123.host"), "wb").write(os.urandom(64))
    ...     read_run(d).skipped
    [('events.out.tfevents.123.host', 'not an event file (no TFRecord at byte 0)')]
    """
    run = RunData({}, {}, {})
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), EVENT_FILE_GLOB))):
        for reason in _read_event_file(path, run):
            _logger.debug("tfrs_diag: %s: %s", path, reason)
            run.skipped.append((os.path.basename(path), reason))
    return run


def _read_event_file(path: str, run: RunData) -> list[str]:
    """Adds the values of one event file to ``run``; returns why parts of it were skipped."""
    scan, bad_events, bad_records = FileScan(), [], []
    try:
        with open(path, "rb") as f:
            for offset, raw in scan_records(f, scan):
                event = _parse_event(raw)
                if offset == 0 and not _is_first_event(raw, event):
                    return [_NOT_EVENTS]
                if event is None:
                    bad_events.append(offset)
                    continue
                for value in event.summary.value:
                    problem = _add_value(run, event.step, value)
                    if problem:
                        bad_records.append(f"{value.tag} at step {event.step}: {problem}")
    except OSError as e:
        return [f"could not be read ({e.strerror or e})"]
    reasons = []
    if bad_events:
        reasons.append(f"{len(bad_events)} undecodable event(s) skipped, the first at byte {bad_events[0]}")
    if bad_records:
        reasons.append(f"{len(bad_records)} unreadable value(s) skipped, the first {bad_records[0]}")
    if scan.problem:
        reasons.append(scan.problem)
    return reasons


_NOT_EVENTS = "not an event file (its first record is not a TensorBoard event)"


def _parse_event(raw: bytes):
    """The `Event` proto of one record, or None when it does not parse."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    try:
        return event_pb2.Event.FromString(raw)
    except DecodeError:
        return None


def _is_first_event(raw: bytes, event=None) -> bool:
    """True for the first record of an event file: an `Event` naming its file version."""
    event = event if event is not None else _parse_event(raw)
    return event is not None and event.file_version.startswith("brain.Event:")


def _add_value(run: RunData, step: int, value) -> str | None:
    """Adds one summary value to ``run`` by kind; returns why it could not be read, if so."""
    from tensorboard.util import tensor_util

    plugin = value.metadata.plugin_data.plugin_name
    try:
        arr = tensor_util.make_ndarray(value.tensor) if value.HasField("tensor") else None
        if value.HasField("simple_value"):
            run.scalars.setdefault(value.tag, []).append((step, float(value.simple_value)))
        elif plugin == "scalars":
            run.scalars.setdefault(value.tag, []).append((step, float(arr)))
        elif plugin == "histograms":
            run.histograms.setdefault(value.tag, []).append((step, arr))
        elif plugin == PLUGIN_NAME:
            run.records.setdefault(value.tag, []).append((step, decode_record(arr)))
    except (RecordError, TypeError, ValueError, KeyError, IndexError) as e:
        return str(e) or type(e).__name__
    return None

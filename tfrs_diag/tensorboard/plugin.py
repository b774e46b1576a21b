"""The "Recsys diagnostics" TensorBoard plugin: one page that says what is wrong and where.

A dynamic plugin (entry point group ``tensorboard_plugins``, name ``tfrs_diag``). It reads
only through TensorBoard's data provider, so it works with the default ``--load_fast``
(the Rust data server) and with ``--load_fast=false``:

- records: tensor summaries owned by the ``tfrs_diag`` plugin (``DATA_CLASS_TENSOR``,
  a JSON payload with a ``type``: "alert", "group_table", "lorenz", "attribution_table",
  anything else is shown as JSON);
- scalars under ``tfrs_diag/`` (families ``grad/``, ``embed/``, ``overfit/``, ``rank/``,
  ``fair/``, ``div/``, ``explain/``, and any new one);
- histograms (tensor summaries of the ``histograms`` plugin): the newest of each tag.

Routes (under ``/data/plugin/tfrs_diag/``), all JSON except the page and static files:

- ``runs``: runs with tfrs_diag data, their record tags (by type) and scalar families;
  the ``schema`` (tag prefixes, families and their labels, record types: the front end
  spells no tag of its own) and ``skipped``: event files under the logdir that could
  not be read whole (a killed writer's last record, a file that is not an event file);
- ``overview?run=R``: what the page draws for one run: alerts, the gradient heatmap,
  every scalar series except per-variable gradient ones (downsampled), the records
  (tables, Lorenz curves, explanations), the newest histogram of each histogram tag;
- ``scalars?run=R&tag=T`` or ``scalars?run=R&prefix=P`` (``max_points`` <= 1000);
- ``records?run=R&tag=T``: every record of one tag;
- ``page``: a stand-alone HTML page of the dashboard (the same ES module);
- ``static/<file>``: the front end (only files shipped in ``static/``).

Bad or unknown ``run``/``tag``/``prefix``/``max_points`` get 400; any other static path
404. Nothing is read from disk but the shipped static files and, for ``skipped``, the
framing of the logdir's event files (`tfrs_diag.schema.check_event_file`, resumed where
the last check ended).
"""

from __future__ import annotations

import base64
import hashlib
import math
import mimetypes
import os
import re
import threading
from typing import Any, Iterable, Mapping, Sequence

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tfrs_diag import schema
from tfrs_diag.schema import ALERT_TAG, PER_VARIABLE_PREFIXES, PLUGIN_NAME, PREFIX, expand_alert_records, family_of

SCALARS_PLUGIN = "scalars"
HISTOGRAMS_PLUGIN = "histograms"
#: Most points of one series sent to the browser (the page asks for fewer).
MAX_POINTS = 1000
#: Points per series in the overview; heatmap columns.
OVERVIEW_POINTS = 300
HEATMAP_COLUMNS = 120
#: Records of one tag in the overview (the newest); the ``records`` route has them all.
OVERVIEW_RECORDS = 50
#: Histogram tags whose newest histogram the overview carries.
MAX_HISTOGRAMS = 100
LAYER_NORM_PREFIX = schema.TAGS["grad_layer_norm"]
_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC_ROUTE = "/static/"
_MAX_PARAM = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_PAGE_SCRIPT = 'import("./static/index.js").then((m) => m.render());'
_PAGE = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Recsys diagnostics</title></head>\n'
         f'<body><script type="module">{_PAGE_SCRIPT}</script></body></html>\n').encode()
# TensorBoard's Content-Security-Policy allows an inline script only by its hash.
_PAGE_SCRIPT_SHA256 = base64.b64encode(hashlib.sha256(_PAGE_SCRIPT.encode()).digest()).decode()


class BadRequest(ValueError):
    """A request parameter is missing, malformed or names nothing in the logdir (HTTP 400)."""


# ---------------------------------------------------------------- pure helpers


def finite_or_text(x: float) -> float | str:
    """JSON has no NaN/Inf: those become the strings "nan", "inf", "-inf"."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def downsample(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """At most ``max_points`` of ``(step, value)`` points in step order, spikes kept.

    The series is cut into ``max_points // 2`` buckets of consecutive points and each
    bucket keeps its smallest and largest value (a spike never disappears, unlike with
    plain striding); non-finite values are always kept (they are what one looks for),
    and so are the first and last point.

    >>> pts = [(i, float(i % 7)) for i in range(100)] + [(100, 1000.0)]
    >>> small = downsample(pts, 20)
    >>> len(small) <= 20, (100, 1000.0) in small, small[0] == (0, 0.0)
    (True, True, True)
    """
    n = len(points)
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points!r}")
    if n <= max_points:
        return list(points)
    nonfinite = [i for i, (_, v) in enumerate(points) if not math.isfinite(v)]
    # At most half the budget for non-finite points, the rest for bucket extremes.
    keep = {0, n - 1, *nonfinite[: max(0, min(max_points // 2, max_points - 2))]}
    buckets = (max_points - len(keep)) // 2
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        finite = [i for i in range(lo, hi) if math.isfinite(points[i][1])]
        if finite:
            keep.add(min(finite, key=lambda i: points[i][1]))
            keep.add(max(finite, key=lambda i: points[i][1]))
    return [points[i] for i in sorted(keep)]


def encode_series(points: Iterable[tuple[int, float]]) -> list[list]:
    return [[int(s), finite_or_text(v)] for s, v in points]


def heatmap(series: Mapping[str, Sequence[tuple[int, float]]], columns: int = HEATMAP_COLUMNS) -> dict[str, Any]:
    """Rows (one per series) of the largest value per step bin; non-finite bins marked.

    Returns ``{"rows", "bins" ([lo, hi] steps), "values" (per row, per bin: a number,
    None for no reading, or "nan"/"inf"), "nonfinite" ([row, step] of every non-finite
    reading)}``. The largest value per bin shows a spike that a mean would hide.
    """
    rows = sorted(series)
    steps = [s for name in rows for s, _ in series[name]]
    if not steps:
        return {"rows": rows, "bins": [], "values": [[] for _ in rows], "nonfinite": []}
    lo, hi = min(steps), max(steps)
    n_bins = max(1, min(columns, hi - lo + 1, len(set(steps))))
    width = (hi - lo + 1) / n_bins
    bins = [[int(lo + math.floor(b * width)), int(lo + math.ceil((b + 1) * width) - 1)] for b in range(n_bins)]
    values, nonfinite = [], []
    for r, name in enumerate(rows):
        cells: list[Any] = [None] * n_bins
        for step, v in series[name]:
            b = min(n_bins - 1, int((step - lo) / width))
            if not math.isfinite(v):
                nonfinite.append([r, int(step)])
                cells[b] = finite_or_text(v)
            elif cells[b] is None or (isinstance(cells[b], float) and v > cells[b]):
                cells[b] = float(v)
        values.append(cells)
    return {"rows": rows, "bins": bins, "values": values, "nonfinite": nonfinite}


def _check_text(name: str, value: str | None, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"missing parameter {name!r}")
        return None
    if len(value) > _MAX_PARAM or _CONTROL.search(value):
        raise BadRequest(f"parameter {name!r} is too long or holds control characters")
    return value


def _max_points(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", value) or not 2 <= int(value) <= MAX_POINTS:
        raise BadRequest(f"max_points must be an integer from 2 to {MAX_POINTS}")
    return int(value)


# ---------------------------------------------------------------- reading through the data provider


class SeriesCache:
    """Scalar series already read, reused while their tag's listing is unchanged.

    TensorBoard's Python data provider converts every stored point of a tag on each read
    (~40 us a point, 2 s for 50 tags of 1000 points), so re-drawing the page would cost
    that again. A tag whose ``max_step`` and ``max_wall_time`` have not moved holds the
    same points. Thread-safe; forgets everything past ``max_entries`` series.
    """

    def __init__(self, max_entries: int = 20_000):
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[tuple, list]] = {}
        self._max = max_entries

    def get(self, key: tuple, version: tuple):
        with self._lock:
            hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def put(self, key: tuple, version: tuple, value: list) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (version, value)


class LogReader:
    """What the plugin needs from TensorBoard's data provider, for one request."""

    def __init__(self, data_provider, ctx, experiment_id: str, cache: SeriesCache | None = None):
        self._dp = data_provider
        self._ctx = ctx
        self._eid = experiment_id
        self._cache = cache
        self._versions: dict[tuple[str, str], tuple] = {}
        self.skipped_records: list[dict[str, str]] = []

    def scalar_tags(self, run: str | None = None) -> dict[str, list[str]]:
        """``{run: [tfrs_diag scalar tags]}``."""
        from tensorboard.data import provider

        flt = provider.RunTagFilter(runs=[run]) if run is not None else None
        listing = self._dp.list_scalars(self._ctx, experiment_id=self._eid, plugin_name=SCALARS_PLUGIN,
                                        run_tag_filter=flt)
        for r, tags in listing.items():
            for t, ts in tags.items():
                self._versions[(r, t)] = (ts.max_step, ts.max_wall_time)
        return {r: sorted(t for t in tags if t.startswith(PREFIX)) for r, tags in listing.items()}

    def record_tags(self, run: str | None = None) -> dict[str, dict[str, str]]:
        """``{run: {tag: record type}}`` of tfrs_diag records."""
        from tensorboard.data import provider

        flt = provider.RunTagFilter(runs=[run]) if run is not None else None
        listing = self._dp.list_tensors(self._ctx, experiment_id=self._eid, plugin_name=PLUGIN_NAME,
                                        run_tag_filter=flt)
        return {r: {t: schema.record_type_of(ts.plugin_content) for t, ts in tags.items()}
                for r, tags in listing.items()}

    def latest_histograms(self, run: str, limit: int = MAX_HISTOGRAMS) -> dict[str, dict[str, Any]]:
        """The newest histogram of each tfrs_diag histogram tag (the first ``limit`` tags):
        ``{tag: {"step", "left", "right", "counts"}}``."""
        from tensorboard.data import provider

        listing = self._dp.list_tensors(self._ctx, experiment_id=self._eid, plugin_name=HISTOGRAMS_PLUGIN,
                                        run_tag_filter=provider.RunTagFilter(runs=[run])).get(run, {})
        tags = sorted(t for t in listing if t.startswith(PREFIX))[:limit]
        out, missing = {}, []
        versions = {t: ("histogram", listing[t].max_step, listing[t].max_wall_time) for t in tags}
        for t in tags:
            hit = self._cache.get((self._eid, run, t), versions[t]) if self._cache else None
            if hit is None:
                missing.append(t)
            else:
                out[t] = hit[0]
        if missing:
            data = self._dp.read_tensors(self._ctx, experiment_id=self._eid, plugin_name=HISTOGRAMS_PLUGIN,
                                         downsample=1, run_tag_filter=provider.RunTagFilter([run], missing))
            for t, points in data.get(run, {}).items():
                if not points:
                    continue
                last = max(points, key=lambda d: d.step)
                arr = last.numpy.reshape(-1, 3) if last.numpy.size else last.numpy.reshape(0, 3)
                out[t] = {"step": int(last.step), "left": [finite_or_text(x) for x in arr[:, 0]],
                          "right": [finite_or_text(x) for x in arr[:, 1]],
                          "counts": [finite_or_text(x) for x in arr[:, 2]]}
                if self._cache is not None:
                    self._cache.put((self._eid, run, t), versions[t], [out[t]])
        return {t: out[t] for t in tags if t in out}

    def runs(self) -> dict[str, dict[str, Any]]:
        scalars, records = self.scalar_tags(), self.record_tags()
        out = {}
        for run in sorted(set(scalars) | set(records)):
            s, r = scalars.get(run, []), records.get(run, {})
            if not s and not r:
                continue
            families: dict[str, int] = {}
            for t in s:
                families[family_of(t)] = families.get(family_of(t), 0) + 1
            out[run] = {"records": r, "scalar_families": families, "scalar_tags": len(s), "tags": s}
        return out

    def read_scalars(self, run: str, tags: Sequence[str], downsample: int = MAX_POINTS
                     ) -> dict[str, list[tuple[int, float]]]:
        """``{tag: [(step, value)]}``, at most ``downsample`` points per tag (TensorBoard's sampling)."""
        from tensorboard.data import provider

        out, missing = {}, []
        for t in tags:
            version = self._versions.get((run, t))
            hit = self._cache.get((self._eid, run, t, downsample), version) if self._cache and version else None
            if hit is None:
                missing.append(t)
            else:
                out[t] = hit
        if not missing:
            return out
        data = self._dp.read_scalars(self._ctx, experiment_id=self._eid, plugin_name=SCALARS_PLUGIN,
                                     downsample=downsample, run_tag_filter=provider.RunTagFilter([run], missing))
        for t, points in data.get(run, {}).items():
            out[t] = sorted((d.step, float(d.value)) for d in points)
            version = self._versions.get((run, t))
            if self._cache is not None and version is not None:
                self._cache.put((self._eid, run, t, downsample), version, out[t])
        return out

    def read_records(self, run: str, tags: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """``{tag: [{"step", "wall_time", "payload"}]}`` in step order; a record that is not a JSON
        object is left out and listed in ``skipped_records``."""
        from tensorboard.data import provider

        if not tags:
            return {}
        # Records are few (one per alert or evaluation); the plugin's loader asks TensorBoard to keep them all.
        data = self._dp.read_tensors(self._ctx, experiment_id=self._eid, plugin_name=PLUGIN_NAME,
                                     downsample=100_000, run_tag_filter=provider.RunTagFilter([run], list(tags)))
        out = {}
        for tag, points in data.get(run, {}).items():
            rows = []
            for d in sorted(points, key=lambda d: d.step):
                try:
                    payload = schema.decode_record(d.numpy)
                except schema.RecordError as e:
                    self.skipped_records.append({"kind": "record", "run": run, "file": f"{tag} at step {d.step}",
                                                "reason": str(e)})
                    continue
                rows.append({"step": int(d.step), "wall_time": float(d.wall_time), "payload": payload})
            out[tag] = rows
        return out


class EventFileChecks:
    """Which event files under a local logdir could not be read whole, for the ``skipped`` field.

    Each check frames only the bytes a file gained since the last one
    (`tfrs_diag.schema.check_event_file`), so a growing log costs its new records.
    A record cut short may be one its writer is still writing: the next check resumes
    at it and the entry goes once the record is whole. Thread-safe.
    """

    def __init__(self, logdir: str | None):
        self._logdir = logdir
        self._lock = threading.Lock()
        self._scans: dict[str, tuple[tuple[int, int], schema.FileScan]] = {}

    def skipped(self) -> list[dict[str, str]]:
        """``[{"kind": "file", "run", "file", "reason"}]``, the run as TensorBoard names it ("." for the logdir)."""
        if not self._logdir or not os.path.isdir(self._logdir):
            return []  # not a local directory (e.g. gs://): only TensorBoard reads it
        out = []
        for root, dirs, files in os.walk(self._logdir):
            dirs.sort()
            for name in sorted(f for f in files if f.startswith("events.out.tfevents.")):
                reason = self._check(os.path.join(root, name))
                if reason:
                    out.append({"kind": "file", "run": os.path.relpath(root, self._logdir), "file": name,
                                "reason": reason})
        return out

    def _check(self, path: str) -> str | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None  # gone since the walk
        version = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._scans.get(path)
        if known is not None and known[0] == version:
            return known[1].problem
        # Resume where the last check ended, unless the file shrank (rewritten).
        start = known[1] if known is not None and stat.st_size >= known[1].end else None
        scan = schema.check_event_file(path, start)
        with self._lock:
            self._scans[path] = (version, scan)
        return scan.problem


# ---------------------------------------------------------------- views of one run


def overview(reader: LogReader, run: str, listing: Mapping[str, Any],
             skipped_files: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """Everything the page draws for ``run`` (see the module docstring).

    ``listing`` is `LogReader.runs()`, which every route has already read;
    ``skipped_files`` are `EventFileChecks.skipped` entries (those of ``run`` are kept).
    """
    record_types = listing.get(run, {}).get("records", {})
    scalar_tags = listing.get(run, {}).get("tags", [])
    if not record_types and not scalar_tags:
        raise BadRequest("unknown run")
    wanted = [t for t in scalar_tags if not t.startswith(PER_VARIABLE_PREFIXES)]
    # Everything TensorBoard holds (its sampling is random), then our spike-keeping downsample.
    scalars = reader.read_scalars(run, wanted)
    layer_series = {t[len(LAYER_NORM_PREFIX):]: s for t, s in scalars.items() if t.startswith(LAYER_NORM_PREFIX)}
    records = reader.read_records(run, list(record_types))
    alerts = expand_alert_records((r["step"], r["payload"]) for r in records.pop(ALERT_TAG, []))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for tag, rows in records.items():
        for row in rows[-OVERVIEW_RECORDS:]:
            by_type.setdefault(record_types.get(tag, "unknown"), []).append({"tag": tag, **row})
    return {
        "run": run,
        "alerts": alerts,
        "gradients": {
            "layer_norm": heatmap(layer_series),
            "variables": sum(1 for t in scalar_tags if t.startswith(schema.TAGS["grad_norm"])),
        },
        "scalars": {t: encode_series(downsample(s, OVERVIEW_POINTS)) for t, s in scalars.items()
                    if not t.startswith(LAYER_NORM_PREFIX)},
        "records": by_type,
        "histograms": reader.latest_histograms(run),
        "families": sorted({family_of(t) for t in scalar_tags} | {family_of(t) for t in record_types}),
        "skipped": [e for e in skipped_files if e["run"] == run] + reader.skipped_records,
    }


# ---------------------------------------------------------------- the plugin


class RecsysDiagnosticsPlugin(base_plugin.TBPlugin):
    """TensorBoard plugin "Recsys diagnostics" (see the module docstring)."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._data_provider = context.data_provider
        self._cache = SeriesCache()
        self._file_checks = EventFileChecks(getattr(context, "logdir", None))
        # The only files ever served: what ships in static/, read once.
        self._static: dict[str, tuple[bytes, str]] = {}
        for name in sorted(os.listdir(_STATIC_DIR)):
            path = os.path.join(_STATIC_DIR, name)
            if os.path.isfile(path) and not name.startswith("."):
                with open(path, "rb") as f:
                    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    self._static[name] = (f.read(), "text/javascript" if name.endswith(".js") else mime)

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/overview": self._serve_overview,
            "/scalars": self._serve_scalars,
            "/records": self._serve_records,
            "/page": self._serve_page,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        """Asked only when no run holds tfrs_diag records: then active if tfrs_diag scalars exist."""
        from tensorboard import context

        reader = LogReader(self._data_provider, context.RequestContext(), "")
        return any(reader.scalar_tags().values())

    def data_plugin_names(self):
        return (PLUGIN_NAME,)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Recsys diagnostics",
                                            disable_reload=False)

    # -- helpers
    def _reader(self, request) -> LogReader:
        return LogReader(self._data_provider, plugin_util.context(request.environ),
                         plugin_util.experiment_id(request.environ), self._cache)

    @staticmethod
    def _json(request, body, code: int = 200):
        return http_util.Respond(request, body, "application/json", code=code)

    def _handle(self, request, fn):
        try:
            return self._json(request, fn())
        except BadRequest as e:
            return self._json(request, {"error": str(e)}, code=400)

    def _known_run(self, reader: LogReader, request) -> tuple[str, dict[str, Any]]:
        """The validated ``run`` parameter and the listing of every run (`LogReader.runs`)."""
        listing = reader.runs()
        run = _check_text("run", request.args.get("run"))
        if run not in listing:
            raise BadRequest("unknown run")
        return run, listing

    # -- routes
    @wrappers.Request.application
    def _serve_runs(self, request):
        def body():
            runs = self._reader(request).runs()
            return {"runs": {run: {k: v for k, v in info.items() if k != "tags"} for run, info in runs.items()},
                    "schema": schema.frontend_schema(), "skipped": self._file_checks.skipped()}

        return self._handle(request, body)

    def _run_route(self, request, fn):
        """Answers ``fn(request, reader, run, listing)`` for a validated ``run`` (400 otherwise)."""
        def body():
            reader = self._reader(request)
            return fn(request, reader, *self._known_run(reader, request))

        return self._handle(request, body)

    @wrappers.Request.application
    def _serve_overview(self, request):
        return self._run_route(request, lambda _, reader, run, listing: overview(
            reader, run, listing, self._file_checks.skipped()))

    @wrappers.Request.application
    def _serve_scalars(self, request):
        return self._run_route(request, self._scalars)

    @wrappers.Request.application
    def _serve_records(self, request):
        return self._run_route(request, self._records)

    @staticmethod
    def _scalars(request, reader: LogReader, run: str, listing) -> dict[str, Any]:
        tag = _check_text("tag", request.args.get("tag"), required=False)
        prefix = _check_text("prefix", request.args.get("prefix"), required=False)
        if (tag is None) == (prefix is None):
            raise BadRequest("pass exactly one of 'tag' and 'prefix'")
        max_points = _max_points(request.args.get("max_points"), MAX_POINTS)
        known = listing[run]["tags"]
        if tag is not None:
            if tag not in known:
                raise BadRequest("unknown tag")
            tags = [tag]
        else:
            if not prefix.startswith(PREFIX):
                raise BadRequest(f"prefix must start with {PREFIX!r}")
            tags = [t for t in known if t.startswith(prefix)]
            if not tags:
                raise BadRequest("no scalar tag has this prefix")
        series = reader.read_scalars(run, tags)
        return {"run": run, "scalars": {t: encode_series(downsample(s, max_points)) for t, s in series.items()}}

    @staticmethod
    def _records(request, reader: LogReader, run: str, listing) -> dict[str, Any]:
        tag = _check_text("tag", request.args.get("tag"))
        types = listing[run]["records"]
        if tag not in types:
            raise BadRequest("unknown tag")
        rows = reader.read_records(run, [tag]).get(tag, [])
        if tag == ALERT_TAG:
            return {"run": run, "tag": tag, "type": "alert",
                    "alerts": expand_alert_records((r["step"], r["payload"]) for r in rows)}
        return {"run": run, "tag": tag, "type": types[tag], "records": rows}

    @wrappers.Request.application
    def _serve_page(self, request):
        return http_util.Respond(request, _PAGE, "text/html", csp_scripts_sha256s=[_PAGE_SCRIPT_SHA256])

    @wrappers.Request.application
    def _serve_static(self, request):
        # Exact names of shipped files only: no path is ever joined with request input.
        name = request.path[request.path.find(_STATIC_ROUTE) + len(_STATIC_ROUTE):]
        entry = self._static.get(name)
        if entry is None:
            return http_util.Respond(request, "Not found", "text/plain", code=404)
        return http_util.Respond(request, entry[0], entry[1])


class RecsysDiagnosticsLoader(base_plugin.TBLoader):
    """Loads the plugin and asks TensorBoard to keep every tfrs_diag record.

    TensorBoard keeps 10 samples per tag for plugins it does not know (with
    ``--load_fast=false``), which would drop alerts; records are small and few, so the
    loader sets ``--samples_per_plugin tfrs_diag=0`` (all) unless the user set it.
    """

    def fix_flags(self, flags):
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):  # as parsed from the command line
            samples.setdefault(PLUGIN_NAME, 0)

    def load(self, context):
        return RecsysDiagnosticsPlugin(context)


def make_wsgi_app(logdir: str, *, load_fast: bool = False, extra_plugins: Sequence[type] = ()):
    """A WSGI app serving only this plugin over ``logdir``, loaded once (tests, benchmarks).

    ``load_fast=False`` reads with TensorBoard's Python multiplexer (``--load_fast=false``),
    loaded before returning; ``True`` starts TensorBoard's Rust data server (the default
    ``--load_fast``), which loads in the background and exits with this process or on
    ``app.close()``. Routes are under ``/data/plugin/tfrs_diag/``; ``extra_plugins``
    (TBPlugin classes, e.g. TensorBoard's ScalarsPlugin) are served beside it.

    Not run here: it needs a log directory of a training run (tests/test_tensorboard_plugin.py serves one).

    >>> app = make_wsgi_app("logs")                                   # doctest: +SKIP
    >>> werkzeug.test.Client(app).get("/data/plugin/tfrs_diag/runs")  # doctest: +SKIP
    """
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_ingester
    from tensorboard.backend.event_processing import data_provider as mux_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    if load_fast:
        from tensorboard.data import server_ingester
        from tensorboard.util import grpc_util

        ingester = server_ingester.SubprocessServerDataIngester(
            server_binary=server_ingester.get_server_binary(), logdir=logdir, reload_interval=0,
            channel_creds_type=grpc_util.ChannelCredsType.LOCAL, samples_per_plugin={PLUGIN_NAME: 0})
        ingester.start()
        provider = ingester.data_provider
    else:
        multiplexer = plugin_event_multiplexer.EventMultiplexer(
            size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
            tensor_size_guidance={**data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE, PLUGIN_NAME: 0})
        multiplexer.AddRunsFromDirectory(logdir)
        multiplexer.Reload()
        provider = mux_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(data_provider=provider, logdir=logdir)
    plugins = [RecsysDiagnosticsLoader().load(context)] + [cls(context) for cls in extra_plugins]
    app = application.TensorBoardWSGI(plugins, data_provider=provider)
    # The data server exits when its stdin closes (--die-after-stdin).
    app.close = (lambda: ingester._stdin_handle.close()) if load_fast else (lambda: None)
    return app

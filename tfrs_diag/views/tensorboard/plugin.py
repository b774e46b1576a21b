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
- ``overview?run=R``: what the page draws for one run: alerts, the active ones
  (`tfrs_diag.summary.alerts.active_alerts`) and the counts fired and cleared, the gradient heatmap,
  every scalar series except per-variable gradient ones (downsampled), the records
  (tables, Lorenz curves, explanations), the newest histogram of each histogram tag;
- ``scalars?run=R&tag=T`` or ``scalars?run=R&prefix=P`` (``max_points`` <= 1000);
- ``records?run=R&tag=T``: every record of one tag;
- ``page``: a stand-alone HTML page of the dashboard (the same ES module);
- ``static/<file>``: the front end (only files shipped in ``static/``).

Bad or unknown ``run``/``tag``/``prefix``/``max_points`` get 400; any other static path
404. Nothing is read from disk but the shipped static files and, for ``skipped``, the
framing of the logdir's event files (`tfrs_diag.summary.events.check_event_file`, resumed where
the last check ended).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re
from typing import Any, Sequence

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tfrs_diag.summary import schema
from tfrs_diag.summary.schema import ALERT_TAG, PLUGIN_NAME, PREFIX, expand_alert_records
from tfrs_diag.views.tensorboard.reader import BadRequest, EventFileChecks, LogReader, SeriesCache, overview
from tfrs_diag.views.tensorboard.series import MAX_POINTS, downsample, encode_series

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC_ROUTE = "/static/"
_MAX_PARAM = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_PAGE_SCRIPT = 'import("./static/index.js").then((m) => m.render());'
_PAGE = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Recsys diagnostics</title></head>\n'
         f'<body><script type="module">{_PAGE_SCRIPT}</script></body></html>\n').encode()
# TensorBoard's Content-Security-Policy allows an inline script only by its hash.
_PAGE_SCRIPT_SHA256 = base64.b64encode(hashlib.sha256(_PAGE_SCRIPT.encode()).digest()).decode()


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

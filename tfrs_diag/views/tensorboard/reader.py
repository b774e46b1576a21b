"""Reading a run through TensorBoard's data provider: scalars, records, histograms, the overview.

Only the data provider is read (so the default ``--load_fast`` Rust data server works),
except for `EventFileChecks`, which frames the logdir's event files to list what a
killed writer or a foreign file left unreadable.
"""

import os
import threading
from typing import Any, Mapping, Sequence


from tfrs_diag.summary import events, schema
from tfrs_diag.summary.alerts import active_alerts
from tfrs_diag.views.tensorboard.series import (
    MAX_HISTOGRAMS,
    MAX_POINTS,
    OVERVIEW_POINTS,
    OVERVIEW_RECORDS,
    downsample,
    encode_series,
    finite_or_text,
    heatmap,
)
from tfrs_diag.summary.schema import ALERT_TAG, PER_VARIABLE_PREFIXES, PLUGIN_NAME, PREFIX, expand_alert_records, family_of

SCALARS_PLUGIN = "scalars"
HISTOGRAMS_PLUGIN = "histograms"
LAYER_NORM_PREFIX = schema.TAGS["grad_layer_norm"]


class BadRequest(ValueError):
    """A request parameter is missing, malformed or names nothing in the logdir (HTTP 400)."""


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
    (`tfrs_diag.summary.events.check_event_file`), so a growing log costs its new records.
    A record cut short may be one its writer is still writing: the next check resumes
    at it and the entry goes once the record is whole. Thread-safe.
    """

    def __init__(self, logdir: str | None):
        self._logdir = logdir
        self._lock = threading.Lock()
        self._scans: dict[str, tuple[tuple[int, int], events.FileScan]] = {}

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
        scan = events.check_event_file(path, start)
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
        # The page's summary: what is still wrong, and how many fired and went away.
        "active_alerts": active_alerts(alerts),
        "alert_counts": {"fired": sum(a.get("status") != "cleared" for a in alerts),
                         "cleared": sum(a.get("status") == "cleared" for a in alerts)},
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

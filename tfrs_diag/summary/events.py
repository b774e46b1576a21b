"""Reading a run directory's event files back, without TensorFlow, tolerant of damage.

`read_run` decodes every event file of a run, skipping (and listing in
``RunData.skipped``) what it cannot read: a record cut short by a killed writer, a file
that is not an event file, a foreign or undecodable record.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import struct
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from tfrs_diag.summary.schema import ALERT_TAG, PLUGIN_NAME, RecordError, decode_record, expand_alert_records

_logger = logging.getLogger("tfrs_diag")


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


def iter_alerts(run_dirs: Iterable[str]) -> list[dict]:
    """Every alert of the run directories ``run_dirs`` (`read_run` each, then `RunData.alerts`)."""
    out: list[dict] = []
    for d in run_dirs:
        out.extend(read_run(d).alerts())
    return out

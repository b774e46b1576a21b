"""Write: what the diagnostics put in TensorBoard event files, and reading it back.

- `schema`: every tag, record type and alert kind, the one alert formatter;
- `writer`: the shared, failure-tolerant summary writers (`writer_for`, `write_scalar`, ...);
- `alerts`: `AlertLog`, one record and one line per alert, deduplicated;
- `events`: `read_run`, the one tolerant decoder of a run directory's event files.

The names most code needs are importable from here.

>>> import tfrs_diag.summary as s
>>> s.tag("grad", "norm", "user_model/embedding/embeddings:0")
'tfrs_diag/grad/norm/user_model/embedding/embeddings'
"""

from tfrs_diag.summary.alerts import AlertLog
from tfrs_diag.summary.events import RunData, iter_alerts, read_run
from tfrs_diag.summary.schema import (
    ALERT_KINDS,
    ALERT_TAG,
    FAMILIES,
    PLUGIN_NAME,
    PREFIX,
    SCHEMA_VERSION,
    SEVERITIES,
    Alert,
    clean_name,
    encode_record,
    expand_alert_records,
    record_metadata,
    tag,
)
from tfrs_diag.summary.writer import (
    RETRY_SECONDS,
    WRITE_ERRORS,
    ScalarBatch,
    SummaryWriter,
    SummaryWriteWarning,
    check_log_dir,
    close_writer,
    histogram_metadata,
    write_failures,
    write_histogram,
    write_record,
    write_scalar,
    writer_for,
)

__all__ = [
    "ALERT_KINDS", "ALERT_TAG", "FAMILIES", "PLUGIN_NAME", "PREFIX", "RETRY_SECONDS", "SCHEMA_VERSION", "SEVERITIES",
    "WRITE_ERRORS", "Alert", "AlertLog", "RunData", "ScalarBatch", "SummaryWriteWarning", "SummaryWriter",
    "check_log_dir", "clean_name", "close_writer", "encode_record", "expand_alert_records", "histogram_metadata",
    "iter_alerts", "read_run", "record_metadata", "tag", "write_failures", "write_histogram", "write_record",
    "write_scalar", "writer_for",
]

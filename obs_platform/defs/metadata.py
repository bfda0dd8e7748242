"""Turning library results into Dagster metadata values (presentation only)."""

import time
from typing import Any

import dagster as dg
import pandas as pd

_KINDS = {"i": "int", "u": "int", "f": "float", "b": "bool"}


def table(frame: pd.DataFrame, max_rows: int = 200) -> dg.TableMetadataValue:
    """A DataFrame as a typed Dagster table (the UI renders it with column types)."""
    shown = frame.head(max_rows)
    columns = [dg.TableColumn(str(c), _KINDS.get(shown[c].dtype.kind, "string")) for c in shown.columns]
    records = [dg.TableRecord({str(k): _plain(v) for k, v in row.items()}) for row in shown.to_dict(orient="records")]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def submitted_job(job_id: str, backend: str, **facts: Any) -> dict[str, Any]:
    """A job asset's metadata for a job it has just submitted: the keys the job-status sensor and `obs-platform jobs`
    read a submission by (`tuning_job_sensor`, `job_log`), then the asset's own facts."""
    return {"outcome": "submitted", "job_id": job_id, "backend": backend, "submitted_at": time.time(), **facts}


def _plain(value: object) -> object:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)

"""Read raw observation exports (CSV, JSON, JSONL) into one table, one row per record.

Nothing is lost here: a line that is not valid UTF-8 or not valid JSON, or a CSV row with the wrong
number of fields, becomes a row with `parse_error` set and its original text kept in `raw_text`, so the
canonical step can quarantine it with a reason. Every row remembers its source file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import Storage

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
PROVENANCE_COLUMNS = ["source_file", "source_line", "parse_error", "raw_text"]
_SURROGATE = re.compile("[\udc80-\udcff]")
# Long narratives with embedded newlines live inside quoted CSV fields.
csv.field_size_limit(16 * 1024 * 1024)


@dataclass
class RawReadResult:
    table: pd.DataFrame
    files: list[str]
    ignored_files: list[str] = field(default_factory=list)


@without_gc_pauses
def read_landing(storage: Storage, prefix: str) -> RawReadResult:
    """Every supported file below `prefix`, concatenated; unsupported files are listed, not read."""
    files, ignored = [], []
    frames: list[pd.DataFrame] = []
    for path in storage.list_files(prefix):
        if path.lower().endswith(SUPPORTED_SUFFIXES):
            files.append(path)
            frames.append(parse_export(path, storage.read_bytes(path)))
        else:
            ignored.append(path)
    table = pd.concat(frames, ignore_index=True, sort=False) if frames else empty_raw_table()
    return RawReadResult(table=table, files=files, ignored_files=ignored)


def empty_raw_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in PROVENANCE_COLUMNS})


def parse_export(name: str, data: bytes) -> pd.DataFrame:
    """Parse one export by its suffix into rows of payload fields plus provenance columns."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        rows = _csv_rows(data)
    elif lowered.endswith(".json"):
        rows = _json_document_rows(data)
    else:
        fast = _clean_jsonl_table(data)
        if fast is not None:
            fast["source_file"] = name
            return fast
        rows = _jsonl_rows(data)
    frame = pd.DataFrame.from_records(rows) if rows else empty_raw_table()
    for column in PROVENANCE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["source_file"] = name
    return frame


def _error_row(line: int, error: str, raw: bytes | str) -> dict[str, Any]:
    text = raw.decode("utf-8", errors="backslashreplace") if isinstance(raw, bytes) else raw
    return {"source_line": line, "parse_error": error, "raw_text": text}


def _not_an_object(line: int, value: Any, raw: bytes | str) -> dict[str, Any]:
    return _error_row(line, f"invalid_record: expected a JSON object, got {type(value).__name__}", raw)


def _clean_jsonl_table(data: bytes) -> pd.DataFrame | None:
    """Arrow's multi-threaded JSON reader for the common case, a clean export; None when any line is broken,
    not an object, or disagrees with the others on a field's type (then every line is parsed on its own)."""
    if not data.strip():
        return None
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=pa_json.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    line_count = data.count(b"\n") + (not data.endswith(b"\n"))
    if table.num_rows == line_count:  # one record per line: line numbers are row numbers
        numbers: Any = pd.RangeIndex(1, table.num_rows + 1)
    else:  # blank lines between records: count them out
        numbers = [i for i, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
        if len(numbers) != table.num_rows:
            return None
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    frame["source_line"] = numbers
    frame["parse_error"] = None
    frame["raw_text"] = None
    return frame


def _jsonl_rows(data: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rows.append(_error_row(number, _decode_failure(line, exc), line))
            continue
        if isinstance(value, dict):
            value["source_line"] = number
            rows.append(value)
        else:
            rows.append(_not_an_object(number, value, line))
    return rows


def _decode_failure(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid_utf8: byte 0x{raw[bad.start]:02x} at offset {bad.start} is not valid UTF-8"
    return f"invalid_json: {exc}"


def _json_document_rows(data: bytes) -> list[dict[str, Any]]:
    """A `.json` file holds a list of records, or an object with one list of records inside."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        line = data.count(b"\n", 0, getattr(exc, "pos", 0) or 0) + 1
        return [_error_row(line, _decode_failure(data, exc), data)]
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        document = lists[0] if len(lists) == 1 else [document]
    if not isinstance(document, list):
        return [_not_an_object(1, document, data)]
    rows = []
    for position, value in enumerate(document, start=1):
        if isinstance(value, dict):
            rows.append({**value, "source_line": position})
        else:
            rows.append(_not_an_object(position, value, orjson.dumps(value).decode()))
    return rows


def _csv_rows(data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
        check_encoding = False
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
        check_encoding = True
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    rows: list[dict[str, Any]] = []
    for start_line, fields in _numbered(reader):
        if not any(f.strip() for f in fields):
            continue
        raw_line = ",".join(fields)
        if check_encoding and _SURROGATE.search(raw_line):
            encoded = raw_line.encode("utf-8", errors="surrogateescape")
            try:
                encoded.decode("utf-8")
            except UnicodeDecodeError as bad:
                message = f"invalid_utf8: byte 0x{encoded[bad.start]:02x} at offset {bad.start} is not valid UTF-8"
                rows.append(_error_row(start_line, message, encoded))
                continue
        if len(fields) != len(header):
            message = f"invalid_csv_row: {len(fields)} fields where the header has {len(header)}"
            rows.append(_error_row(start_line, message, raw_line))
            continue
        record: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)}
        record["source_line"] = start_line
        rows.append(record)
    return rows


def _numbered(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line of the row, fields): multi-line quoted fields span several lines."""
    previous_end = reader.line_num
    for fields in reader:
        yield previous_end + 1, fields
        previous_end = reader.line_num

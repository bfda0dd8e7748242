"""Read raw observation exports (CSV, JSON, JSONL) into one table, one row per record.

Nothing is lost here. Each file's encoding is found on its own (a byte order mark, a UTF-16 NUL-byte
pattern, strict UTF-8, then a fallback such as cp1252) and recorded on its rows. A line that does not
decode, is not valid JSON, repeats a key, or a CSV row with the wrong number of fields becomes a row with
`parse_error` set and its original text kept in `raw_text`, so the canonical step can quarantine it with a
reason. A file that cannot be read at all (a symbolic link, binary content, a read error) becomes one such
row of its own, and every other file is still read. Every row remembers its source file and line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import LocalStorage, Storage, StorageError

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
PROVENANCE_COLUMNS = ["source_file", "source_line", "source_encoding", "parse_error", "raw_text"]
# What a file that is not UTF-8 and has no byte order mark is read as: exports saved on Windows.
FALLBACK_ENCODING = "cp1252"
# Long narratives with embedded newlines live inside quoted CSV fields.
csv.field_size_limit(16 * 1024 * 1024)

# Undecodable bytes become lone surrogates U+DC00 + byte (as `surrogateescape` does, for every byte and
# every codec), so a damaged line is found, reported and shown byte for byte without stopping the file.
_ESCAPE = "obs_platform.escape"
_UNDECODABLE = re.compile("[\udc00-\udcff]")
_DECODED_NON_ASCII = re.compile("[^\x00-\x7f\udc00-\udcff]")
_SPACED_KEY = re.compile(rb'"[ \t\r\n]+:')
# Checked in order: UTF-32's marks begin with UTF-16's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _escape_undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(chr(0xDC00 + byte) for byte in error.object[error.start : error.end]), error.end


codecs.register_error(_ESCAPE, _escape_undecodable)


class UnreadableExport(Exception):
    """A landed file that cannot be read at all: it is quarantined as a whole, under `code`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class DecodedExport:
    text: str
    encoding: str  # a Python codec name: utf-8, utf-8-sig, utf-16, utf-16-le, cp1252, ...
    damaged: bool  # some bytes did not decode: the lines holding them become error rows

    @classmethod
    def of(cls, data: bytes, encoding: str) -> DecodedExport:
        text = data.decode(encoding, errors=_ESCAPE)
        return cls(text, encoding, _UNDECODABLE.search(text) is not None)


@dataclass
class RawReadResult:
    table: pd.DataFrame
    files: list[str]
    ignored_files: list[str] = field(default_factory=list)
    encodings: dict[str, str] = field(default_factory=dict)  # file → the codec it was decoded with
    unreadable_files: dict[str, str] = field(default_factory=dict)  # file → why it was quarantined whole


@without_gc_pauses
def read_landing(storage: Storage, prefix: str, fallback_encoding: str = FALLBACK_ENCODING) -> RawReadResult:
    """Every supported file below `prefix`, concatenated; unsupported files are listed, not read."""
    result = RawReadResult(table=empty_raw_table(), files=[])
    frames: list[pd.DataFrame] = []
    for path in storage.list_files(prefix):
        if not path.lower().endswith(SUPPORTED_SUFFIXES):
            result.ignored_files.append(path)
            continue
        result.files.append(path)
        try:
            frame = parse_export(path, read_export_bytes(storage, path), fallback_encoding)
        except UnreadableExport as unreadable:
            frame = unreadable_file_row(path, unreadable)
        frames.append(frame)
        if len(frame) == 1 and pd.isna(frame["source_line"].iloc[0]):
            result.unreadable_files[path] = frame["parse_error"].iloc[0]
        elif len(frame):
            result.encodings[path] = frame["source_encoding"].iloc[0]
    for link in linked_folders(storage, prefix):
        unreadable = UnreadableExport("symlink_refused", link_message(storage, link))
        frames.append(unreadable_file_row(link, unreadable))
        result.unreadable_files[link] = str(unreadable)
    frames = [frame for frame in frames if len(frame)]  # an empty file adds no rows (nor column dtypes)
    if frames:
        result.table = pd.concat(frames, ignore_index=True, sort=False)
        # one dtype whatever the files were: a file quarantined whole has no line (<NA>, as downstream)
        result.table["source_line"] = pd.to_numeric(result.table["source_line"]).astype("Int64")
    return result


def read_export_bytes(storage: Storage, path: str) -> bytes:
    """A landed file's bytes; a symbolic link is refused, whatever it points at, so nothing outside the
    landing area is ever read through it."""
    _refuse_link(storage, path)
    try:
        return storage.read_bytes(path)
    except StorageError as exc:
        raise UnreadableExport("unreadable_file", str(exc)) from exc


def export_sha256(storage: Storage, path: str) -> tuple[str, int]:
    """A landed file's sha256 and size, refused as `read_export_bytes` refuses it. A local file is hashed in blocks
    as it is read, never held whole: a million rows' exports hash in about half the time, without 400 MB to fault
    in."""
    if not isinstance(storage, LocalStorage):
        data = read_export_bytes(storage, path)
        return hashlib.sha256(data).hexdigest(), len(data)
    _refuse_link(storage, path)
    try:
        with storage.local_path(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest(), handle.tell()
    except OSError as exc:
        raise UnreadableExport("unreadable_file", f"cannot read {storage.uri(path)}: {exc}") from exc


def _refuse_link(storage: Storage, path: str) -> None:
    if isinstance(storage, LocalStorage) and storage.local_path(path).is_symlink():
        raise UnreadableExport("symlink_refused", link_message(storage, path))


def link_message(storage: Storage, path: str) -> str:
    target = os.readlink(storage.local_path(path)) if isinstance(storage, LocalStorage) else "?"
    return f"{path} is a symbolic link (to {target}); only regular files in the landing area are read"


def linked_folders(storage: Storage, prefix: str) -> list[str]:
    """Symbolically linked folders below the landing area: not followed, so reported here."""
    if not isinstance(storage, LocalStorage):
        return []
    found = []
    for current, folders, _ in os.walk(storage.local_path(prefix)):
        for name in folders:
            if (folder := Path(current, name)).is_symlink():
                found.append(folder.relative_to(storage.root).as_posix())
    return sorted(found)


def empty_raw_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in PROVENANCE_COLUMNS})


def unreadable_file_row(name: str, unreadable: UnreadableExport) -> pd.DataFrame:
    row = {"source_file": name, "source_line": pd.NA, "source_encoding": None, "parse_error": str(unreadable)}
    return pd.DataFrame([{**row, "raw_text": ""}], columns=PROVENANCE_COLUMNS).astype({"source_line": "Int64"})


def decode_export(data: bytes, fallback_encoding: str = FALLBACK_ENCODING) -> DecodedExport:
    """Find one file's encoding: a byte order mark, a UTF-16 NUL pattern, strict UTF-8, UTF-8 with a few
    damaged bytes (when real multi-byte UTF-8 text is there too), else `fallback_encoding`."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return DecodedExport.of(data, encoding)
    has_nul = b"\x00" in data
    if has_nul and (utf16 := _utf16_by_nul_pattern(data)):
        return DecodedExport.of(data, utf16)
    try:
        return DecodedExport(data.decode("utf-8"), "utf-8", damaged=False)
    except UnicodeDecodeError:
        pass
    if has_nul:
        raise UnreadableExport("binary_file", "holds NUL bytes and is neither UTF-8 nor UTF-16 text")
    as_utf8 = DecodedExport.of(data, "utf-8")
    if _DECODED_NON_ASCII.search(as_utf8.text):
        return as_utf8
    return DecodedExport.of(data, fallback_encoding)


def _utf16_by_nul_pattern(data: bytes) -> str | None:
    """Mostly-ASCII UTF-16 without a byte order mark: every other byte is NUL."""
    pairs = max(len(data) // 2, 1)
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd > 0.3 * pairs and even < odd / 10:
        return "utf-16-le"
    if even > 0.3 * pairs and odd < even / 10:
        return "utf-16-be"
    return None


def parse_export(name: str, data: bytes, fallback_encoding: str = FALLBACK_ENCODING) -> pd.DataFrame:
    """Parse one export by its suffix into rows of payload fields plus provenance columns; a file that
    cannot be read at all becomes one error row."""
    lowered = name.lower()
    try:
        if lowered.endswith((".jsonl", ".ndjson")):
            fast = _clean_jsonl_fast(data)
            if fast is not None:
                frame, encoding = fast
            else:
                frame, encoding = _jsonl_frame(data, decode_export(data, fallback_encoding))
        else:
            decoded = decode_export(data, fallback_encoding)
            rows = _csv_rows(decoded) if lowered.endswith(".csv") else _json_document_rows(decoded)
            frame, encoding = _records_frame(rows), decoded.encoding
    except UnreadableExport as unreadable:
        return unreadable_file_row(name, unreadable)
    frame["source_file"] = name
    frame["source_encoding"] = encoding
    return frame


def _records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows) if rows else empty_raw_table()
    for column in PROVENANCE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame


def _error_row(line: int, error: str, raw: str) -> dict[str, Any]:
    shown = _UNDECODABLE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}", raw)
    return {"source_line": line, "parse_error": error, "raw_text": shown}


def _not_an_object(line: int, value: Any, raw: str) -> dict[str, Any]:
    return _error_row(line, f"invalid_record: expected a JSON object, got {type(value).__name__}", raw)


def _undecodable(line: int, raw: str, encoding: str) -> dict[str, Any] | None:
    """The error row of a line holding bytes that did not decode, or None for a clean line."""
    found = _UNDECODABLE.search(raw)
    if found is None:
        return None
    byte = ord(found[0]) - 0xDC00
    utf8 = encoding in ("utf-8", "utf-8-sig")
    code, label = ("invalid_utf8", "UTF-8") if utf8 else ("invalid_encoding", encoding)
    return _error_row(line, f"{code}: byte 0x{byte:02x} at character {found.start()} is not valid {label}", raw)


# ----- JSON Lines ---------------------------------------------------------------------------------


def _clean_jsonl_fast(data: bytes) -> tuple[pd.DataFrame, str] | None:
    """The common case, a clean UTF-8 export, without decoding it in Python first: Arrow parses it and
    checks its strings are valid UTF-8. None for anything else (then the file's encoding is detected)."""
    encoding = "utf-8"
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8) :], "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        return None
    frame = _clean_jsonl_table(data)
    return (frame, encoding) if frame is not None else None


def _clean_jsonl_table(data: bytes) -> pd.DataFrame | None:
    """Arrow's multi-threaded JSON reader for the common case, a clean export; None when any line is broken,
    not an object, repeats a key (Arrow refuses those), disagrees with the others on a field's type, or holds
    bytes that are not UTF-8 (then every line is parsed on its own)."""
    if not data.strip():
        return None
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=pa_json.ParseOptions(newlines_in_values=False))
        table.validate(full=True)  # strings must be UTF-8: Arrow's parser does not check
        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    line_count = data.count(b"\n") + (not data.endswith(b"\n"))
    if table.num_rows == line_count:  # one record per line: line numbers are row numbers
        numbers: Any = pd.RangeIndex(1, table.num_rows + 1)
    else:  # blank lines between records: count them out
        numbers = [i for i, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
        if len(numbers) != table.num_rows:
            return None
    frame["source_line"] = numbers
    frame["parse_error"] = None
    frame["raw_text"] = None
    return frame


def _jsonl_frame(data: bytes, decoded: DecodedExport) -> tuple[pd.DataFrame, str]:
    """A JSONL export that is not clean UTF-8: another encoding, transcoded (then Arrow may still read it
    whole), or broken lines, parsed one by one. Lines stay UTF-8 bytes, which orjson reads fastest."""
    if decoded.encoding in ("utf-8", "utf-8-sig"):
        return _records_frame(_jsonl_rows(data.removeprefix(codecs.BOM_UTF8), decoded.encoding)), decoded.encoding
    # surrogatepass keeps the undecodable-byte marks, as bytes orjson refuses, so their lines become error rows
    utf8 = decoded.text.encode("utf-8", errors="surrogatepass")
    frame = None if decoded.damaged else _clean_jsonl_table(utf8)
    return (frame if frame is not None else _records_frame(_jsonl_rows(utf8, decoded.encoding))), decoded.encoding


def _jsonl_rows(utf8: bytes, encoding: str) -> list[dict[str, Any]]:
    """One row per non-blank line of UTF-8 bytes (transcoded from `encoding` unless that is UTF-8)."""
    # Bytes that did not decode: raw in a UTF-8 export, marks (lone surrogates) in a transcoded one.
    undecoded = _ESCAPE if encoding in ("utf-8", "utf-8-sig") else "surrogatepass"
    if b"\r" in utf8:  # JSON strings cannot hold a raw line break, so a lone CR ends a line as LF does
        utf8 = utf8.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(utf8.split(b"\n"), start=1):
        if not line.strip(b" \t"):
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            text = line.decode("utf-8", errors=undecoded)
            rows.append(_undecodable(number, text, encoding) or _error_row(number, f"invalid_json: {exc}", text))
            continue
        if not isinstance(value, dict):
            rows.append(_not_an_object(number, value, line.decode()))
        elif (marked := _marked_repeats(line, value)) is not None and (repeated := _repeated_keys(marked)):
            rows.append(_error_row(number, _repeated_message(repeated), line.decode()))
        else:
            value["source_line"] = number
            rows.append(value)
    return rows


# ----- keys that appear twice in one JSON object ----------------------------------------------------


class _RepeatedKeys(dict):
    """A JSON object in which some key appeared more than once: `pairs` keeps every value as written."""

    pairs: list[tuple[str, Any]]


def _object_keeping_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    flagged = _RepeatedKeys(value)
    flagged.pairs = pairs
    return flagged


def _key_count(value: Any) -> int:
    """Keys in every object of a parsed JSON value (a loop, not recursion: this runs once per line)."""
    count, pending = 0, [value]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            count += len(node)
            node = node.values()
        elif not isinstance(node, list):
            continue
        pending.extend(child for child in node if isinstance(child, (dict, list)))
    return count


def _marked_repeats(text: str | bytes, value: Any) -> Any | None:
    """None when no key of `text` (parsed as `value`) can repeat, else `text` parsed again with the objects that
    repeat a key marked. Unless a key is spaced from its colon, every key written is followed by `":`, so
    when that count matches the parsed keys none repeats; otherwise (a spaced key, `":` inside a string, a
    repeated key) the json module parses it again, which is slower but certain."""
    utf8 = text.encode() if isinstance(text, str) else text
    keys, spaced = utf8.count(b'":'), _SPACED_KEY.search(utf8)
    if not spaced and ((isinstance(value, dict) and keys == len(value)) or keys == _key_count(value)):
        return None  # (the first test spares flat records the walk)
    return json.loads(text, object_pairs_hook=_object_keeping_repeats)


def _repeated_keys(value: Any, path: str = "") -> list[str]:
    """Paths of the keys that appear more than once in one object of `value`."""
    found = []
    if isinstance(value, _RepeatedKeys):
        counted = Counter(key for key, _ in value.pairs)
        found = [f"{path}{key}" for key, times in sorted(counted.items()) if times > 1]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _repeated_keys(child, f"{path}{key}.")
    elif isinstance(value, list):
        for position, child in enumerate(value):
            found += _repeated_keys(child, f"{path.removesuffix('.')}[{position}].")
    return found


def _as_written(value: Any) -> str:
    """JSON text of a parsed value with every repeated key's values, as the export wrote them."""
    if isinstance(value, dict):
        pairs = value.pairs if isinstance(value, _RepeatedKeys) else value.items()
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_as_written(v)}" for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_as_written(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _repeated_message(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    verb = "is" if len(keys) == 1 else "are"
    return f"duplicate_key: {shown} {verb} repeated within one object; which value is meant is unknown"


# ----- JSON documents -----------------------------------------------------------------------------


def _json_document_rows(decoded: DecodedExport) -> list[dict[str, Any]]:
    """A `.json` file holds a list of records, or an object with one list of records inside."""
    text = decoded.text
    if decoded.damaged and (undecodable := _undecodable(1, text, decoded.encoding)):
        bad = _UNDECODABLE.search(text)
        return [{**undecodable, "source_line": text.count("\n", 0, bad.start() if bad else 0) + 1}]
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        line = text.count("\n", 0, getattr(exc, "pos", 0) or 0) + 1
        return [_error_row(line, f"invalid_json: {exc}", text)]
    marked = _marked_repeats(text, document)
    document = document if marked is None else marked
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        document = lists[0] if len(lists) == 1 else [document]
    if not isinstance(document, list):
        return [_not_an_object(1, document, text)]
    rows = []
    for position, value in enumerate(document, start=1):
        if not isinstance(value, dict):
            rows.append(_not_an_object(position, value, _as_written(value)))
        elif marked is not None and (repeated := _repeated_keys(value)):
            rows.append(_error_row(position, _repeated_message(repeated), _as_written(value)))
        else:
            rows.append({**value, "source_line": position})
    return rows


# ----- CSV ----------------------------------------------------------------------------------------


def _csv_rows(decoded: DecodedExport) -> list[dict[str, Any]]:
    lines = io.StringIO(decoded.text, newline="").readlines()  # physical lines, endings kept
    if not lines:
        return []
    header = [h.strip() for h in next(csv.reader(lines[:1]), [])]
    repeated = sorted({h for h in header if header.count(h) > 1})
    rows: list[dict[str, Any]] = []
    for start_line, fields, problem in _csv_records(lines, len(header)):
        if not any(f.strip() for f in fields):
            continue
        raw_line = ",".join(fields)
        if decoded.damaged and (undecodable := _undecodable(start_line, raw_line, decoded.encoding)):
            rows.append(undecodable)
        elif problem is not None:
            rows.append(_error_row(start_line, problem, raw_line))
        elif len(fields) != len(header):
            message = f"invalid_csv_row: {len(fields)} fields where the header has {len(header)}"
            rows.append(_error_row(start_line, message, raw_line))
        elif repeated and (conflict := _conflicting_columns(header, fields, repeated)):
            message = f"duplicate_key: the header repeats {conflict!r} and this row gives it different values"
            rows.append(_error_row(start_line, message, raw_line))
        else:
            record: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)}
            record["source_line"] = start_line
            rows.append(record)
    return rows


def _conflicting_columns(header: list[str], fields: list[str], repeated: list[str]) -> str | None:
    for name in repeated:
        if len({f for h, f in zip(header, fields, strict=True) if h == name}) > 1:
            return name
    return None


def _csv_records(lines: list[str], width: int) -> Iterator[tuple[int, list[str], str | None]]:
    """(first physical line of the record, fields, problem) for every record after the header.

    A quote that never closes makes the reader swallow the following lines into one record. So a record
    that runs over several lines must be well-formed CSV with the header's width; one that is not is reported
    by its first line alone, and reading starts again on the next line: the records it swallowed are read
    as themselves. (Single-line records keep the reader's leniency: `"a" b` is `a b`.)"""
    position = 1  # index of the next physical line to read
    while position < len(lines):
        reader = csv.reader(lines[i] for i in range(position, len(lines)))
        previous_end = 0
        for fields in reader:
            first = position + previous_end  # index of the record's first line
            span = reader.line_num - previous_end
            previous_end = reader.line_num
            if span > 1 and not _well_formed(lines[first : first + span], width):
                problem = (
                    f"invalid_csv_row: a quote on line {first + 1} never closes, so the record runs over lines "
                    f"{first + 1}-{first + span} ({len(fields)} fields where the header has {width}); the lines "
                    "after this one are read as records of their own"
                )
                yield first + 1, lines[first].rstrip("\r\n").split(","), problem
                position = first + 1
                break
            yield first + 1, fields, None
        else:
            return


def _well_formed(record_lines: list[str], width: int) -> bool:
    """One strictly valid CSV record of `width` fields (nothing but a delimiter after a closing quote)."""
    try:
        parsed = list(csv.reader(record_lines, strict=True))
    except csv.Error:
        return False
    return len(parsed) == 1 and len(parsed[0]) == width

"""JSON lines rendered column by column with Arrow: the bytes `orjson.dumps(row, option=OPT_APPEND_NEWLINE)`
writes for each row's dict, without a Python pass over the rows.

A per-row `orjson.dumps` of a million split records costs about four seconds, most of a data run's writing. Here
each distinct label, age or date is rendered once and looked up, notes that need no escaping are quoted by Arrow
(orjson escapes only `"`, `\\` and control characters), and orjson renders the rest, the few notes that need it
and the few non-empty lists, so the bytes are orjson's by construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_ESCAPE = '["\\\\\\x00-\\x1f]'  # RE2: what orjson escapes in a string
_NULL = "null"
_QUOTE, _EMPTY, _END = (pa.scalar(s, pa.large_string()) for s in ('"', "", "}\n"))


class Kind(Enum):
    """How a column's values are rendered."""

    TEXT = "text"  # strings, most of them distinct (notes, ids)
    VALUE = "value"  # few distinct values of one type (labels, ages): each rendered once
    DATE = "date"  # datetimes, rendered as ISO days
    LIST = "list"  # lists, most of them empty


@dataclass(frozen=True)
class _TextColumn:
    values: pa.ChunkedArray

    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        values = take_texts(self.values, rows)
        quoted = pc.binary_join_element_wise(_QUOTE, values, _QUOTE, _EMPTY)
        escape = pc.match_substring_regex(values, _NEEDS_ESCAPE).fill_null(False)
        if pc.any(escape).as_py():
            escaped = [orjson.dumps(v).decode() for v in values.filter(escape).to_pylist()]
            quoted = pc.replace_with_mask(quoted, escape, pa.array(escaped, type=pa.large_string()))
        return quoted.fill_null(_NULL)


@dataclass(frozen=True)
class _ValueColumn:
    codes: np.ndarray  # per row, its value's place in `rendered`
    rendered: pa.LargeStringArray  # each distinct value's JSON, then null's

    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        return self.rendered.take(self.codes[rows])


def _rendered_lists(series: pd.Series) -> _ValueColumn:
    """Lists as value codes: empty lists and nulls share one code each, and only the non-empty lists (a minority)
    are rendered, each distinct rendering once."""
    values = series.to_numpy(dtype=object)
    rendered = {"[]": 0, _NULL: 1}
    codes = np.zeros(len(values), dtype=np.int64)
    for row, value in enumerate(values.tolist()):
        if value is None:
            codes[row] = 1
        elif not isinstance(value, list) or value:
            codes[row] = rendered.setdefault(orjson.dumps(value).decode(), len(rendered))
    return _ValueColumn(codes, pa.array(list(rendered), type=pa.large_string()))


def _column(series: pd.Series, kind: Kind) -> _TextColumn | _ValueColumn:
    if kind is Kind.TEXT:
        values = pa.array(series, type=pa.large_string(), from_pandas=True)
        return _TextColumn(values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values]))
    if kind is Kind.LIST:
        return _rendered_lists(series)
    if kind is Kind.DATE:
        codes, days = pd.factorize(pd.to_datetime(series).to_numpy(dtype="datetime64[D]"), use_na_sentinel=True)
        uniques = np.datetime_as_string(days, unit="D")
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    rendered = [orjson.dumps(value).decode() for value in uniques.tolist()] + [_NULL]
    return _ValueColumn(np.where(codes < 0, len(uniques), codes), pa.array(rendered, type=pa.large_string()))


def take_texts(values: pa.ChunkedArray | pa.Array, rows: np.ndarray) -> pa.LargeStringArray:
    """`values.take(rows)` chunk by chunk: Arrow's take over a chunked text column first copies the whole column
    into one array, which costs a second per call at a million notes."""
    rows = rows.astype(np.int64, copy=False)
    if isinstance(values, pa.Array):
        return values.take(rows)
    if not len(rows):
        return pa.array([], type=values.type)
    if values.num_chunks == 1:
        return values.chunk(0).take(rows)
    starts = np.cumsum([0] + [len(chunk) for chunk in values.chunks])
    chunk_of = np.searchsorted(starts, rows, side="right") - 1
    by_chunk = np.argsort(chunk_of, kind="stable")
    pieces = []
    for k in np.unique(chunk_of):
        in_chunk = by_chunk[chunk_of[by_chunk] == k]
        pieces.append(values.chunk(int(k)).take(rows[in_chunk] - starts[k]))
    return pa.concat_arrays(pieces).take(np.argsort(by_chunk))


class JsonLines:
    """The rows of a frame as one JSON object per line holding the columns of `kinds`, in its order (their values
    plain Python ones, as orjson takes them). The columns are prepared once; `render` is called per set of rows."""

    def __init__(self, frame: pd.DataFrame, kinds: Mapping[str, Kind]) -> None:
        self._columns = [_column(frame[name], kind) for name, kind in kinds.items()]
        self._prefixes = [
            pa.scalar(("{" if k == 0 else ",") + orjson.dumps(name).decode() + ":", pa.large_string())
            for k, name in enumerate(kinds)
        ]

    def render(self, rows: np.ndarray, chunk_rows: int) -> Iterator[bytes]:
        """The lines of the rows at positions `rows`, in that order, `chunk_rows` lines at a time."""
        for start in range(0, len(rows), chunk_rows):
            chunk = rows[start : start + chunk_rows]
            pieces: list[object] = []
            for prefix, column in zip(self._prefixes, self._columns):
                pieces += [prefix, column.fragments(chunk)]
            yield _data(pc.binary_join_element_wise(*pieces, _END, _EMPTY))


def _data(lines: pa.LargeStringArray) -> bytes:
    """The lines' bytes, end to end: they are the array's data buffer between its first and last offsets."""
    if not len(lines):
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes()

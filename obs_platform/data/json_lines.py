"""JSON lines rendered column by column with Arrow: the bytes orjson writes for each row, without a Python pass
over the rows.

A per-row `orjson.dumps` of a million split records costs about four seconds, and the Gemini and chat lines twice
that; most of a data run's writing. Here a line is literal text and per-row fragments put together by Arrow
(`render_lines`). Each distinct label, age, date or answer is rendered once and looked up (`Coded`); notes are
quoted by Arrow, their `"` and `\\` escaped by Arrow's replaces (orjson escapes only those and control characters),
and orjson renders the rest, the few notes with a control character and the few non-empty lists, so the bytes are
orjson's (the tests compare them).
`JsonLines` renders a frame's columns as one JSON object per line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from obs_platform.data.string_bytes import offsets_and_bytes, rows_holding

_NULL = "null"
_QUOTE, _EMPTY = (pa.scalar(s, pa.large_string()) for s in ('"', ""))


class Fragments(Protocol):
    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        """One string per row at positions `rows`, in that order."""
        ...

    def digest(self, start: int, stop: int) -> bytes:
        """A digest of what the fragments of rows `start` to `stop` are made from: equal digests, equal fragments."""
        ...


@dataclass(frozen=True)
class Text:
    """Strings, most of them distinct (notes, ids), as JSON strings; `quoted=False` gives what goes between the
    quotes, to be put inside a longer string (a null then reads `None`, as Python formats it)."""

    values: pa.ChunkedArray
    quoted: bool = True

    @classmethod
    def of(cls, series: pd.Series, quoted: bool = True) -> Text:
        values = pa.array(series, type=pa.large_string(), from_pandas=True)
        return cls(values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values]), quoted)

    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        values = _escaped(take_texts(self.values, rows))
        out = pc.binary_join_element_wise(_QUOTE, values, _QUOTE, _EMPTY) if self.quoted else values
        return out.fill_null(_NULL if self.quoted else "None")

    def digest(self, start: int, stop: int) -> bytes:
        return text_digest(self.values.slice(start, stop - start)) + (b"quoted" if self.quoted else b"inner")


def _escaped(values: pa.LargeStringArray) -> pa.LargeStringArray:
    """The strings as they read between a JSON string's quotes, as orjson escapes them. A fifth of the notes quote
    speech, so `"` and `\\` are escaped by Arrow's literal replaces, and orjson renders only the few strings with
    a control character (a line break); which strings need either is found by a byte scan, not a regex. A million
    notes: 0.55 s instead of 0.9-1.6 s."""
    escape = rows_holding(values, _needs_escape)
    if not escape.any():
        return values
    flagged = values.filter(escape)
    inner = pc.replace_substring(pc.replace_substring(flagged, "\\", "\\\\"), '"', '\\"')
    control = rows_holding(flagged, _control)
    if control.any():
        rendered = [orjson.dumps(v).decode()[1:-1] for v in flagged.filter(control).to_pylist()]
        inner = pc.replace_with_mask(inner, control, pa.array(rendered, type=pa.large_string()))
    return pc.replace_with_mask(values, escape, inner)


def _needs_escape(data: np.ndarray) -> np.ndarray:
    return (data < 0x20) | (data == ord('"')) | (data == ord("\\"))


def _control(data: np.ndarray) -> np.ndarray:
    return data < 0x20


def text_digest(values: pa.Array | pa.ChunkedArray) -> bytes:
    """A digest of large strings' lengths, bytes and nulls, read from the Arrow buffers (no Python loop), each hashed
    alone so that the same strings give the same digest however the column is cut into chunks or offset."""
    lengths, text, valid = xxhash.xxh3_128(), xxhash.xxh3_128(), xxhash.xxh3_128()
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        if not len(chunk):
            continue
        offsets, data = offsets_and_bytes(chunk)
        lengths.update(np.diff(offsets).tobytes())
        text.update(data[offsets[0] : offsets[-1]])
        valid.update(np.asarray(chunk.is_valid()).tobytes())
    return lengths.digest() + text.digest() + valid.digest()


@dataclass(frozen=True)
class Coded:
    """Rows that render the same share a code: each distinct rendering is made once."""

    codes: np.ndarray  # per row, its rendering's place in `rendered`
    rendered: pa.LargeStringArray

    @classmethod
    def by_key(cls, keys: np.ndarray, render: Callable[[int], str]) -> Coded:
        """Rows with equal `keys` render the same: `render(row)` is called once per distinct key, with the first
        row holding it."""
        _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
        return cls(codes.reshape(-1), pa.array([render(int(row)) for row in first], type=pa.large_string()))

    @classmethod
    def values(cls, series: pd.Series, render: Callable[[Any], str], null: str) -> Coded:
        """Few distinct values of one type (labels, ages): `render(value)` once per value; `null` for a missing
        one."""
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        return cls._of(codes, [render(value) for value in uniques.tolist()], null)

    @classmethod
    def days(cls, series: pd.Series, render: Callable[[str], str], null: str) -> Coded:
        """Datetimes by their day: `render(ISO day)` once per day; `null` for a missing one."""
        # No cache of distinct values: pandas would look for them over every row even when they are datetimes already.
        days = pd.to_datetime(series, cache=False).to_numpy(dtype="datetime64[D]")
        codes, days = pd.factorize(days, use_na_sentinel=True)
        return cls._of(codes, [render(day) for day in np.datetime_as_string(days, unit="D").tolist()], null)

    @classmethod
    def _of(cls, codes: np.ndarray, rendered: list[str], null: str) -> Coded:
        return cls(np.where(codes < 0, len(rendered), codes), pa.array([*rendered, null], type=pa.large_string()))

    @classmethod
    def lists(cls, series: pd.Series, render: Callable[[Any], str], empty: str, null: str | None = None) -> Coded:
        """Lists, most of them empty: `empty` for an empty list, `null` for a missing one (`empty` when not given),
        and `render(value)` for the others, each distinct rendering kept once."""
        rendered = {empty: 0}
        null_code = rendered.setdefault(empty if null is None else null, len(rendered))
        values = series.to_numpy(dtype=object)
        lengths = series.str.len().to_numpy(dtype=float, na_value=np.nan)  # in C: a Python loop only for the others
        codes = np.where(np.isnan(lengths), null_code, 0).astype(np.int64)
        for row in np.flatnonzero(lengths > 0).tolist():
            codes[row] = rendered.setdefault(render(values[row]), len(rendered))
        return cls(codes, pa.array(list(rendered), type=pa.large_string()))

    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        return self.rendered.take(self.codes[rows])

    def digest(self, start: int, stop: int) -> bytes:
        """The rows' renderings (their digests, not their codes: a code depends on the other rows too)."""
        return xxhash.xxh3_128_digest(self._rendering_digests[self.codes[start:stop]].tobytes())

    @cached_property
    def _rendering_digests(self) -> np.ndarray:
        return np.array([xxhash.xxh3_64_intdigest(r.encode()) for r in self.rendered.to_pylist()], dtype=np.uint64)


@dataclass(frozen=True)
class Lists:
    """Lists, most of them empty, rendered only for the rows asked for: `empty` for an empty list, `null` for a
    missing one and `render(value)` for the others. Nothing is done for the whole column up front, so lines read back
    from the last bundle (`line_files`) cost no list rendering at all."""

    values: np.ndarray  # object: a list (or array) per row, or a missing value
    render: Callable[[Any], str]
    empty: str
    null: str

    @classmethod
    def of(cls, series: pd.Series, render: Callable[[Any], str], empty: str, null: str | None = None) -> Lists:
        return cls(series.to_numpy(dtype=object), render, empty, empty if null is None else null)

    def fragments(self, rows: np.ndarray) -> pa.LargeStringArray:
        return pa.array([self._fragment(value) for value in self.values[rows].tolist()], type=pa.large_string())

    def _fragment(self, value: Any) -> str:
        try:
            size = len(value)
        except TypeError:  # None, NaN, pd.NA: no list at all
            return self.null
        return self.render(value) if size else self.empty

    def digest(self, start: int, stop: int) -> bytes:
        """The rows' values as JSON (a value JSON cannot hold by its `repr`); how they are rendered is code, part of
        every key (`line_files.RENDER_CODE`)."""
        values = self.values[start:stop].tolist()
        return xxhash.xxh3_128_digest(orjson.dumps(values, default=repr, option=orjson.OPT_SERIALIZE_NUMPY))


def render_lines(pieces: Sequence[str | Fragments], rows: np.ndarray, chunk_rows: int) -> Iterator[bytes]:
    """The lines of the rows at positions `rows`, in that order, `chunk_rows` lines at a time: each line the
    `pieces` put together, a string as it is and the fragments of the row."""
    template = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in pieces]
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        parts = [p if isinstance(p, pa.Scalar) else p.fragments(chunk) for p in template]
        yield _data(pc.binary_join_element_wise(*parts, _EMPTY))


class Kind(Enum):
    """How a column's values are rendered in a JSON object."""

    TEXT = "text"  # strings, most of them distinct (notes, ids)
    VALUE = "value"  # few distinct values of one type (labels, ages): each rendered once
    DATE = "date"  # datetimes, rendered as ISO days
    LIST = "list"  # lists, most of them empty


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _column(series: pd.Series, kind: Kind) -> Fragments:
    if kind is Kind.TEXT:
        return Text.of(series)
    if kind is Kind.LIST:
        return Lists.of(series, _json, "[]", _NULL)
    if kind is Kind.DATE:
        return Coded.days(series, _json, _NULL)
    return Coded.values(series, _json, _NULL)


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
    plain Python ones, as orjson takes them): the `pieces` that `render_lines` puts together, the columns prepared
    once."""

    def __init__(self, columns: pd.DataFrame | Mapping[str, pd.Series], kinds: Mapping[str, Kind]) -> None:
        """`columns`: a frame, or its columns by name (no frame is made of them: a frame of a million rows copies
        them)."""
        self.pieces: list[str | Fragments] = []
        for k, (name, kind) in enumerate(kinds.items()):
            self.pieces += [("{" if k == 0 else ",") + _json(name) + ":", _column(columns[name], kind)]
        self.pieces.append("}\n")


def _data(lines: pa.LargeStringArray) -> bytes:
    """The lines' bytes, end to end: they are the array's data buffer between its first and last offsets."""
    if not len(lines):
        return b""
    offsets, data = offsets_and_bytes(lines)
    return data[offsets[0] : offsets[-1]].tobytes()

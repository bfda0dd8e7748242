"""Column-at-a-time JSONL rendering with Arrow string kernels.

A training file is a million lines of a fixed shape in which only a few values change. Rendering a line
per Python call costs ~15 µs here (15 s per million); escaping the text column and joining the pieces
column by column in Arrow's C++ kernels costs a fraction of that, and the finished file is the Arrow
array's data buffer, written without another copy. Values with rare control characters are encoded by
orjson one by one, so the output is always valid JSON (and byte-identical to orjson's for ordinary text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

# Escapes orjson writes with a backslash and a letter; every other control character becomes \u00XX,
# which string kernels cannot compute, so values holding one are encoded by orjson.
_SIMPLE_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_OTHER_CONTROL = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]"
CHUNK_BYTES = 16 * 2**20
NO_LINES = pa.array([], type=pa.large_string())

Piece = pa.Array | str


def as_large_strings(values: object) -> pa.LargeStringArray:
    array = pa.array(values, type=pa.large_string()) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=pa.large_string())
    return array.cast(pa.large_string())


def json_strings(values: object) -> pa.LargeStringArray:
    """Each value as a JSON string literal (quotes included); null stays null."""
    array = as_large_strings(values)
    escaped = array
    for raw, replacement in _SIMPLE_ESCAPES:
        escaped = pc.replace_substring(escaped, raw, replacement)
    quoted = join(['"', escaped, '"'])
    odd = pc.match_substring_regex(array, _OTHER_CONTROL)
    if pc.any(odd).as_py():
        rows = np.flatnonzero(np.asarray(odd.fill_null(False)))
        encoded = quoted.to_pylist()
        for row in rows.tolist():
            encoded[row] = orjson.dumps(array[row].as_py()).decode()
        quoted = pa.array(encoded, type=pa.large_string())
    return quoted


def json_numbers(values: object) -> pa.LargeStringArray:
    """Numbers as JSON (`null` where missing); floats with no fraction are written as integers."""
    array = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_floating(array.type):
        whole = pc.equal(pc.floor(array), array)
        as_int = pc.cast(pc.if_else(whole, array, None), pa.int64(), safe=False)
        text = pc.if_else(whole, pc.cast(as_int, pa.large_string()), pc.cast(array, pa.large_string()))
    else:
        text = pc.cast(array, pa.large_string())
    return pc.fill_null(text, "null")


def encoded_each(values: Sequence[object], empty: str) -> pa.LargeStringArray:
    """orjson per value, for the few non-empty nested values (photo lists, secondary tags)."""
    return pa.array([orjson.dumps(v).decode() if v else empty for v in values], type=pa.large_string())


def join(pieces: Sequence[Piece]) -> pa.LargeStringArray:
    """Concatenate pieces (arrays, or constant strings) row by row."""
    as_args = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in pieces]
    return pc.binary_join_element_wise(*as_args, pa.scalar("", pa.large_string()))


def join_lines(pieces: Sequence[Piece]) -> pa.LargeStringArray:
    """Concatenate pieces row by row, ending each row with a newline."""
    return join([*pieces, "\n"])


def file_chunks(lines: pa.LargeStringArray) -> Iterator[bytes]:
    """The rendered file: the lines' data buffer, cut into chunks for streaming writes."""
    if len(lines) == 0:
        return
    if lines.null_count:
        raise ValueError("a rendered line is null: a piece was missing a value")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    for position in range(start, end, CHUNK_BYTES):
        yield data[position : min(position + CHUNK_BYTES, end)].to_pybytes()

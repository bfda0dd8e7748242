"""Plain Python values from what pandas and Arrow hand back."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from obs_platform.gc_pause import without_gc_pauses


def plain_value(value: Any) -> Any:
    """Numpy arrays (Arrow lists, parquet list columns) become lists, recursively through dicts."""
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    return value


def frame_from_parquet(data: bytes) -> pd.DataFrame:
    """A frame as it was written to parquet (see `frame_from_arrow`)."""
    return frame_from_arrow(pq.read_table(io.BytesIO(data)))


@without_gc_pauses  # a million lists made at once: the collector would walk them again and again
def frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    """A pandas frame as it was written: text columns that were Arrow-backed are again (a plain conversion makes
    them Python-backed, whose checks and kernels are the slow kind; these wrap the Arrow data without a copy) and
    list columns are plain lists (not numpy arrays), built only for the lists that are not empty. A text column keeps
    the table's chunks: a mapped file's columns stay the page cache's pages, not copied into one."""
    written = {c["name"]: c["numpy_type"] for c in (table.schema.pandas_metadata or {}).get("columns", [])}
    special = {
        name: "list" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else "string"
        for name, kind in zip(table.schema.names, table.schema.types)
        if pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or (written.get(name) == "string" and (pa.types.is_string(kind) or pa.types.is_large_string(kind)))
    }
    frame = table.drop_columns(list(special)).to_pandas()
    for name, kind in special.items():
        column = table.column(name)
        values = (
            np.fromiter(arrow_lists(column), dtype=object, count=len(column))  # no shape guessing over nested lists
            if kind == "list"
            else pd.arrays.ArrowStringArray(column.cast(pa.large_string()))
        )
        frame[name] = pd.Series(values, index=frame.index, dtype=object if kind == "list" else None)
    return frame[[name for name in table.schema.names if name in frame.columns]]  # not a stored index


def arrow_lists(column: pd.Series | pa.Array | pa.ChunkedArray) -> list[Any]:
    """Python values of an Arrow list column, converting only the (few) non-empty lists element by element."""
    array = column if isinstance(column, (pa.Array, pa.ChunkedArray)) else pa.array(column)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        return array.to_pylist()
    offsets = np.asarray(array.offsets)
    lengths = np.diff(offsets)
    values = array.values.to_pylist()
    valid = np.asarray(array.is_valid())
    out: list[Any] = [[] if ok else None for ok in valid.tolist()]
    for row in np.flatnonzero(lengths).tolist():
        out[row] = values[offsets[row] : offsets[row + 1]]
    return out

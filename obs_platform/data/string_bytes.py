"""The UTF-8 bytes of an Arrow string column, read in NumPy without a copy: checks over a million notes that a
per-note Python call, or an RE2 pass for a single character class, would spend seconds on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SCAN_ROWS = 65_536  # rows whose bytes are tested at once: the test's temporary array stays about 10 MB


def offsets_and_bytes(strings: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The row boundaries (`len(strings) + 1` offsets into the bytes) and the whole data buffer as bytes."""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)


def rows_holding(
    strings: pa.LargeStringArray | pa.ChunkedArray, flagged: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Which rows hold a byte for which `flagged` (a vectorised test over bytes, `lambda b: b == ord("@")`) is true.
    A pass of NumPy over the bytes costs about a tenth of an RE2 match of one character class: a prefilter, after
    which a regex looks at the few rows flagged only."""
    found = np.zeros(len(strings), dtype=bool)
    row = 0
    for chunk in strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]:
        if len(chunk):
            offsets, data = offsets_and_bytes(chunk)
            for start in range(0, len(chunk), _SCAN_ROWS):
                bounds = offsets[start : start + _SCAN_ROWS + 1]
                hits = np.flatnonzero(flagged(data[bounds[0] : bounds[-1]])) + bounds[0]
                found[row + start + np.searchsorted(bounds, hits, side="right") - 1] = True
        row += len(chunk)
    return found


def rows_matching(
    strings: pa.LargeStringArray | pa.ChunkedArray, flagged: Callable[[np.ndarray], np.ndarray], pattern: str
) -> np.ndarray:
    """Which rows match the RE2 `pattern`, looked for only in the rows holding a byte `flagged` (`rows_holding`):
    every byte a match can start with must be flagged, or a match is missed."""
    found = rows_holding(strings, flagged)
    if found.any():
        found[found] = np.asarray(pc.match_substring_regex(strings.filter(found), pattern).fill_null(False))
    return found

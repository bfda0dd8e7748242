"""A 64-bit hash per observation id, computed in NumPy over the ids' Arrow buffer: where line-file pieces end, and a
quick proof that a million ids hold no repeat (distinct hashes, distinct ids)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from obs_platform.data.string_bytes import offsets_and_bytes


def id_hashes(ids: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each id from its length and three 8-byte windows (its first, middle and last bytes), read in
    NumPy straight from the Arrow buffer: a million ids in milliseconds, with no Python call and no array per byte.
    Ids alike in all three windows hash alike; they only make pieces longer, up to four times their mean."""
    array = pa.array(ids, type=pa.large_string(), from_pandas=True) if isinstance(ids, pd.Series) else ids
    array = array.cast(pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not len(array):
        return np.zeros(0, dtype=np.uint64)
    offsets, data = offsets_and_bytes(array)
    padded = np.concatenate([np.zeros(8, np.uint8), data[: offsets[-1]], np.zeros(8, np.uint8)])
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # the 8 bytes from each byte on
    starts, ends = offsets[:-1] + 8, offsets[1:] + 8

    def window(stop: np.ndarray) -> np.ndarray:
        """The id's bytes in the eight before `stop`, those before its start zeroed."""
        foreign = np.clip(8 - (stop - starts), 0, 8).astype(np.uint64)  # bytes of the previous id, the low ones
        value = words[stop - 8] >> (np.uint64(8) * np.minimum(foreign, np.uint64(7)))
        return np.where(foreign >= 8, np.uint64(0), value)

    middle = np.minimum(starts + (ends - starts + 8) // 2, ends)
    hashed = (ends - starts).astype(np.uint64)
    for part in (window(np.minimum(starts + 8, ends)), window(middle), window(ends)):
        hashed = (hashed ^ part) * np.uint64(0x100000001B3)
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64's finaliser
        hashed = (hashed ^ (hashed >> np.uint64(shift))) * np.uint64(multiplier)
    return hashed ^ (hashed >> np.uint64(31))

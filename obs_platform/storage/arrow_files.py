"""Arrow IPC files for the caches every data run reads back (parts, redacted notes); analysts' tables are parquet.

On a local disk they are stored uncompressed and read memory-mapped: a column is the page cache's pages, neither
decompressed nor copied, so the tables of a million cached rows open in hundredths of a second instead of one to
one and a half (measured in docs/benchmarks.md), and nothing is spent compressing them either. Elsewhere (GCS)
every byte read crosses the network, so they are LZ4-compressed. Either reader reads either kind.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from obs_platform.storage.base import Storage, StorageError
from obs_platform.storage.local import LocalStorage

LOCAL_COMPRESSION = "uncompressed"
REMOTE_COMPRESSION = "lz4"


def arrow_compression(storage: Storage) -> str:
    """How `storage` keeps Arrow files: uncompressed on a local disk (read mapped), LZ4 elsewhere."""
    return LOCAL_COMPRESSION if isinstance(storage, LocalStorage) else REMOTE_COMPRESSION


def arrow_file_bytes(table: pa.Table | pd.DataFrame, compression: str) -> bytes:
    """An Arrow IPC file of `table` (a frame keeps its pandas metadata, not its index), in record batches of 64k
    rows. Its columns are combined first: a canonicalised export's text columns come in chunks of a few thousand
    rows, and a file cut at every chunk's end held 67 batches per 100k rows, which a reader had to copy into one
    column again (a million rows: 245k page faults and 0.4 s of the drop's 1.2 s reading its parts)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=None)
    sink = pa.BufferOutputStream()
    feather.write_feather(table.combine_chunks(), sink, compression=compression)
    return sink.getvalue().to_pybytes()


def write_arrow_file(storage: Storage, path: str, table: pa.Table | pd.DataFrame) -> None:
    storage.write_bytes(path, arrow_file_bytes(table, arrow_compression(storage)))


def read_arrow_file(storage: Storage, path: str) -> pa.Table:
    """The table at `path`: mapped from a local file, else read whole."""
    if isinstance(storage, LocalStorage):
        try:
            return feather.read_table(str(storage.local_path(path)), memory_map=True)
        except OSError as exc:
            raise StorageError(f"cannot read {storage.uri(path)}: {exc}") from exc
    return feather.read_table(pa.BufferReader(storage.read_bytes(path)))

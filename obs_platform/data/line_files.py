"""Files of JSON lines written again from the last version's lines wherever the rows are unchanged.

A drop of ten thousand notes onto a million changes one line in a hundred, yet rendering, escaping and joining every
line again costs seconds. So the rows are cut into pieces of about 16k rows, and where a piece ends is decided by the
observation ids alone (content-defined chunking, as rsync and restic cut files): rows appended or removed move the
ends of their own pieces only. Each piece is keyed by a digest of everything its lines are made from: every
fragment's values over its rows (`Fragments.digest`), the literal text, the rendering code and the file each row goes
to. After a bundle is written, an index records where each piece's lines are in it (`cache/lines/<base>.json`);
the next write of that base reads the lines of a piece with the same key from there, by byte range, and renders only
the others. A content-addressed bundle never changes, so a recorded range holds the piece's lines for as long as the
bundle's manifest exists; a bundle that is gone is simply not reused.

A file holds its rows in frame order (the canonical set's landing order), so new exports' lines come last.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import xxhash

from obs_platform.data import formats, json_lines
from obs_platform.data.id_hashes import id_hashes
from obs_platform.data.json_lines import Fragments, render_lines
from obs_platform.data.parts import source_digest
from obs_platform.storage import Storage, write_content_addressed
from obs_platform.storage.base import MANIFEST, Chunk, ContentAddressedWrite

PIECE_ROWS = 1 << 14  # rows per piece on average: a piece ends where an id's hash has these low bits zero
CHUNK_ROWS = 20_000  # lines rendered at a time
INDEX_PREFIX = "cache/lines"
RENDER_CODE = source_digest([json_lines, formats])  # how values are rendered: `Lists` digests only the values


def piece_bounds(ids: pd.Series | pa.Array | pa.ChunkedArray, piece_rows: int = PIECE_ROWS) -> np.ndarray:
    """Where each piece starts, then the row count: a piece ends before a row whose id hashes to a multiple of
    `piece_rows` (a power of two, the pieces' mean length), or after four times that many rows."""
    if piece_rows < 1 or piece_rows & (piece_rows - 1):
        raise ValueError(f"piece_rows must be a power of two, not {piece_rows}")
    starts = np.flatnonzero((id_hashes(ids) & np.uint64(piece_rows - 1)) == 0).tolist()
    bounds = [0]
    for start in [*starts, len(ids)]:
        while start - bounds[-1] > 4 * piece_rows:
            bounds.append(bounds[-1] + 4 * piece_rows)
        if start > bounds[-1]:
            bounds.append(start)
    return np.array(bounds, dtype=np.int64)


@dataclass(frozen=True)
class LineFiles:
    """Files of one JSON line per row: file `names[k]` holds, in frame order, the rows whose `file_codes` is k (a row
    with another code is in no file), each line the `pieces` put together (`render_lines`)."""

    pieces: Sequence[str | Fragments]
    ids: pd.Series  # the rows' observation ids: where the pieces end
    file_codes: np.ndarray
    names: tuple[str, ...]
    piece_rows: int = PIECE_ROWS

    @cached_property
    def bounds(self) -> np.ndarray:
        return piece_bounds(self.ids, self.piece_rows)

    @cached_property
    def keys(self) -> list[str]:
        """Each piece's digest of what its lines are made from (see the module's docstring)."""
        fragments = [p for p in self.pieces if not isinstance(p, str)]
        template = orjson.dumps([p if isinstance(p, str) else type(p).__name__ for p in self.pieces])
        keys = []
        for start, stop in zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist()):
            digest = xxhash.xxh3_128(RENDER_CODE.encode() + template + "\0".join(self.names).encode())
            for fragment in fragments:
                digest.update(fragment.digest(start, stop))
            digest.update(np.ascontiguousarray(self.file_codes[start:stop], dtype=np.int8).tobytes())
            keys.append(digest.hexdigest())
        return keys

    def files(self) -> dict[str, Iterator[Chunk]]:
        """Every line rendered: name → chunks."""
        return LineWriting(self, previous=None).files

    def rows_in(self, name: str) -> int:
        return int(np.count_nonzero(self.file_codes == self.names.index(name)))


@dataclass(frozen=True)
class PieceIndex:
    """Where each piece's lines are in a written bundle: key → (offset, size) per file, in `names` order."""

    folder: str
    names: tuple[str, ...]
    places: Mapping[str, list[tuple[int, int]]]

    @classmethod
    def load(cls, storage: Storage, path: str, names: tuple[str, ...]) -> PieceIndex | None:
        """The index at `path`, if it is for these file names and its bundle is still complete (has its manifest).
        An index that cannot be read (another shape, hand-edited) is no index: every line is rendered."""
        if not storage.exists(path):
            return None
        try:
            body = orjson.loads(storage.read_bytes(path))
            places = {str(key): [(int(at), int(size)) for at, size in spots] for key, spots in body["places"].items()}
            if tuple(body["names"]) != names or any(len(spots) != len(names) for spots in places.values()):
                return None
            folder = str(body["folder"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        return cls(folder, names, places) if storage.exists(f"{folder}/{MANIFEST}") else None

    def to_json(self) -> bytes:
        return orjson.dumps({"folder": self.folder, "names": list(self.names), "places": self.places})


@dataclass
class LineWriting:
    """One pass over `lines`' files, reading from `previous` the pieces it holds; `places` fills as the files are
    consumed, each file from its first chunk to its last."""

    lines: LineFiles
    previous: PieceIndex | None
    storage: Storage | None = None
    places: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    rows_reused: int = 0
    rows_rendered: int = 0

    @property
    def files(self) -> dict[str, Iterator[Chunk]]:
        return {name: self._file(k) for k, name in enumerate(self.lines.names)}

    def _file(self, k: int) -> Iterator[Chunk]:
        lines, name, offset, storage = self.lines, self.lines.names[k], 0, self.storage
        previous = self.previous if storage else None
        keys = lines.keys if storage else [None] * (len(lines.bounds) - 1)  # keys: only to reuse or index
        for key, start, stop in zip(keys, lines.bounds[:-1].tolist(), lines.bounds[1:].tolist()):
            in_file = np.flatnonzero(lines.file_codes[start:stop] == k) + start
            kept = previous.places.get(key) if previous and key else None
            size = 0
            if storage and previous and kept:
                place, size = kept[k]
                if size:
                    yield storage.read_range(f"{previous.folder}/{name}", place, size)
                self.rows_reused += len(in_file)
            else:
                for chunk in render_lines(lines.pieces, in_file, CHUNK_ROWS):
                    size += len(chunk)
                    yield chunk
                self.rows_rendered += len(in_file)
            if key is not None:
                self.places.setdefault(key, [(0, 0)] * len(lines.names))[k] = (offset, size)
            offset += size


@dataclass(frozen=True)
class LineFilesWrite:
    written: ContentAddressedWrite
    rows_reused: int  # lines read from the last bundle
    rows_rendered: int


def write_line_files(
    storage: Storage, base: str, lines: LineFiles, beside: Mapping[str, Iterable[bytes]] | None = None
) -> LineFilesWrite:
    """Write `lines`' files (and the small files `beside` them) as a content-addressed bundle under `base`, reusing
    the lines of the last bundle written there where a piece is unchanged, then index the new bundle's pieces."""
    index_path = f"{INDEX_PREFIX}/{base}.json"
    writing = LineWriting(lines, PieceIndex.load(storage, index_path, lines.names), storage)
    written = write_content_addressed(storage, base, writing.files | dict(beside or {}))
    storage.write_bytes(index_path, PieceIndex(written.folder, lines.names, writing.places).to_json())
    return LineFilesWrite(written, writing.rows_reused, writing.rows_rendered)

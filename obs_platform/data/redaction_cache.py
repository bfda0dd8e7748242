"""Redacted notes kept export by export, so that new data redacts only what is new.

The roster is the data set's (every export's names redact every note), so a cached note is only as good as the
roster it was redacted with. Each export's redacted notes are stored under `cache/redacted/<digest>.arrow`, the
digest over their text, their children's names and `CODE_VERSION` (the redactor and its word lists), with their
near-duplicate fingerprints (the split assignment's group keys) and the digest of the roster used. When the
roster has changed since, only the notes holding a token the two rosters treat differently are redacted again
(`Roster.changed_tokens`): the others would come out the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from obs_platform.bulk_memory import arrow_from_jemalloc
from obs_platform.data import names, redaction
from obs_platform.data.json_lines import take_texts, text_digest
from obs_platform.data.parts import prune_cache
from obs_platform.data.redaction import Redactor, Roster
from obs_platform.data.splits import group_keys
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import Storage
from obs_platform.storage.arrow_files import read_arrow_file, write_arrow_file

CACHE_PREFIX = "cache/redacted"
ROSTER_PREFIX = "cache/rosters"
_ROSTER_KEY = b"roster"


def _code_version() -> str:
    digest = hashlib.sha256()
    for module in (names, redaction):
        digest.update(Path(module.__file__).read_bytes())
    for word_list in sorted(
        p for p in resources.files("obs_platform.data").iterdir() if p.name.endswith((".txt", ".gz"))
    ):
        digest.update(word_list.read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = _code_version()


@dataclass(frozen=True)
class RedactionReuse:
    """How much of a redaction came from the cache."""

    reused: int  # notes taken as they were
    redone: int  # cached notes redacted again: they hold a name the roster now treats differently
    new: int  # notes never redacted before
    pruned: int = 0  # cache entries deleted: unused for an hour (exports no longer in the data, or changed)


@dataclass(frozen=True)
class CachedRedaction:
    texts: pa.ChunkedArray  # the notes redacted, row for row (Arrow: what the cache holds, never a Python copy)
    group_keys: np.ndarray  # each redacted note's near-duplicate fingerprint (`splits.group_keys`), kept with it
    reuse: RedactionReuse


@dataclass(frozen=True)
class _Entry:
    """One export's notes: where they are in the frame, what the cache held for them, which to redact."""

    path: str
    positions: np.ndarray
    cached: tuple[pa.ChunkedArray, np.ndarray] | None  # texts and fingerprints; None: never redacted
    redo: np.ndarray  # the positions (within `positions`) to redact now
    write: bool  # the cache entry is new or was made with another roster


@arrow_from_jemalloc
@without_gc_pauses
def redact_with_cache(storage: Storage, canonical: pd.DataFrame, roster: Roster) -> CachedRedaction:
    """`canonical["notes"]` redacted with `roster`, row for row, as `Redactor(roster).redact_many` would. Every
    note to redact, new or redone, goes through one `redact_column` call (it shares the work out over the cores)."""
    roster_digest = roster.digest
    _store_roster(storage, roster, roster_digest)
    entries: list[_Entry] = []
    changes: dict[str, frozenset[str] | None] = {}
    groups = canonical.groupby("source_file", sort=False).indices if len(canonical) else {}
    for positions in groups.values():
        path = f"{CACHE_PREFIX}/{_digest(_rows(canonical[['notes', 'child_name']], positions))}.arrow"
        cached = _read_entry(storage, path)
        if cached is None:
            entries.append(_Entry(path, positions, None, np.arange(len(positions)), write=True))
            continue
        part, part_keys, used = cached
        redo = np.empty(0, dtype=np.int64)
        if used != roster_digest:
            if used not in changes:
                changes[used] = changed_tokens_since(storage, used, roster)
            redo = np.flatnonzero(mentioning(_rows(canonical["notes"], positions), changes[used]))
        entries.append(_Entry(path, positions, (part, part_keys), redo, write=used != roster_digest))

    order = np.concatenate([e.positions[e.redo] for e in entries]) if entries else np.empty(0, dtype=np.int64)
    to_redact = len(order)
    if np.array_equal(order, np.arange(len(canonical))):  # nothing cached, exports in order: no copy of the notes
        notes, subjects = canonical["notes"], canonical["child_name"].tolist()
    else:  # export by export: a take over the whole frame's many chunks costs seconds at a million rows
        wanted = [_rows(canonical[["notes", "child_name"]], e.positions).iloc[e.redo] for e in entries if len(e.redo)]
        chosen = pd.concat(wanted) if wanted else canonical[["notes", "child_name"]].iloc[:0]
        notes, subjects = chosen["notes"], chosen["child_name"].tolist()
    fresh = Redactor(roster).redact_column(notes, subjects)

    keys = np.zeros(len(canonical), dtype=np.int64)
    pieces: list[pa.Array | pa.ChunkedArray] = []
    taken = 0
    for entry in entries:  # export by export: a few copies of one export's notes at a time
        texts, part_keys = _merged(entry, fresh.slice(taken, len(entry.redo)))
        taken += len(entry.redo)
        if entry.write:
            _write_entry(storage, entry.path, texts, part_keys, roster_digest)
        pieces.append(texts)
        keys[entry.positions] = part_keys
    redone = sum(len(e.redo) for e in entries if e.cached is not None)
    return CachedRedaction(
        texts=_in_frame_order(pieces, [e.positions for e in entries], len(canonical)),
        group_keys=keys,
        reuse=RedactionReuse(
            reused=len(canonical) - to_redact,
            redone=redone,
            new=to_redact - redone,
            pruned=prune_cache(storage, CACHE_PREFIX, {entry.path for entry in entries}),
        ),
    )


def _merged(entry: _Entry, redone: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """An export's texts and fingerprints: the cached ones with the notes redacted now put in their places."""
    fresh_keys = _fingerprints(redone)
    if entry.cached is None:
        return redone, fresh_keys
    texts, keys = entry.cached
    if not len(entry.redo):
        return texts, keys
    mask = np.zeros(len(texts), dtype=bool)
    mask[entry.redo] = True
    keys = keys.copy()
    keys[entry.redo] = fresh_keys
    return pc.replace_with_mask(texts, pa.array(mask), redone.combine_chunks()), keys


def _fingerprints(texts: pa.ChunkedArray) -> np.ndarray:
    return group_keys(pd.Series(pd.arrays.ArrowStringArray(texts), dtype="string[pyarrow]")).to_numpy()


def _in_frame_order(
    pieces: list[pa.Array | pa.ChunkedArray], positions: list[np.ndarray], rows: int
) -> pa.ChunkedArray:
    """The exports' texts put together row for row, without a copy when the exports' rows follow one another (as
    parts put together do), else placed by their positions."""
    chunks = [c for piece in pieces for c in (piece.chunks if isinstance(piece, pa.ChunkedArray) else [piece])]
    together = pa.chunked_array(chunks, type=pa.large_string())
    where = np.concatenate(positions) if positions else np.empty(0, dtype=np.int64)
    if np.array_equal(where, np.arange(rows)):
        return together
    return pa.chunked_array([take_texts(together, np.argsort(where, kind="stable"))])


def _rows(frame: pd.DataFrame | pd.Series, positions: np.ndarray) -> pd.DataFrame | pd.Series:
    """The rows at `positions`, a slice when they are contiguous (an export's rows are): Arrow's take over the
    many chunks of concatenated exports costs seconds at a million rows."""
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):
        return frame.iloc[positions[0] : positions[-1] + 1]
    return frame.iloc[positions]


def _digest(rows: pd.DataFrame) -> str:
    """The rows' content with the redactor's code version, column by column (`text_digest`: the same rows give the
    same digest however the frame was put together, a column's dtype, chunks and offsets depending on the exports it
    came from)."""
    digest = xxhash.xxh3_128(CODE_VERSION.encode())  # not sha256: a million notes' bytes in a tenth of the time
    for name in rows:
        digest.update(text_digest(pa.array(rows[name], type=pa.large_string(), from_pandas=True)))
    return digest.hexdigest()[:32]


def _store_roster(storage: Storage, roster: Roster, digest: str) -> None:
    path = f"{ROSTER_PREFIX}/{digest}.json"
    if not storage.exists(path):
        storage.write_bytes(path, roster.to_json())


def changed_tokens_since(storage: Storage, used: str, roster: Roster) -> frozenset[str] | None:
    """The tokens `roster` and the stored roster of digest `used` treat differently; None when that roster is no
    longer known (then every note must be looked at again)."""
    path = f"{ROSTER_PREFIX}/{used}.json"
    if not storage.exists(path):
        return None
    return Roster.from_json(storage.read_bytes(path)).changed_tokens(roster)


def mentioning(notes: pd.Series, tokens: frozenset[str] | None) -> np.ndarray:
    """Which notes hold any of `tokens` (lower case, apostrophes of either kind), as a substring: a superset of
    the notes whose redaction the tokens change ("kofis" holds "kofi")."""
    if tokens is None:
        return np.ones(len(notes), dtype=bool)
    if not tokens:
        return np.zeros(len(notes), dtype=bool)
    lowered = pc.replace_substring(pc.utf8_lower(pa.array(notes, type=pa.large_string())), "’", "'")
    pattern = "|".join(_literal(t) for t in sorted(tokens))
    return np.asarray(pc.match_substring_regex(lowered, pattern).fill_null(False))


def _literal(token: str) -> str:
    """A literal for RE2: every character that is not a letter or digit escaped."""
    return "".join(c if c.isalnum() else "\\" + c for c in token)


def _read_entry(storage: Storage, path: str) -> tuple[pa.ChunkedArray, np.ndarray, str] | None:
    if not storage.exists(path):
        return None
    table = read_arrow_file(storage, path)
    keys = table.column("group_key").to_numpy()
    return table.column("text"), keys, table.schema.metadata[_ROSTER_KEY].decode()


def _write_entry(
    storage: Storage, path: str, texts: pa.Array | pa.ChunkedArray, keys: np.ndarray, roster_digest: str
) -> None:
    table = pa.table({"text": texts, "group_key": pa.array(keys, type=pa.int64())}).replace_schema_metadata(
        {_ROSTER_KEY: roster_digest.encode()}
    )
    write_arrow_file(storage, path, table)

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
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from obs_platform.data import names, redaction
from obs_platform.data.redaction import Redactor, Roster
from obs_platform.data.splits import group_keys
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import Storage

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


@dataclass(frozen=True)
class CachedRedaction:
    texts: list[str]  # the notes redacted, row for row
    group_keys: np.ndarray  # each redacted note's near-duplicate fingerprint (`splits.group_keys`), kept with it
    reuse: RedactionReuse


@without_gc_pauses
def redact_with_cache(storage: Storage, canonical: pd.DataFrame, roster: Roster) -> CachedRedaction:
    """`canonical["notes"]` redacted with `roster`, row for row, as `Redactor(roster).redact_many` would. Every
    note to redact, new or redone, goes through one `redact_many` call (it shares the work out over the cores)."""
    roster_digest = roster.digest
    _store_roster(storage, roster, roster_digest)
    texts = np.empty(len(canonical), dtype=object)
    keys = np.zeros(len(canonical), dtype=np.int64)
    todo: list[np.ndarray] = []  # positions of the notes to redact
    entries: list[tuple[str, np.ndarray, np.ndarray]] = []  # (path, positions, positions redacted) to write after
    reused = redone = 0
    changes: dict[str, frozenset[str] | None] = {}
    groups = canonical.groupby("source_file", sort=False).indices if len(canonical) else {}
    for positions in groups.values():
        path = f"{CACHE_PREFIX}/{_digest(_rows(canonical[['notes', 'child_name']], positions))}.arrow"
        cached = _read_entry(storage, path)
        if cached is None:
            todo.append(positions)
            entries.append((path, positions, positions))
            continue
        part, part_keys, used = cached
        texts[positions], keys[positions] = part, part_keys
        if used != roster_digest:
            if used not in changes:
                changes[used] = _changed_tokens(storage, used, roster)
            again = positions[_mentioning(_rows(canonical["notes"], positions), changes[used])]
            todo.append(again)
            entries.append((path, positions, again))
            redone += len(again)
        reused += len(part)
    redact = np.concatenate(todo) if todo else np.empty(0, dtype=np.int64)
    if len(redact) == len(canonical):  # nothing cached: no copy of a million notes
        texts[:] = Redactor(roster).redact_many(canonical["notes"], canonical["child_name"].tolist())
    elif len(redact):
        notes, subjects = canonical["notes"].iloc[redact], canonical["child_name"].iloc[redact].tolist()
        texts[redact] = Redactor(roster).redact_many(notes, subjects)
    for path, positions, redacted in entries:  # export by export: a few copies of one export's notes at a time
        if len(redacted):
            keys[redacted] = group_keys(pd.Series(texts[redacted], dtype=object)).to_numpy()
        _write_entry(storage, path, texts[positions].tolist(), keys[positions], roster_digest)
    return CachedRedaction(
        texts=texts.tolist(),
        group_keys=keys,
        reuse=RedactionReuse(reused=reused - redone, redone=redone, new=len(redact) - redone),
    )


def _rows(frame: pd.DataFrame | pd.Series, positions: np.ndarray) -> pd.DataFrame | pd.Series:
    """The rows at `positions`, a slice when they are contiguous (an export's rows are): Arrow's take over the
    many chunks of concatenated exports costs seconds at a million rows."""
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):
        return frame.iloc[positions[0] : positions[-1] + 1]
    return frame.iloc[positions]


def _digest(rows: pd.DataFrame) -> str:
    """The rows' content with the redactor's code version: per column, which values are missing, each value's length
    and the values' bytes, read from the Arrow buffers (no Python loop), so the same rows give the same digest however
    the frame was put together (a column's dtype, chunks and offsets depend on the exports it came from)."""
    digest = hashlib.sha256(CODE_VERSION.encode())
    for name in rows:
        array = pa.array(rows[name], type=pa.large_string(), from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        _, offset_buffer, data = array.buffers()
        offsets = np.frombuffer(offset_buffer, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
        digest.update(np.asarray(array.is_null()).tobytes())
        digest.update((offsets - offsets[0]).tobytes())
        if data is not None:
            digest.update(memoryview(data)[offsets[0] : offsets[-1]])
    return digest.hexdigest()[:32]


def _store_roster(storage: Storage, roster: Roster, digest: str) -> None:
    path = f"{ROSTER_PREFIX}/{digest}.json"
    if not storage.exists(path):
        storage.write_bytes(path, roster.to_json())


def _changed_tokens(storage: Storage, used: str, roster: Roster) -> frozenset[str] | None:
    """None when the roster used is no longer known: redact every note of the entry again."""
    path = f"{ROSTER_PREFIX}/{used}.json"
    if not storage.exists(path):
        return None
    return Roster.from_json(storage.read_bytes(path)).changed_tokens(roster)


def _mentioning(notes: pd.Series, tokens: frozenset[str] | None) -> np.ndarray:
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


def _read_entry(storage: Storage, path: str) -> tuple[list[str], np.ndarray, str] | None:
    if not storage.exists(path):
        return None
    table = feather.read_table(io.BytesIO(storage.read_bytes(path)))
    keys = table.column("group_key").to_numpy()
    return table.column("text").to_pylist(), keys, table.schema.metadata[_ROSTER_KEY].decode()


def _write_entry(storage: Storage, path: str, texts: list[str], keys: np.ndarray, roster_digest: str) -> None:
    table = pa.table(
        {"text": pa.array(texts, type=pa.large_string()), "group_key": pa.array(keys, type=pa.int64())}
    ).replace_schema_metadata({_ROSTER_KEY: roster_digest.encode()})
    buffer = io.BytesIO()
    feather.write_feather(table, buffer, compression="lz4")
    storage.write_bytes(path, buffer.getvalue())

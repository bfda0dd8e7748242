"""Redacted notes kept export by export, so that new data redacts only what is new.

The roster is the data set's (every export's names redact every note), so a cached note is only as good as the
roster it was redacted with. Each export's notes are stored under `cache/redacted/<digest>.parquet`, the digest
over their text, their children's names and `CODE_VERSION` (the redactor and its word lists), beside the digest
of the roster used. When the roster has changed since, only the notes holding a token the two rosters treat
differently are redacted again (`Roster.changed_tokens`): the others would come out the same.
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
import pyarrow.parquet as pq

from obs_platform.data import names, redaction
from obs_platform.data.redaction import Redactor, Roster
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


def redact_with_cache(storage: Storage, canonical: pd.DataFrame, roster: Roster) -> tuple[list[str], RedactionReuse]:
    """`canonical["notes"]` redacted with `roster`, row for row, as `Redactor(roster).redact_many` would. Every
    note to redact, new or redone, goes through one `redact_many` call (it shares the work out over the cores)."""
    roster_digest = roster.digest
    _store_roster(storage, roster, roster_digest)
    texts = np.empty(len(canonical), dtype=object)
    todo: list[np.ndarray] = []  # positions of the notes to redact
    entries: list[tuple[str, np.ndarray]] = []  # (cache path, positions) of the entries to write afterwards
    reused = redone = 0
    changes: dict[str, frozenset[str] | None] = {}
    row_hashes = pd.util.hash_pandas_object(canonical[["notes", "child_name"]], index=False).to_numpy()
    groups = canonical.groupby("source_file", sort=False).indices if len(canonical) else {}
    for positions in groups.values():
        digest = hashlib.sha256(CODE_VERSION.encode() + row_hashes[positions].tobytes()).hexdigest()[:32]
        path = f"{CACHE_PREFIX}/{digest}.parquet"
        cached = _read_entry(storage, path)
        if cached is None:
            todo.append(positions)
            entries.append((path, positions))
            continue
        part, used = cached
        texts[positions] = part
        if used != roster_digest:
            if used not in changes:
                changes[used] = _changed_tokens(storage, used, roster)
            again = positions[_mentioning(canonical["notes"].iloc[positions], changes[used])]
            todo.append(again)
            entries.append((path, positions))
            redone += len(again)
        reused += len(part)
    redact = np.concatenate(todo) if todo else np.empty(0, dtype=np.int64)
    if len(redact) == len(canonical):  # nothing cached: no copy of a million notes
        texts[:] = Redactor(roster).redact_many(canonical["notes"], canonical["child_name"].tolist())
    elif len(redact):
        notes, subjects = canonical["notes"].iloc[redact], canonical["child_name"].iloc[redact].tolist()
        texts[redact] = Redactor(roster).redact_many(notes, subjects)
    for path, positions in entries:
        _write_entry(storage, path, texts[positions].tolist(), roster_digest)
    return texts.tolist(), RedactionReuse(reused=reused - redone, redone=redone, new=len(redact) - redone)


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


def _read_entry(storage: Storage, path: str) -> tuple[list[str], str] | None:
    if not storage.exists(path):
        return None
    table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
    return table.column("text").to_pylist(), table.schema.metadata[_ROSTER_KEY].decode()


def _write_entry(storage: Storage, path: str, texts: list[str], roster_digest: str) -> None:
    table = pa.table({"text": pa.array(texts, type=pa.large_string())}).replace_schema_metadata(
        {_ROSTER_KEY: roster_digest.encode()}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(path, buffer.getvalue())

"""What a line-by-line check of a JSONL bundle passed before, so that a bundle written again after a drop of new data
is judged on its new lines only (the checks read every line of every bundle, and cost more than the data work).

Each check keeps the 64-bit hashes (xxh3) of the lines of the last bundle it passed, with the digest of what its
verdicts depend on (the check's code, word lists, taxonomy): a line whose bytes hash the same was judged on the same
bytes, and a change of what the verdicts depend on judges every line again. The personal-data check's verdicts also
depend on the roster; a line passed with another roster is judged again when it mentions a word the two rosters
treat differently (`Roster.changed_tokens`), the premise the redaction cache rests on too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import xxhash

from obs_platform.data.redaction import Roster
from obs_platform.data.redaction_cache import changed_tokens_since, mentioning
from obs_platform.storage import Storage

CACHE_PREFIX = "cache/checked-lines"


def line_hashes(lines: Sequence[bytes]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(line) for line in lines), dtype=np.uint64, count=len(lines))


@dataclass(frozen=True)
class PassedLines:
    """The lines one check passed last time."""

    hashes: np.ndarray  # sorted
    depends_on: str  # digest of what the verdicts depended on, but the roster
    roster: str | None  # the digest of the roster they were judged with, for a check that reads one

    def to_judge(
        self, storage: Storage, lines: Sequence[bytes], hashes: np.ndarray, depends_on: str, roster: Roster | None
    ) -> np.ndarray:
        """Which of `lines` (whose hashes are `hashes`) need a verdict now: every line when what the verdicts depend
        on changed; else the lines not passed last time, and those that mention a word the roster now treats
        differently from the one they were passed with."""
        if depends_on != self.depends_on:
            return np.ones(len(lines), dtype=bool)
        known = _isin_sorted(hashes, self.hashes)
        if roster is not None and roster.digest != self.roster:
            tokens = changed_tokens_since(storage, self.roster, roster) if self.roster else None
            at = np.flatnonzero(known)
            texts = pa.array([lines[k] for k in at], type=pa.large_binary()).cast(pa.large_string())
            known[at[mentioning(texts, tokens)]] = False
        return ~known


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def read_passed(storage: Storage, check: str) -> PassedLines:
    """What `check` passed last time (nothing, the first time or after a cache file it cannot read)."""
    path = f"{CACHE_PREFIX}/{check}"
    nothing = PassedLines(np.empty(0, dtype=np.uint64), "", None)
    if not storage.exists(path):
        return nothing
    header, _, body = storage.read_bytes(path).partition(b"\n")
    try:
        meta = orjson.loads(header)
        hashes = np.frombuffer(body, dtype=np.uint64)
    except (orjson.JSONDecodeError, ValueError):
        return nothing
    return PassedLines(hashes, str(meta["depends_on"]), meta.get("roster"))


def write_passed(storage: Storage, check: str, hashes: np.ndarray, depends_on: str, roster: Roster | None) -> None:
    """Keep the hashes of the lines `check` passed now (those of the bundle checked; older lines are forgotten)."""
    meta = {"depends_on": depends_on, "roster": roster.digest if roster is not None else None}
    body = np.unique(hashes.astype(np.uint64)).tobytes()
    storage.write_bytes(f"{CACHE_PREFIX}/{check}", orjson.dumps(meta) + b"\n" + body)

"""Canonical observations built export by export, each export's result kept, so that a drop of new exports
processes only the new files.

The landing area is first taken as a snapshot: every export's path, size and sha256. An export's canonical and
quarantined rows are stored under `cache/canonical/<key>/`, the key a digest of the export's path and content,
the taxonomy's sha256 and `CODE_VERSION` (the source of every module that turns raw rows into canonical ones):
a changed file, taxonomy or canonicalisation code gives new keys, so nothing stale is reused. The canonical set
and the quarantine are the parts put together in landing order, with copies of an observation across exports
resolved by the same rule as within one (`canonical.resolve_duplicates_across_exports`).

One thing depends on the day: a date after tomorrow is quarantined. A part holding such a verdict is made
again on a later day, so a note dated ahead is accepted once its day comes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pandas as pd
from pydantic import BaseModel

from obs_platform.bulk_memory import arrow_from_jemalloc, keep_freed_memory
from obs_platform.data import aliases, canonical, coercion, quarantine, raw, schema, secondary_tags, values
from obs_platform.data.canonical import CanonicalResult, canonicalise, resolve_duplicates_across_exports
from obs_platform.data.raw import (
    FALLBACK_ENCODING,
    SUPPORTED_SUFFIXES,
    UnreadableExport,
    empty_raw_table,
    export_sha256,
    linked_folders,
    parse_export,
    read_export_bytes,
    unreadable_file_row,
)
from obs_platform.data.values import frame_from_arrow
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import LocalStorage, Storage
from obs_platform.storage.arrow_files import arrow_compression, arrow_file_bytes, read_arrow_file
from obs_platform.taxonomy import Taxonomy

CACHE_PREFIX = "cache/canonical"
_DIGESTS = "cache/landing-digests.json"  # path → [size, mtime_ns, sha256] of the files last hashed
_INFO = "part.json"  # written last: a part without it is incomplete and made again
_DATE_VERDICT = "implausible_date"
MIN_BYTES_FOR_WORKERS = 20 * 2**20  # below this, starting worker processes costs more than it saves
SNAPSHOT_THREADS = 4  # exports read and hashed at once (I/O and hashing release the GIL)
PRUNE_AFTER_SECONDS = 3600.0  # a cache entry unused this long, by every run since, is deleted


def source_digest(modules: Iterable[object]) -> str:
    """A digest of the modules' source: what a cached result made by their code is valid for."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = source_digest([aliases, canonical, coercion, quarantine, raw, schema, secondary_tags, values])


class LandedExport(BaseModel, frozen=True):
    path: str
    size: int
    sha256: str | None  # None: the file cannot be read at all (`unreadable` says why)
    unreadable: str | None = None


class LandingSnapshot(BaseModel, frozen=True):
    """What the landing area holds: the exports to read, the files that are not exports, and linked folders
    (never followed)."""

    prefix: str
    exports: list[LandedExport]
    ignored_files: list[str] = []
    linked_folders: list[str] = []

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def snapshot_landing(storage: Storage, prefix: str) -> LandingSnapshot:
    """Every file below `prefix` with its sha256. On a local disk a file whose size and modification time are
    those recorded with its digest last time is not read again (as git's index does); elsewhere every file is.
    Files are read and hashed in threads (both release the GIL): a million rows' exports in half the time."""
    known = _known_digests(storage)
    paths = storage.list_files(prefix)
    ignored = [path for path in paths if not path.lower().endswith(SUPPORTED_SUFFIXES)]
    to_read = [path for path in paths if path.lower().endswith(SUPPORTED_SUFFIXES)]
    seen: dict[str, list] = {}
    exports = []
    with ThreadPoolExecutor(SNAPSHOT_THREADS) as pool:
        for path, found in zip(to_read, pool.map(lambda path: _fingerprint(storage, path, known), to_read)):
            if isinstance(found, UnreadableExport):
                exports.append(LandedExport(path=path, size=0, sha256=None, unreadable=str(found)))
                continue
            stat, size, digest = found
            if stat is not None:
                seen[path] = [*stat, digest]
            exports.append(LandedExport(path=path, size=size, sha256=digest))
    if seen and seen != known:
        storage.write_bytes(_DIGESTS, orjson.dumps(seen))
    return LandingSnapshot(
        prefix=prefix, exports=exports, ignored_files=ignored, linked_folders=linked_folders(storage, prefix)
    )


def _fingerprint(
    storage: Storage, path: str, known: dict[str, list]
) -> tuple[tuple[int, int] | None, int, str] | UnreadableExport:
    """An export's local (size, modification time) if it has them, its size and its sha256, the digest recorded
    last time when those are unchanged; or why it cannot be read."""
    try:
        stat = _regular_file_stat(storage, path)
        recorded = known.get(path)
        if stat is not None and recorded and recorded[:2] == list(stat):
            return stat, stat[0], recorded[2]
        digest, size = export_sha256(storage, path)
    except UnreadableExport as unreadable:
        return unreadable
    return stat, size, digest


def _known_digests(storage: Storage) -> dict[str, list]:
    if not isinstance(storage, LocalStorage) or not storage.exists(_DIGESTS):
        return {}
    return orjson.loads(storage.read_bytes(_DIGESTS))


def _regular_file_stat(storage: Storage, path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of a local regular file; None elsewhere (and for a link, which is read
    to be refused)."""
    if not isinstance(storage, LocalStorage):
        return None
    local = storage.local_path(path)
    if local.is_symlink():
        return None
    stat = local.stat()
    return stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class PartInfo:
    """One export's result: what it held and whether this run reused it."""

    path: str
    raw_rows: int
    canonical_rows: int
    quarantined_rows: int
    encoding: str | None
    unreadable: str | None
    unparseable_rows: int
    invisible_characters_removed: dict[str, int]
    judged_on: str  # the day its dates were judged
    reused: bool = False


@dataclass
class IncrementalCanonical:
    result: CanonicalResult
    parts: list[PartInfo]
    duplicates_across_exports: int  # rows quarantined because another export holds the same observation id
    pruned: int = 0  # cached parts deleted: unused for an hour (exports no longer landed, older taxonomy or code)

    @property
    def reused(self) -> list[str]:
        return [p.path for p in self.parts if p.reused]

    @property
    def processed(self) -> list[str]:
        return [p.path for p in self.parts if not p.reused]

    def accounting(self) -> pd.DataFrame:
        """Per export: the rows read and where they went; `missing` counts rows read that neither table holds
        (below zero: held more often than read), `held_twice` rows held by both tables or twice by one."""
        result = self.result
        frame = pd.DataFrame({"source_file": [p.path for p in self.parts], "read": [p.raw_rows for p in self.parts]})
        for name, table in (("canonical", result.canonical), ("quarantined", result.quarantined)):
            counts = table["source_file"].value_counts()  # per file: no per-row strings
            frame[name] = frame["source_file"].map(dict(zip(counts.index.astype(str), counts.to_numpy()))).fillna(0)
            frame[name] = frame[name].astype(int)
        frame["missing"] = frame["read"] - frame["canonical"] - frame["quarantined"]
        tables = [t[["source_file", "source_line"]] for t in (result.canonical, result.quarantined) if len(t)]
        places = pd.concat(tables) if tables else result.canonical[["source_file", "source_line"]]
        twice = places[places.duplicated()]["source_file"].astype(str).value_counts()
        frame["held_twice"] = frame["source_file"].map(twice).fillna(0).astype(int)
        return frame

    def rows_per_file(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "source_file": p.path,
                    "rows": p.raw_rows,
                    "unparseable": p.unparseable_rows,
                    "canonical": p.canonical_rows,
                    "quarantined": p.quarantined_rows,
                    "reused": p.reused,
                }
                for p in self.parts
            ],
            columns=["source_file", "rows", "unparseable", "canonical", "quarantined", "reused"],
        )


def part_key(export: LandedExport, taxonomy: Taxonomy, fallback_encoding: str = FALLBACK_ENCODING) -> str:
    identity = f"{export.path}\0{export.sha256}\0{taxonomy.sha256}\0{CODE_VERSION}\0{fallback_encoding}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


@arrow_from_jemalloc
@without_gc_pauses
def canonical_from_parts(
    storage: Storage,
    snapshot: LandingSnapshot,
    taxonomy: Taxonomy,
    *,
    workers: int | None = None,
    today: dt.date | None = None,
) -> IncrementalCanonical:
    """The canonical set and the quarantine of everything landed, making only the parts not made before (in
    worker processes when there is enough to share, or while the cached parts are read)."""
    today_text = (today or dt.date.today()).isoformat()
    keys = {e.path: part_key(e, taxonomy) for e in snapshot.exports if e.sha256}
    cached = {path: info for path, key in keys.items() if (info := _cached_info(storage, key, today_text))}
    todo = [e for e in snapshot.exports if e.sha256 and e.path not in cached]
    with _making_parts(storage, todo, keys, taxonomy, workers, beside_other_work=bool(cached)) as made:
        loaded = {path: _read_part(storage, keys[path]) for path in cached}

    infos: list[PartInfo] = []
    canonical_frames, quarantined_frames = [], []
    for export in snapshot.exports:
        if export.sha256 is None:  # unreadable: one quarantine row of its own, nothing to cache
            unreadable = UnreadableExport(*_code_and_message(export))
            quarantined_frames.append(_quarantined_whole(export.path, unreadable, taxonomy))
            infos.append(_whole_file_info(export.path, unreadable, today_text))
            continue
        canonical_part, quarantined_part = loaded.get(export.path) or _read_part(storage, keys[export.path])
        canonical_frames.append(canonical_part)
        quarantined_frames.append(quarantined_part)
        infos.append(cached.get(export.path) or made[export.path])
    for link in snapshot.linked_folders:
        unreadable = UnreadableExport("symlink_refused", raw.link_message(storage, link))
        quarantined_frames.append(_quarantined_whole(link, unreadable, taxonomy))
        infos.append(_whole_file_info(link, unreadable, today_text))

    empty = canonicalise(empty_raw_table(), taxonomy)  # the typed empty tables
    canonical_frames = [f for f in canonical_frames if len(f)]
    combined = pd.concat(canonical_frames, ignore_index=True) if canonical_frames else empty.canonical
    kept, across = resolve_duplicates_across_exports(combined) if len(combined) else (combined, None)
    quarantined_frames = [f for f in [*quarantined_frames, across] if f is not None and len(f)]
    quarantined = pd.concat(quarantined_frames, ignore_index=True) if quarantined_frames else empty.quarantined
    removed: dict[str, int] = {}
    for info in infos:
        for field, count in info.invisible_characters_removed.items():
            removed[field] = removed.get(field, 0) + count
    return IncrementalCanonical(
        result=CanonicalResult(canonical=kept, quarantined=quarantined, invisible_characters_removed=removed),
        parts=infos,
        duplicates_across_exports=0 if across is None else len(across),
        pruned=prune_cache(storage, CACHE_PREFIX, {f"{CACHE_PREFIX}/{key}" for key in keys.values()}),
    )


def prune_cache(storage: Storage, prefix: str, kept: set[str], now: float | None = None) -> int:
    """Delete the entries under `prefix` (a file, or a folder of files) that this run did not use (those not in
    `kept`) and that were already unused an hour before, so a cache holds what the landing area holds, not all it
    ever held. A run that finds an entry unused only marks it (`<prefix>.unused.json`): another run still reading
    it, one that started before the landing area changed, is never pulled from under. A folder's `part.json` goes
    first, so a part half deleted is incomplete, never trusted. Returns how many entries went."""
    now = time.time() if now is None else now
    marks_path = f"{prefix}.unused.json"
    marks: dict[str, float] = orjson.loads(storage.read_bytes(marks_path)) if storage.exists(marks_path) else {}
    unused: dict[str, list[str]] = {}
    for path in storage.list_files(prefix):
        entry = "/".join(path.split("/")[: prefix.count("/") + 2])
        if entry not in kept:
            unused.setdefault(entry, []).append(path)
    gone = [entry for entry in unused if now - marks.get(entry, now) >= PRUNE_AFTER_SECONDS]
    for entry in gone:
        for path in sorted(unused[entry], key=lambda p: not p.endswith(f"/{_INFO}")):
            storage.delete(path)
    still = {entry: marks.get(entry, now) for entry in unused if entry not in gone}
    if still != marks:
        storage.write_bytes(marks_path, orjson.dumps(still))
    return len(gone)


def _quarantined_whole(path: str, unreadable: UnreadableExport, taxonomy: Taxonomy) -> pd.DataFrame:
    return canonicalise(unreadable_file_row(path, unreadable), taxonomy).quarantined


def _whole_file_info(path: str, unreadable: UnreadableExport, today: str) -> PartInfo:
    return PartInfo(path, 1, 0, 1, None, str(unreadable), 1, {}, today)


def _code_and_message(export: LandedExport) -> tuple[str, str]:
    code, _, message = (export.unreadable or "unreadable_file: ").partition(":")
    return code, message.strip()


def _cached_info(storage: Storage, key: str, today: str) -> PartInfo | None:
    path = f"{CACHE_PREFIX}/{key}/{_INFO}"
    if not storage.exists(path):
        return None
    body = orjson.loads(storage.read_bytes(path))
    if body["dated"] and body["info"]["judged_on"] != today:
        return None  # it quarantined a date in the future: judge again today
    return PartInfo(**{**body["info"], "reused": True})


def _read_part(storage: Storage, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cached part's canonical and quarantined rows."""

    def read(name: str) -> pd.DataFrame:
        return frame_from_arrow(read_arrow_file(storage, f"{CACHE_PREFIX}/{key}/{name}"))

    return read("canonical.arrow"), read("quarantined.arrow")


@contextmanager
def _making_parts(
    storage: Storage,
    todo: list[LandedExport],
    keys: dict[str, str],
    taxonomy: Taxonomy,
    workers: int | None,
    *,
    beside_other_work: bool,
) -> Iterator[dict[str, PartInfo]]:
    """Make and store the parts of `todo`; the dict yielded holds their infos once the block ends. They are made in
    worker processes when they are big enough to be worth forking for and either share out over cores or have the
    block's own work beside them (a big drop is canonicalised while the cached parts are read), else here, before
    the block runs: a nightly drop of 10k rows canonicalises in 0.15-0.3 s, less than forking a process that holds
    a million rows and its copy-on-write faults cost."""
    made: dict[str, PartInfo] = {}
    workers = min(workers or os.cpu_count() or 1, len(todo))
    compression = arrow_compression(storage)
    big_enough = sum(e.size for e in todo) >= MIN_BYTES_FOR_WORKERS
    if not todo or not big_enough or not (beside_other_work or workers >= 2):
        for export in todo:
            made[export.path] = _store_part(
                storage, keys[export.path], *_make_part(export.path, storage, taxonomy, compression)
            )
        yield made
        return
    # Forked (no import of the caller's main module, no start-up cost); when the storage is a local folder each
    # worker reads its file and stores its part itself, so only the part's info crosses between processes.
    local_root = str(storage.root) if isinstance(storage, LocalStorage) else None
    # The workers keep what they free for their next export (`bulk_memory`): a third less time at a million rows.
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork, initializer=keep_freed_memory) as pool:
        futures = {
            e.path: pool.submit(
                _make_part_in_worker,
                e.path,
                keys[e.path],
                local_root,
                None if local_root else read_export_bytes(storage, e.path),
                taxonomy,
                compression,
            )
            for e in sorted(todo, key=lambda e: -e.size)  # the largest first: the workers finish together
        }
        yield made
        for path, future in futures.items():
            part = future.result()
            made[path] = part if isinstance(part, PartInfo) else _store_part(storage, keys[path], *part)


def _make_part_in_worker(
    path: str, key: str, local_root: str | None, data: bytes | None, taxonomy: Taxonomy, compression: str
) -> PartInfo | tuple[bytes, bytes, dict]:
    """The part, stored here when the storage is a local folder (its info returned), else returned whole."""
    if local_root is None:
        return _make_part(path, None, taxonomy, compression, data)
    storage = LocalStorage(local_root)
    return _store_part(storage, key, *_make_part(path, storage, taxonomy, compression))


@without_gc_pauses
def _make_part(
    path: str, storage: Storage | None, taxonomy: Taxonomy, compression: str, data: bytes | None = None
) -> tuple[bytes, bytes, dict]:
    """Read and canonicalise one export: its canonical and quarantined rows as Arrow files (`arrow_files`: the
    compression the storage keeps them in), and what it held."""
    if data is None:
        assert storage is not None
        data = read_export_bytes(storage, path)
    rows = parse_export(path, data)
    result = canonicalise(rows, taxonomy)
    unparseable = int(rows["parse_error"].notna().sum()) if "parse_error" in rows else 0
    encoding = rows["source_encoding"].dropna().iloc[0] if len(rows) and rows["source_encoding"].notna().any() else None
    whole_file = len(rows) == 1 and pd.isna(rows["source_line"].iloc[0])
    codes = {c for codes in result.quarantined["reason_codes"] for c in codes}
    info = {
        "path": path,
        "raw_rows": len(rows),
        "canonical_rows": len(result.canonical),
        "quarantined_rows": len(result.quarantined),
        "encoding": None if whole_file else encoding,
        "unreadable": rows["parse_error"].iloc[0] if whole_file else None,
        "unparseable_rows": unparseable,
        "invisible_characters_removed": result.invisible_characters_removed,
        "judged_on": dt.date.today().isoformat(),
        "dated": _DATE_VERDICT in codes,
    }
    return arrow_file_bytes(result.canonical, compression), arrow_file_bytes(result.quarantined, compression), info


def _store_part(storage: Storage, key: str, canonical_bytes: bytes, quarantined_bytes: bytes, info: dict) -> PartInfo:
    folder = f"{CACHE_PREFIX}/{key}"
    storage.write_bytes(f"{folder}/canonical.arrow", canonical_bytes)
    storage.write_bytes(f"{folder}/quarantined.arrow", quarantined_bytes)
    dated = info.pop("dated")
    storage.write_bytes(f"{folder}/{_INFO}", orjson.dumps({"info": info, "dated": dated}))
    return PartInfo(**info)

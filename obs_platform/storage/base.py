"""The storage protocol every backend implements, and helpers built only on that protocol."""

from __future__ import annotations

import hashlib
import json
import queue
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from obs_platform.gc_pause import without_gc_pauses

Chunk = bytes | memoryview  # a piece of a file: new bytes, or a view of a mapped file's (`read_range`)


class StorageError(RuntimeError):
    """A storage operation failed; the message names the path."""


@runtime_checkable
class Storage(Protocol):
    """Paths are POSIX-style and relative to the storage root (`landing/export.csv`)."""

    @property
    def root_uri(self) -> str:
        """`/abs/folder` or `gs://bucket/prefix`: printed to users and recorded in metadata."""
        ...

    def uri(self, path: str) -> str:
        """Full URI of a path, the form other systems (a trainer, Vertex) are given."""
        ...

    def exists(self, path: str) -> bool: ...

    def read_bytes(self, path: str) -> bytes: ...

    def read_range(self, path: str, start: int, length: int) -> Chunk:
        """`length` bytes from byte `start` (a block of a large file, without reading the rest); a range past the
        end is a `StorageError`. A local file's range is a read-only view of the mapped file, not a copy."""
        ...

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic: readers see the old content or the new, never half a file."""
        ...

    def put_file(self, path: str, local_file: Path) -> None:
        """Store a finished local file at `path` (moved or uploaded); atomic like `write_bytes`."""
        ...

    def list_files(self, prefix: str) -> list[str]:
        """Every file below `prefix`, recursively, as root-relative paths, sorted."""
        ...

    def delete(self, path: str) -> None: ...


def content_hash(file_digests: Mapping[str, str]) -> str:
    """A digest over file names and their sha256 digests: the identity of a data version."""
    digest = hashlib.sha256()
    for name in sorted(file_digests):
        digest.update(f"{name}\0{file_digests[name]}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ContentAddressedWrite:
    """Where a content-addressed bundle lives and whether this call wrote it."""

    folder: str
    folder_uri: str
    digest: str
    written: bool
    files: tuple[str, ...]
    sizes: Mapping[str, int]

    @property
    def version(self) -> str:
        """The short digest that names the folder, used as the data version everywhere."""
        return self.folder.rsplit("/", 1)[-1]


MANIFEST = "_manifest.json"


def _bundle_folder(base: str, digest: str) -> str:
    return f"{base.rstrip('/')}/{digest[:16]}"


def content_addressed_folder(base: str, files: Mapping[str, Iterable[Chunk]]) -> str:
    """The folder `write_content_addressed` writes (or wrote) these files to, found by hashing them alone: where
    the bundle of a value is, without writing anything."""
    digests = {}
    for name, chunks in files.items():
        hasher = hashlib.sha256()
        for chunk in chunks:
            hasher.update(chunk)
        digests[name] = hasher.hexdigest()
    return _bundle_folder(base, content_hash(digests))


def _hash_and_write(chunks: Iterable[Chunk], handle: BinaryIO) -> tuple[str, int]:
    """The chunks' sha256 and length, written to `handle` as they come. Hashing and writing each run in a thread of
    their own (both release the GIL) while the next chunk is made: rendering a million JSON lines hides most of the
    cost of writing them, and a file written at the disk's pace is hashed meanwhile, not after."""
    hasher, size = hashlib.sha256(), 0
    queues: list[queue.Queue[Chunk | None]] = [queue.Queue(maxsize=2), queue.Queue(maxsize=2)]  # two chunks ahead

    def consume(pending: queue.Queue[Chunk | None], use: Callable[[Chunk], object]) -> None:
        while (chunk := pending.get()) is not None:
            use(chunk)

    with ThreadPoolExecutor(2) as workers:
        done = [workers.submit(consume, q, use) for q, use in zip(queues, (hasher.update, handle.write))]
        try:
            for chunk in chunks:
                size += len(chunk)
                for pending in queues:
                    while not _offered(pending, chunk):
                        for worker in done:
                            if worker.done():
                                worker.result()  # a worker failed (a full disk): raise its error here
        finally:
            for pending, worker in zip(queues, done):
                while not _offered(pending, None) and not worker.done():
                    pass
        for worker in done:
            worker.result()
    return hasher.hexdigest(), size


def _offered(pending: queue.Queue, item: Chunk | None) -> bool:
    try:
        pending.put(item, timeout=0.1)
    except queue.Full:
        return False
    return True


@without_gc_pauses
def write_content_addressed(storage: Storage, base: str, files: Mapping[str, Iterable[Chunk]]) -> ContentAddressedWrite:
    """Stream `files` (name → chunks) to `base/<digest>/`; a bundle already there is left untouched.

    Chunks go to local scratch files while they are hashed, so a million-line file never sits in
    memory. The manifest is stored last: a bundle interrupted half-way has none, is not mistaken for a
    complete one, and is simply rewritten next time.
    """
    with tempfile.TemporaryDirectory(prefix="obs-platform-") as scratch:
        digests: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for name, chunks in files.items():
            with open(Path(scratch, name.replace("/", "__")), "wb") as handle:
                digests[name], sizes[name] = _hash_and_write(chunks, handle)
        digest = content_hash(digests)
        folder = _bundle_folder(base, digest)
        manifest_path = f"{folder}/{MANIFEST}"
        written = not storage.exists(manifest_path)
        if written:
            for name in sorted(files):
                storage.put_file(f"{folder}/{name}", Path(scratch, name.replace("/", "__")))
            manifest = {
                "digest": digest,
                "files": {n: {"sha256": digests[n], "bytes": sizes[n]} for n in sorted(files)},
            }
            storage.write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    return ContentAddressedWrite(
        folder=folder,
        folder_uri=storage.uri(folder),
        digest=digest,
        written=written,
        files=tuple(sorted(files)),
        sizes=sizes,
    )

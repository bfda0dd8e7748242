"""Storage in a folder on the local disk (the default deployment)."""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from obs_platform.storage.base import StorageError


class LocalStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    @property
    def root_uri(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts:
            raise StorageError(f"path {path!r} must be relative to the storage root and stay inside it")
        return self.root.joinpath(*relative.parts)

    def local_path(self, path: str) -> Path:
        """The file system path of a storage path (local storage only: subprocesses read it directly)."""
        return self._path(path)

    def uri(self, path: str) -> str:
        return str(self._path(path))

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def read_bytes(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc

    def read_range(self, path: str, start: int, length: int) -> memoryview:
        """A read-only view of the range in the mapped file, as the Arrow caches are read: the pages are the page
        cache's, and a bundle's unchanged lines go on to be hashed and written without first being copied into
        buffers of their own, whose fresh pages this VM faults in slowly (0.45 s of a 10k drop's 1.4 s writing the
        split files of a million rows, docs/benchmarks.md). A file here is only ever replaced, never truncated in
        place, so a view stays readable for as long as it is held."""
        try:
            with self._path(path).open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if length and size else None
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc
        if start < 0 or length < 0 or start + length > size:
            raise StorageError(f"cannot read {self.uri(path)}: bytes {start}-{start + length} are past its end")
        return memoryview(mapped)[start : start + length] if mapped is not None else memoryview(b"")

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, path: str, local_file: Path) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local_file, target)
        except OSError:  # another file system: copy beside the target, then rename atomically
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            shutil.copyfile(local_file, tmp)
            os.replace(tmp, target)

    def list_files(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        found = []
        for current, _, names in os.walk(base):
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # a write in progress
                full = Path(current, name)
                found.append(full.relative_to(self.root).as_posix())
        return sorted(found)

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

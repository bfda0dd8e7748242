"""Storage in a folder on the local disk (the default deployment)."""

from __future__ import annotations

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

    def read_range(self, path: str, start: int, length: int) -> bytes:
        try:
            with self._path(path).open("rb") as handle:
                handle.seek(start)
                data = handle.read(length)
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc
        if len(data) != length:
            raise StorageError(f"cannot read {self.uri(path)}: bytes {start}-{start + length} are past its end")
        return data

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

"""What is in the landing area, by content: the landing sensor compares fingerprints, not modification times,
so a file touched but unchanged requests nothing, and several files landing together make one run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from obs_platform.data.raw import SUPPORTED_SUFFIXES, UnreadableExport, read_export_bytes
from obs_platform.storage import Storage


@dataclass(frozen=True)
class LandingSnapshot:
    files: dict[str, str]  # landing path → sha256 of its content

    @classmethod
    def take(cls, storage: Storage, prefix: str) -> LandingSnapshot:
        return cls(
            {
                path: _fingerprint(storage, path)
                for path in storage.list_files(prefix)
                if path.lower().endswith(SUPPORTED_SUFFIXES)
            }
        )

    @property
    def digest(self) -> str:
        """One hash of every file's path and content: the run key of the data it describes."""
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()[:16]

    def changes_since(self, previous: LandingSnapshot) -> dict[str, list[str]]:
        return {
            "added": sorted(set(self.files) - set(previous.files)),
            "changed": sorted(p for p in self.files if p in previous.files and previous.files[p] != self.files[p]),
            "removed": sorted(set(previous.files) - set(self.files)),
        }

    def to_cursor(self) -> str:
        return json.dumps(self.files, sort_keys=True)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> LandingSnapshot:
        return cls(json.loads(cursor) if cursor else {})


def _fingerprint(storage: Storage, path: str) -> str:
    """The content's hash; for a file that cannot be read (a symbolic link is never followed), the hash of why,
    so it still requests a run, in which it is quarantined."""
    try:
        return hashlib.sha256(read_export_bytes(storage, path)).hexdigest()
    except UnreadableExport as unreadable:
        return hashlib.sha256(str(unreadable).encode()).hexdigest()

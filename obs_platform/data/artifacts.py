"""Typed descriptions of files the data assets write: what downstream training reads."""

from __future__ import annotations

from pydantic import BaseModel

from obs_platform.storage import Storage
from obs_platform.storage.base import ContentAddressedWrite


class TrainingFiles(BaseModel):
    """A content-addressed bundle of JSONL files (one data version of one format)."""

    format: str
    version: str
    folder: str
    folder_uri: str
    files: dict[str, str]  # file name → full URI
    rows: dict[str, int]  # file name → lines
    written: bool

    @classmethod
    def from_write(
        cls, fmt: str, write: ContentAddressedWrite, storage: Storage, rows: dict[str, int]
    ) -> TrainingFiles:
        return cls(
            format=fmt,
            version=write.version,
            folder=write.folder,
            folder_uri=write.folder_uri,
            files={name: storage.uri(f"{write.folder}/{name}") for name in write.files},
            rows=rows,
            written=write.written,
        )

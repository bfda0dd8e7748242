"""Where the platform keeps its files: one protocol, a local-folder and a GCS implementation."""

from obs_platform.storage.base import (
    Storage,
    StorageError,
    content_addressed_folder,
    content_hash,
    write_content_addressed,
)
from obs_platform.storage.factory import storage_from_uri
from obs_platform.storage.local import LocalStorage

__all__ = [
    "LocalStorage",
    "Storage",
    "StorageError",
    "content_addressed_folder",
    "content_hash",
    "storage_from_uri",
    "write_content_addressed",
]

"""Pick the storage implementation from the root URI, so callers never branch on the backend."""

from __future__ import annotations

from obs_platform.storage.base import Storage
from obs_platform.storage.local import LocalStorage


def storage_from_uri(uri: str) -> Storage:
    """`gs://bucket/prefix` → GCS; anything else is a local folder."""
    if uri.startswith("gs://"):
        from obs_platform.storage.gcs import GCSStorage

        bucket, _, prefix = uri[len("gs://") :].partition("/")
        if not bucket:
            raise ValueError(f"storage URI {uri!r} names no bucket")
        return GCSStorage(bucket, prefix)
    return LocalStorage(uri)

"""Storage under a `gs://bucket/prefix` (the Vertex deployment), through google-cloud-storage.

Imported lazily by `storage_from_uri`, so a local deployment never pays for the GCS client.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from google.api_core import exceptions as gcloud_exceptions
from google.cloud import storage as gcs

from obs_platform.storage.base import StorageError


class GCSStorage:
    def __init__(self, bucket: str, prefix: str = "", client: gcs.Client | None = None):
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    def __repr__(self) -> str:
        return f"GCSStorage({self.root_uri!r})"

    @property
    def client(self) -> gcs.Client:
        if self._client is None:
            self._client = gcs.Client()
        return self._client

    @property
    def bucket(self) -> gcs.Bucket:
        return self.client.bucket(self.bucket_name)

    @property
    def root_uri(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")

    def _key(self, path: str) -> str:
        path = path.strip("/")
        if ".." in path.split("/"):
            raise StorageError(f"path {path!r} must stay inside the storage root")
        return f"{self.prefix}/{path}" if self.prefix else path

    def uri(self, path: str) -> str:
        return f"gs://{self.bucket_name}/{self._key(path)}"

    def exists(self, path: str) -> bool:
        return self.bucket.blob(self._key(path)).exists()

    def read_bytes(self, path: str) -> bytes:
        try:
            return self.bucket.blob(self._key(path)).download_as_bytes()
        except gcloud_exceptions.GoogleAPIError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc

    def read_range(self, path: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        try:  # an HTTP range request: `end` is inclusive
            data = self.bucket.blob(self._key(path)).download_as_bytes(start=start, end=start + length - 1)
        except gcloud_exceptions.GoogleAPIError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc
        if len(data) != length:
            raise StorageError(f"cannot read {self.uri(path)}: bytes {start}-{start + length} are past its end")
        return data

    def write_bytes(self, path: str, data: bytes) -> None:
        # A GCS object becomes visible only once its upload completes: writes are atomic by nature.
        try:
            self.bucket.blob(self._key(path)).upload_from_string(data)
        except gcloud_exceptions.GoogleAPIError as exc:
            raise StorageError(f"cannot write {self.uri(path)}: {exc}") from exc

    def put_file(self, path: str, local_file: Path) -> None:
        try:
            self.bucket.blob(self._key(path)).upload_from_filename(str(local_file))
        except gcloud_exceptions.GoogleAPIError as exc:
            raise StorageError(f"cannot upload {local_file} to {self.uri(path)}: {exc}") from exc

    def list_files(self, prefix: str) -> list[str]:
        # A prefix is a folder: "landing" must not match "landing-old/...".
        key_prefix = self._key(prefix).rstrip("/") + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        names = [blob.name[cut:] for blob in self.client.list_blobs(self.bucket_name, prefix=key_prefix)]
        return sorted(n for n in names if n and not n.endswith("/"))

    def delete(self, path: str) -> None:
        with contextlib.suppress(gcloud_exceptions.NotFound):
            self.bucket.blob(self._key(path)).delete()

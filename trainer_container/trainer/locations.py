"""Local paths and `gs://` URIs, so one entrypoint serves a laptop run and a Vertex AI custom job.

A `gs://` input is downloaded once; a `gs://` output is a local working folder mirrored to the bucket
after every checkpoint (and fetched back first, so a restarted job resumes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    return bucket, key.strip("/")


def _client():  # imported lazily: local runs never need the Google client
    from google.cloud import storage

    return storage.Client()


def fetch_file(uri: str) -> Path:
    """A local path holding the file at `uri`."""
    if not uri.startswith("gs://"):
        return Path(uri)
    bucket, key = _split(uri)
    target = Path(tempfile.mkdtemp(prefix="trainer-input-")) / Path(key).name
    _client().bucket(bucket).blob(key).download_to_filename(str(target))
    return target


class OutputFolder:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.remote = uri.startswith("gs://")
        self.path = Path(tempfile.mkdtemp(prefix="trainer-output-")) if self.remote else Path(uri)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.remote:
            self._download()

    def _download(self) -> None:
        bucket, prefix = _split(self.uri)
        for blob in _client().list_blobs(bucket, prefix=prefix + "/"):
            target = self.path / blob.name[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))

    def publish(self) -> None:
        """Mirror the working folder to the bucket (no-op for a local output)."""
        if not self.remote:
            return
        bucket_name, prefix = _split(self.uri)
        bucket = _client().bucket(bucket_name)
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            bucket.blob(f"{prefix}/{file.relative_to(self.path).as_posix()}").upload_from_filename(str(file))

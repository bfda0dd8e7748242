"""Shared fixtures: taxonomies, the sample corpus, temporary storage roots."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obs_platform.cli import sample_data_files
from obs_platform.storage import LocalStorage
from obs_platform.taxonomy import Taxonomy, load_taxonomy

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
SEED_TAXONOMY = SHARED / "reference" / "seed_taxonomy" / "learningdomains.json"
SEED_SAMPLE = SHARED / "reference" / "seed_taxonomy" / "sample_canonical.jsonl"


@pytest.fixture(scope="session")
def eyfs() -> Taxonomy:
    return load_taxonomy()


@pytest.fixture(scope="session")
def seed_taxonomy() -> Taxonomy:
    if not SEED_TAXONOMY.exists():
        pytest.skip("../shared is absent: the seed taxonomy is not available")
    return load_taxonomy(SEED_TAXONOMY)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "home")


@pytest.fixture
def landed_storage(storage: LocalStorage) -> LocalStorage:
    """A storage root whose landing area holds the shipped sample corpus."""
    for file in sample_data_files():
        storage.write_bytes(f"landing/{file.name}", file.read_bytes())
    return storage


def record(**overrides: Any) -> dict[str, Any]:
    """A valid raw record in the JSONL export shape (EYFS labels), with fields overridden."""
    base: dict[str, Any] = {
        "observationId": "obs-t-1",
        "childName": "Amara Okafor",
        "childAgeMonths": 40,
        "observationDate": "2025-03-14",
        "educatorId": "edu-1",
        "educatorName": "Priya Shah",
        "setting": "garden",
        "observationNotes": "Amara poured water from the jug into three cups and said 'this one has the most'.",
        "photoUris": [],
        "domainId": 5,
        "attributeId": 12,
        "progressionTitle": "Three and four-year-olds",
        "secondaryTags": [],
    }
    base.update(overrides)
    return base


def jsonl(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """An in-process GCS emulator on loopback (google-cloud-storage finds it through
    STORAGE_EMULATOR_HOST); yields its bucket name."""
    server_module = pytest.importorskip("gcp_storage_emulator.server")
    port = free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket="obs-bucket")
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        patch.setenv("GOOGLE_CLOUD_PROJECT", "obs-test")
        yield "obs-bucket"
    server.stop()

"""Shared fixtures: taxonomies, the sample corpus, temporary storage roots."""

import json
import shutil
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


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)

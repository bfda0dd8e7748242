"""Shared fixtures: taxonomies, the sample corpus, temporary storage roots."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from trainer.inputs import model_input
from transformers import BertConfig, BertModel, BertTokenizerFast

from obs_platform.cli import sample_data_files
from obs_platform.data import prepare
from obs_platform.data.canonical import canonicalise
from obs_platform.data.raw import parse_export
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


@pytest.fixture(scope="session")
def split_files(tmp_path_factory, eyfs) -> dict[str, Path]:
    """The sample corpus through the data pipeline, written as the split JSONL the trainer reads."""
    frames = [parse_export(p.name, p.read_bytes()) for p in sample_data_files()]
    result = canonicalise(pd.concat(frames, ignore_index=True), eyfs)
    redacted = prepare.redact_observations(result.canonical, prepare.build_roster(result.canonical, result.quarantined))
    frame = prepare.split_observations(redacted, None).frame
    folder = tmp_path_factory.mktemp("splits")
    for name, chunks in prepare.split_files(frame).items():
        (folder / name).write_bytes(b"".join(chunks))
    return {name.removesuffix(".jsonl"): folder / name for name in ("train.jsonl", "valid.jsonl", "test.jsonl")}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, split_files) -> Path:
    """A 2-layer BERT with a word-level vocabulary of the corpus: real architecture, seconds to train."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = set()
    for path in split_files.values():
        for line in path.read_text().splitlines():
            words.update(model_input(json.loads(line)["text"], None).lower().replace("'", " ").split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(w for w in words if w.isalpha())[:3000]]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder

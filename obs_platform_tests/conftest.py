"""Shared fixtures: taxonomies, the sample corpus, temporary storage roots."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from trainer.inputs import model_input
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from obs_platform.cli import sample_data_files
from obs_platform.data import prepare
from obs_platform.data.canonical import canonicalise
from obs_platform.data.raw import parse_export
from obs_platform.storage import LocalStorage
from obs_platform.taxonomy import Taxonomy, load_taxonomy

from .fake_vertex import fake_vertex  # noqa: F401  (a fixture: the fake Vertex AI API)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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
def bigquery_emulator(tmp_path_factory) -> Iterator[str]:
    """`bqemulator` on loopback (in a process of its own); yields its REST endpoint. Its DuckDB needs the spatial
    extension, installed from PyPI's wheel into the emulator's own home (it would otherwise be downloaded)."""
    pytest.importorskip("bqemulator")
    duckdb = pytest.importorskip("duckdb")
    spatial = pytest.importorskip("duckdb_extension_spatial")
    home = tmp_path_factory.mktemp("bigquery-home")
    extension = Path(spatial.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    env = {**os.environ, "HOME": str(home), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
    install = f"import duckdb; duckdb.connect().execute(\"INSTALL '{extension}'\")"
    subprocess.run([sys.executable, "-c", install], env=env, check=True, timeout=60)
    port = free_port()
    command = [sys.executable, "-m", "obs_platform_tests.bigquery_emulator", "start", "--rest-port", str(port)]
    command += ["--grpc-port", str(free_port()), "--project", "obs-test", "--log-level", "warning"]
    log = home / "emulator.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/healthz", timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"bqemulator did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def split_frame(eyfs) -> pd.DataFrame:
    """The sample corpus through the data pipeline: redacted observations with their split."""
    frames = [parse_export(p.name, p.read_bytes()) for p in sample_data_files()]
    result = canonicalise(pd.concat(frames, ignore_index=True), eyfs)
    redacted = prepare.redact_observations(result.canonical, prepare.build_roster(result.canonical, result.quarantined))
    return prepare.split_observations(redacted, None).frame


def _write_files(folder: Path, files: dict[str, Any]) -> dict[str, Path]:
    for name, chunks in files.items():
        (folder / name).write_bytes(b"".join(chunks))
    return {name.removesuffix(".jsonl"): folder / name for name in ("train.jsonl", "valid.jsonl", "test.jsonl")}


@pytest.fixture(scope="session")
def split_files(tmp_path_factory, split_frame) -> dict[str, Path]:
    """The split JSONL the classifier trains on."""
    return _write_files(tmp_path_factory.mktemp("splits"), prepare.split_lines(split_frame).files())


@pytest.fixture(scope="session")
def chat_files(tmp_path_factory, split_frame, eyfs) -> dict[str, Path]:
    """The chat JSONL the causal LM trains on."""
    return _write_files(tmp_path_factory.mktemp("chat"), prepare.chat_lines(split_frame, eyfs).files())


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory, chat_files) -> Path:
    """A 2-layer Llama with a byte-level BPE vocabulary learnt from the chat lines and a ChatML template
    (SmolLM2's): the real architecture and chat format, seconds to train."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    lines = [
        m["content"] for line in chat_files["train"].read_text().splitlines() for m in json.loads(line)["messages"]
    ]
    bpe.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, split_files) -> Path:
    """A 2-layer BERT with a word-level vocabulary of the corpus: real architecture, seconds to train."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = set()
    for path in split_files.values():
        for line in path.read_text().splitlines():
            words.update(model_input(json.loads(line)["text"], None).lower().replace("'", " ").split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(w for w in words if w.isalpha())[:3000]]
    # transformers 5 builds a fast tokenizer from a `vocab` mapping (a `vocab_file` alone leaves the 5 specials).
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(vocab)})
    assert len(tokenizer) == len(vocab)
    tokenizer.save_pretrained(folder)
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


@pytest.fixture(scope="session")
def taxonomy_texts(tmp_path_factory, eyfs) -> Path:
    """The taxonomy's labelled texts as the splits asset writes them beside the splits."""
    folder = tmp_path_factory.mktemp("taxonomy-texts")
    _write_files(folder, prepare.taxonomy_text_file(eyfs))
    return folder / prepare.TAXONOMY_TEXTS_FILE


@pytest.fixture(scope="session")
def trained_hybrid(tmp_path_factory, split_files, taxonomy_texts, tiny_bert) -> Path:
    """The trainer's output for the hybrid recipe on the tiny BERT (its random encoder tuned for a few contrastive
    steps): seconds."""
    from trainer.config import TrainerConfig
    from trainer.hybrid import train_hybrid

    output = tmp_path_factory.mktemp("hybrid")
    train_hybrid(
        TrainerConfig(
            train=str(split_files["train"]),
            valid=str(split_files["valid"]),
            output=str(output),
            base_model=str(tiny_bert),
            taxonomy_texts=str(taxonomy_texts),
            encoder_tuning_steps=10,
            encoder_learning_rate=1e-3,
        )
    )
    return output


@pytest.fixture(scope="session")
def trained(tmp_path_factory, split_files, tiny_bert) -> Path:
    """The trainer's output for one epoch of the tiny BERT: a real LoRA classifier, in seconds."""
    from trainer.classifier import train_classifier
    from trainer.config import TrainerConfig

    output = tmp_path_factory.mktemp("model")
    train_classifier(
        TrainerConfig(
            recipe="lora",
            train=str(split_files["train"]),
            valid=str(split_files["valid"]),
            output=str(output),
            base_model=str(tiny_bert),
            epochs=1,
            batch_size=64,
            max_length=64,
        )
    )
    return output

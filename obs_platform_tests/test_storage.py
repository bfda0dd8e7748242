import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from obs_platform.data.values import frame_from_arrow
from obs_platform.storage import (
    LocalStorage,
    Storage,
    StorageError,
    base,
    content_addressed_folder,
    storage_from_uri,
    write_content_addressed,
)
from obs_platform.storage.arrow_files import arrow_file_bytes, read_arrow_file, write_arrow_file


@pytest.fixture(params=["local", "gcs"])
def any_storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    bucket = request.getfixturevalue("gcs_emulator")
    return storage_from_uri(f"gs://{bucket}/{tmp_path.name}/root")


def test_round_trip_and_listing(any_storage):
    any_storage.write_bytes("landing/a.jsonl", b"one")
    any_storage.write_bytes("landing/sub/b.csv", b"two")
    any_storage.write_bytes("landing-old/c.csv", b"three")
    assert any_storage.read_bytes("landing/a.jsonl") == b"one"
    assert any_storage.list_files("landing") == ["landing/a.jsonl", "landing/sub/b.csv"]
    assert any_storage.exists("landing/sub/b.csv") and not any_storage.exists("landing/nope")
    any_storage.write_bytes("landing/a.jsonl", b"replaced")
    assert any_storage.read_bytes("landing/a.jsonl") == b"replaced"
    any_storage.delete("landing/a.jsonl")
    assert not any_storage.exists("landing/a.jsonl")
    assert any_storage.uri("x/y").endswith("/root/x/y")


def test_a_byte_range_is_read_alone_and_a_range_past_the_end_is_refused(any_storage):
    any_storage.write_bytes("splits/train.jsonl", b"0123456789")
    assert any_storage.read_range("splits/train.jsonl", 3, 4) == b"3456"
    assert any_storage.read_range("splits/train.jsonl", 0, 10) == b"0123456789"
    assert any_storage.read_range("splits/train.jsonl", 10, 0) == b""
    with pytest.raises(StorageError, match="past its end"):
        any_storage.read_range("splits/train.jsonl", 8, 4)
    with pytest.raises(StorageError, match="cannot read"):
        any_storage.read_range("splits/missing.jsonl", 0, 1)


def test_a_local_range_is_a_view_of_the_file_that_outlives_its_replacement_and_deletion(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    storage.write_bytes("splits/train.jsonl", b"0123456789")
    view = storage.read_range("splits/train.jsonl", 2, 5)
    storage.write_bytes("splits/train.jsonl", b"abcdefghij")  # replaced, as every write here does
    storage.delete("splits/train.jsonl")
    assert isinstance(view, memoryview) and view.readonly and bytes(view) == b"23456"
    storage.write_bytes("landing/empty", b"")  # nothing to map
    assert storage.read_range("landing/empty", 0, 0) == b""
    with pytest.raises(StorageError, match="past its end"):
        storage.read_range("landing/empty", 0, 1)


def test_content_addressed_writes_nothing_when_unchanged(any_storage):
    files = {"train.jsonl": [b'{"a": 1}\n', b'{"a": 2}\n'], "valid.jsonl": [b'{"a": 3}\n']}
    first = write_content_addressed(any_storage, "training-data/x", files)
    assert first.written and first.sizes == {"train.jsonl": 18, "valid.jsonl": 9}
    assert any_storage.read_bytes(f"{first.folder}/train.jsonl") == b'{"a": 1}\n{"a": 2}\n'
    manifest = json.loads(any_storage.read_bytes(f"{first.folder}/_manifest.json"))
    assert manifest["digest"] == first.digest
    again = write_content_addressed(
        any_storage, "training-data/x", {"train.jsonl": [b'{"a": 1}\n{"a": 2}\n'], "valid.jsonl": [b'{"a": 3}\n']}
    )
    assert not again.written and again.folder == first.folder
    changed = write_content_addressed(any_storage, "training-data/x", {"train.jsonl": [b"{}\n"], "valid.jsonl": []})
    assert changed.written and changed.folder != first.folder


def test_interrupted_bundle_is_rewritten(storage):
    first = write_content_addressed(storage, "d", {"a.jsonl": [b"x\n"]})
    storage.delete(f"{first.folder}/_manifest.json")  # as if the run died before the manifest
    assert write_content_addressed(storage, "d", {"a.jsonl": [b"x\n"]}).written


def test_a_bundle_made_in_many_chunks_is_hashed_and_written_whole(storage):
    chunks = [bytes([k % 256]) * (k * 997) for k in range(40)]  # more chunks than the writer holds at once
    written = write_content_addressed(storage, "d", {"a.bin": iter(chunks)})
    assert storage.read_bytes(f"{written.folder}/a.bin") == b"".join(chunks)
    assert written.sizes == {"a.bin": sum(map(len, chunks))}
    assert written.folder == content_addressed_folder("d", {"a.bin": chunks})


def test_a_failure_while_making_or_writing_chunks_is_raised_and_writes_no_bundle(storage, monkeypatch):
    def failing():
        yield b"x\n" * 1000
        raise ValueError("a broken record")

    with pytest.raises(ValueError, match="a broken record"):
        write_content_addressed(storage, "d", {"a.jsonl": failing()})

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(base, "open", lambda *args, **kwargs: FullDisk(), raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_content_addressed(storage, "d", {"a.jsonl": (b"y\n" for _ in range(100))})
    assert storage.list_files("d") == []


def test_local_paths_cannot_escape_the_root(storage):
    with pytest.raises(StorageError):
        storage.write_bytes("../outside.txt", b"x")
    with pytest.raises(StorageError):
        storage.read_bytes("/etc/passwd")


def test_local_writes_leave_no_temporary_files(storage):
    storage.write_bytes("a/b.txt", b"x")
    assert [p.name for p in (storage.root / "a").iterdir()] == ["b.txt"]


def test_factory(tmp_path):
    assert isinstance(storage_from_uri(str(tmp_path)), LocalStorage)
    assert storage_from_uri("gs://bucket/some/prefix").root_uri == "gs://bucket/some/prefix"
    with pytest.raises(ValueError):
        storage_from_uri("gs:///nobucket")


def test_arrow_files_round_trip_mapped_locally_and_compressed_remotely(any_storage):
    frame = pd.DataFrame(
        {"note": ["built a tower"] * 5000, "tags": [[1, 2]] * 2500 + [[]] * 2500, "age": np.arange(5000.0)}
    )
    write_arrow_file(any_storage, "cache/part.arrow", frame)
    before = pa.total_allocated_bytes()
    table = read_arrow_file(any_storage, "cache/part.arrow")
    pd.testing.assert_frame_equal(table.to_pandas(), frame)
    stored = len(any_storage.read_bytes("cache/part.arrow"))
    if isinstance(any_storage, LocalStorage):  # uncompressed and mapped: the columns are the file's pages
        assert pa.total_allocated_bytes() == before and stored > table.nbytes
    else:  # every byte crosses the network: LZ4
        assert stored < table.nbytes / 2
    with pytest.raises(StorageError, match="cannot read"):
        read_arrow_file(any_storage, "cache/missing.arrow")


def test_a_frame_in_many_small_chunks_is_written_in_batches_of_64k_rows(storage):
    """A canonicalised export's text columns come in chunks of a few thousand rows; a file cut at each chunk's end
    would be read back as that many chunks."""
    notes = pa.chunked_array([[f"note {i}"] * 1000 for i in range(70)], type=pa.large_string())
    frame = pd.DataFrame({"notes": pd.arrays.ArrowStringArray(notes), "row": np.arange(70_000)})
    write_arrow_file(storage, "cache/part.arrow", frame)
    table = read_arrow_file(storage, "cache/part.arrow")
    assert [len(chunk) for chunk in table.column("notes").chunks] == [65_536, 4_464]
    pd.testing.assert_frame_equal(frame_from_arrow(table), frame)


def test_a_local_arrow_file_written_compressed_is_still_read(storage):
    table = pa.table({"text": ["a note"] * 100})
    storage.write_bytes("cache/old.arrow", arrow_file_bytes(table, "lz4"))
    assert read_arrow_file(storage, "cache/old.arrow").equals(table)

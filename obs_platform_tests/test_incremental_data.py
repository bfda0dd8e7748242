"""Data work that grows with new data only: exports canonicalised one by one and kept, redaction kept per export
and redone only where the roster's change reaches; the results equal doing everything again."""

import dataclasses
import datetime as dt
import hashlib
import os

import orjson
import pandas as pd
import pytest

from obs_platform.data import parts, prepare, redaction_cache
from obs_platform.data.canonical import canonicalise
from obs_platform.data.parts import canonical_from_parts, snapshot_landing
from obs_platform.data.raw import export_sha256, read_landing
from obs_platform.data.redaction import Roster
from obs_platform.data.redaction_cache import redact_with_cache
from obs_platform.data.splits import group_keys
from obs_platform.storage import storage_from_uri
from obs_platform.taxonomy import load_taxonomy

from .conftest import record

TAXONOMY = load_taxonomy()


def whole(storage):
    """Everything read and canonicalised at once: what the parts must add up to."""
    return canonicalise(read_landing(storage, "landing").table, TAXONOMY)


def built(storage, **kwargs):
    return canonical_from_parts(storage, snapshot_landing(storage, "landing"), TAXONOMY, **kwargs)


def assert_same(expected, result):
    pd.testing.assert_frame_equal(expected.canonical.reset_index(drop=True), result.canonical)
    # the quarantine in landing order; `raw_text` of a row is written from its own export's columns, not from the
    # columns of every export read together, so it is compared where the two are read the same way
    order = ["source_file", "source_line"]
    left = expected.quarantined.sort_values(order).reset_index(drop=True)
    right = result.quarantined.sort_values(order).reset_index(drop=True)
    left, right = (f.drop(columns="raw_text").astype(object) for f in (left, right))
    pd.testing.assert_frame_equal(left.where(left.notna(), None), right.where(right.notna(), None))


def jsonl(*records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def test_parts_add_up_to_the_whole_and_are_reused(landed_storage):
    expected = whole(landed_storage)
    first = built(landed_storage)
    assert_same(expected, first.result)
    assert len(first.processed) == 5 and first.reused == []
    assert (first.accounting()[["missing", "held_twice"]] == 0).all().all()

    second = built(landed_storage)
    assert_same(expected, second.result)
    assert len(second.reused) == 5 and second.processed == []

    # a changed export is read again, and only it
    path = "landing/setting_export_2025-26.jsonl"
    lines = landed_storage.read_bytes(path).splitlines()
    landed_storage.write_bytes(path, b"\n".join(lines[:-10]) + b"\n")
    third = built(landed_storage)
    assert third.processed == [path] and len(third.reused) == 4
    assert_same(whole(landed_storage), third.result)


def test_a_new_taxonomy_or_canonicalisation_code_reads_everything_again(landed_storage, monkeypatch):
    built(landed_storage)
    monkeypatch.setattr(parts, "CODE_VERSION", "changed-code")
    assert len(built(landed_storage).processed) == 5
    export = snapshot_landing(landed_storage, "landing").exports[0]
    edited = dataclasses.replace(TAXONOMY, sha256="0" * 64)
    assert parts.part_key(export, edited) != parts.part_key(export, TAXONOMY)


def test_copies_across_exports_follow_the_duplicate_rule(storage):
    same = record(observationId="obs-dup")
    storage.write_bytes("landing/a.jsonl", jsonl(same, record(observationId="obs-conflict")))
    storage.write_bytes(
        "landing/b.jsonl",
        jsonl(same, record(observationId="obs-conflict", observationNotes="Another note entirely.")),
    )
    result = built(storage)
    assert_same(whole(storage), result.result)
    quarantined = result.result.quarantined
    found = set(zip(quarantined["source_file"], quarantined["observation_id"], quarantined["reason_codes"].map(tuple)))
    assert result.result.canonical["observation_id"].tolist() == ["obs-dup"]
    assert result.duplicates_across_exports == 3
    assert found == {
        ("landing/b.jsonl", "obs-dup", ("duplicate_exact",)),
        ("landing/a.jsonl", "obs-conflict", ("duplicate_id_conflict",)),
        ("landing/b.jsonl", "obs-conflict", ("duplicate_id_conflict",)),
    }
    assert (result.accounting()[["missing", "held_twice"]] == 0).all().all()


def test_unreadable_files_and_linked_folders_are_quarantined_whole(storage, tmp_path):
    storage.write_bytes("landing/good.jsonl", jsonl(record()))
    storage.write_bytes("landing/binary.jsonl", b"\x00\x01\x02\xff" * 10)
    storage.write_bytes("landing/notes.txt", b"not an export")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jsonl").write_bytes(jsonl(record(observationId="obs-outside")))
    os.symlink(outside, storage.local_path("landing/linked"))
    os.symlink(outside / "x.jsonl", storage.local_path("landing/link.jsonl"))

    snapshot = snapshot_landing(storage, "landing")
    assert snapshot.ignored_files == ["landing/notes.txt"] and snapshot.linked_folders == ["landing/linked"]
    assert {e.path for e in snapshot.exports if e.unreadable} == {"landing/link.jsonl"}
    result = built(storage)
    assert_same(whole(storage), result.result)
    reasons = dict(zip(result.result.quarantined["source_file"], result.result.quarantined["reason_codes"]))
    assert reasons == {
        "landing/binary.jsonl": ["invalid_json"],  # as when read with everything else
        "landing/link.jsonl": ["symlink_refused"],
        "landing/linked": ["symlink_refused"],
    }
    assert "obs-outside" not in result.result.canonical["observation_id"].tolist()


def test_a_future_date_is_judged_again_on_a_later_day(storage):
    ahead = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    storage.write_bytes("landing/ahead.jsonl", jsonl(record(observationId="obs-ahead", observationDate=ahead)))
    storage.write_bytes("landing/fine.jsonl", jsonl(record(observationId="obs-fine")))
    first = built(storage)
    assert first.result.quarantined["reason_codes"].tolist() == [["implausible_date"]]
    assert built(storage).processed == []  # the same day: the verdict stands
    later = built(storage, today=dt.date.today() + dt.timedelta(days=3))
    assert later.processed == ["landing/ahead.jsonl"] and later.reused == ["landing/fine.jsonl"]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_worker_processes_give_the_same_parts(landed_storage, monkeypatch, request, tmp_path, where):
    """Locally a worker stores its part itself (an uncompressed Arrow file, read mapped); on GCS it hands the part
    back (LZ4) and this process stores it."""
    monkeypatch.setattr(parts, "MIN_BYTES_FOR_WORKERS", 0)
    storage = landed_storage
    if where == "gcs":
        storage = storage_from_uri(f"gs://{request.getfixturevalue('gcs_emulator')}/{tmp_path.name}")
        for path in landed_storage.list_files("landing"):
            storage.write_bytes(path, landed_storage.read_bytes(path))
    result = built(storage, workers=2)
    assert len(result.processed) == 5
    assert_same(whole(landed_storage), result.result)
    again = built(storage, workers=2)
    assert len(again.reused) == 5
    assert_same(whole(landed_storage), again.result)


@pytest.fixture
def canonical(landed_storage):
    return built(landed_storage).result


def redacted(storage, frame, roster):
    cached = redact_with_cache(storage, frame, roster)
    # the kept fingerprints are those of the texts
    assert (cached.group_keys == group_keys(pd.Series(cached.texts, dtype=object)).to_numpy()).all()
    return cached.texts.to_pylist(), cached.reuse


def test_cached_redaction_equals_redacting_everything_whatever_the_roster_did(landed_storage, canonical):
    frame = canonical.canonical
    full = prepare.build_roster(frame, canonical.quarantined)
    children, adults = sorted(set(frame["child_name"].dropna())), sorted(set(frame["educator_name"].dropna()))
    half = Roster.from_names(children[::2], adults[1::2])

    texts, reuse = redacted(landed_storage, frame, half)
    assert texts == prepare.redact_observations(frame, half)["text"].tolist()
    assert (reuse.new, reuse.reused, reuse.redone) == (len(frame), 0, 0)

    # the roster grows: only notes holding a token it now treats differently are redacted again
    texts, reuse = redacted(landed_storage, frame, full)
    assert texts == prepare.redact_observations(frame, full)["text"].tolist()
    assert reuse.new == 0 and 0 < reuse.redone < len(frame) and reuse.reused + reuse.redone == len(frame)

    texts, reuse = redacted(landed_storage, frame, full)
    assert (reuse.reused, reuse.redone) == (len(frame), 0)

    # and shrinks again (an export deleted): the names it no longer holds are given back where they are words
    texts, _ = redacted(landed_storage, frame, half)
    assert texts == prepare.redact_observations(frame, half)["text"].tolist()


def test_a_new_child_redacts_only_the_notes_that_name_them(landed_storage, canonical):
    frame = canonical.canonical
    roster = prepare.build_roster(frame, canonical.quarantined)
    redacted(landed_storage, frame, roster)
    newcomer = canonical.quarantined.iloc[:1].assign(child_name="Zephyrine Okonkwo-Barker")
    grown = prepare.build_roster(frame, pd.concat([canonical.quarantined, newcomer]))
    assert {"zephyrine", "okonkwo-barker", "barker"} <= roster.changed_tokens(grown)
    texts, reuse = redacted(landed_storage, frame, grown)
    assert texts == prepare.redact_observations(frame, grown)["text"].tolist()
    assert reuse.redone < 0.05 * len(frame)  # notes holding "okonkwo", "barker" and the like


def test_a_file_unchanged_on_disk_is_not_read_again_to_be_hashed(landed_storage, monkeypatch):
    first = snapshot_landing(landed_storage, "landing")

    def refuse(storage, path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(parts, "export_sha256", refuse)
    assert snapshot_landing(landed_storage, "landing") == first
    path = landed_storage.local_path("landing/setting_export_2025-26.jsonl")
    path.write_bytes(path.read_bytes() + b"\n")  # touched: read and hashed again
    with pytest.raises(AssertionError, match="read again"):
        snapshot_landing(landed_storage, "landing")


def test_a_local_export_is_hashed_as_its_bytes_are(landed_storage):
    path = "landing/setting_export_2025-26.jsonl"
    data = landed_storage.read_bytes(path)
    assert export_sha256(landed_storage, path) == (hashlib.sha256(data).hexdigest(), len(data))


def test_the_same_notes_find_their_redaction_however_the_frame_was_put_together(landed_storage, canonical):
    frame = canonical.canonical
    roster = prepare.build_roster(frame, canonical.quarantined)
    redact_with_cache(landed_storage, frame, roster)
    rechunked = pd.concat([frame.iloc[:100], frame.iloc[100:777], frame.iloc[777:]], ignore_index=True)
    assert redact_with_cache(landed_storage, rechunked, roster).reuse.new == 0
    as_objects = rechunked.astype({"notes": object, "child_name": object})  # as a frame of other exports has them
    assert redact_with_cache(landed_storage, as_objects, roster).reuse.new == 0
    fewer = frame.drop(index=500).reset_index(drop=True)  # one note less in its export: another digest
    assert redact_with_cache(landed_storage, fewer, roster).reuse.new > 0


def test_exports_whose_rows_are_interleaved_get_their_notes_back_in_place(landed_storage, canonical):
    frame = canonical.canonical
    roster = prepare.build_roster(frame, canonical.quarantined)
    shuffled = frame.sample(frac=1, random_state=3).reset_index(drop=True)  # each export's rows spread out
    expected = prepare.redact_observations(shuffled, roster)["text"].tolist()
    texts, reuse = redacted(landed_storage, shuffled, roster)
    assert texts == expected and reuse.new == len(frame)
    texts, reuse = redacted(landed_storage, shuffled, roster)  # and from the cache, redacting nothing
    assert texts == expected and reuse.reused == len(frame)


def test_the_caches_hold_what_the_landing_area_holds_now(landed_storage, monkeypatch):
    def run():
        result = built(landed_storage)
        roster = prepare.build_roster(result.result.canonical, result.result.quarantined)
        return result, redact_with_cache(landed_storage, result.result.canonical, roster).reuse

    def cached():
        return {p.split("/")[2] for p in landed_storage.list_files(parts.CACHE_PREFIX)}, len(
            landed_storage.list_files(redaction_cache.CACHE_PREFIX)
        )

    first, _ = run()
    parts_before, entries_before = cached()
    assert first.pruned == 0 and len(parts_before) == 5 and entries_before == 5

    landed_storage.delete("landing/setting_export_2025-26.jsonl")  # an export taken away
    second, reuse = run()  # its entries are only marked: a run that began before may still read them
    assert (second.pruned, reuse.pruned, reuse.new) == (0, 0, 0) and cached() == (parts_before, entries_before)
    third, reuse = run()  # within the hour: still kept
    assert (third.pruned, reuse.pruned) == (0, 0)

    monkeypatch.setattr(parts, "PRUNE_AFTER_SECONDS", 0.0)  # as if an hour had gone by
    fourth, reuse = run()
    assert (fourth.pruned, reuse.pruned, reuse.new) == (1, 1, 0)
    parts_after, entries_after = cached()
    assert len(parts_after) == 4 and parts_after < parts_before and entries_after == 4
    assert run()[0].reused == fourth.reused  # what is kept is still used

    # an export landed again after its entries were marked: used again, no longer marked
    monkeypatch.setattr(parts, "PRUNE_AFTER_SECONDS", 3600.0)
    landed_storage.write_bytes("landing/back.jsonl", jsonl(record(observationId="obs-back")))
    run()
    landed_storage.delete("landing/back.jsonl")
    run()  # marked
    landed_storage.write_bytes("landing/back.jsonl", jsonl(record(observationId="obs-back")))
    fifth, _ = run()
    assert fifth.pruned == 0 and "landing/back.jsonl" in fifth.reused
    assert orjson.loads(landed_storage.read_bytes(f"{parts.CACHE_PREFIX}.unused.json")) == {}

"""Any export, any encoding, loses nothing: generated landing areas of JSONL, JSON and CSV exports in every
encoding we meet (UTF-8 with and without a byte order mark, UTF-16 with and without, Windows-1252, Latin-1),
either line ending, cut short anywhere, holding valid records beside broken ones (wrong types, missing
fields, broken JSON, repeated keys, unclosed CSV quotes, huge ids, control and invisible characters),
and sometimes a binary file. Reading and canonicalising never fails, every raw row is canonical or
quarantined with a reason, and every valid record that reached the file whole is canonical."""

from __future__ import annotations

import codecs
import csv
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from obs_platform.data.canonical import canonicalise
from obs_platform.data.coercion import CLEANED_TEXT_FIELDS
from obs_platform.data.raw import read_landing
from obs_platform.data.schema import INVISIBLE_CHARACTERS
from obs_platform.storage import LocalStorage
from obs_platform.taxonomy import load_taxonomy

from .conftest import record

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252", "latin-1"]
# Non-ASCII letters whose Windows-1252 bytes can never form UTF-8 (continuation bytes alone, or bytes no
# UTF-8 sequence starts with), so a Windows-1252 file is never mistaken for UTF-8 with some damage.
ACCENTED = "öüøúý£’“”–°½"
INVISIBLE = "\x00\x01\x07\x1b\x7f\u200b\u200d\u202e\u2066\ufeff"
TEXT = st.text(
    alphabet=st.sampled_from(list("abcdefghij KLM,.'\"!?\t\n") + list(ACCENTED) + list(INVISIBLE) + ["😀"]),
    max_size=40,
)
# CSV header → the JSON field it holds
CSV_COLUMNS = ["observationId", "narrative", "domainId", "attributeId", "progressionTitle", "childAgeMonths"]
CSV_COLUMNS += ["childName"]
CSV_FIELDS = [column if column != "narrative" else "observationNotes" for column in CSV_COLUMNS]
KINDS = [
    "valid",
    "valid",
    "valid",
    "wrong_type",
    "missing_field",
    "invisible_notes",
    "huge_id",
    "broken",
    "not_an_object",
    "repeated_key",
    "blank",
]


@dataclass
class Item:
    kind: str
    observation_id: str
    notes: str
    child_name: str


@dataclass
class Export:
    name: str
    data: bytes
    intact_valid_ids: set[str] = field(default_factory=set)


@st.composite
def items(draw: st.DrawFn, prefix: str) -> list[Item]:
    count = draw(st.integers(min_value=0, max_value=8))
    drawn = []
    for index in range(count):
        kind = draw(st.sampled_from(KINDS))
        notes = draw(TEXT)
        if kind == "valid":
            notes = "Counted " + notes  # something visible is left once invisible characters go
        drawn.append(Item(kind, f"{prefix}-{index}", notes, draw(TEXT)))
    return drawn


def payload(item: Item) -> dict[str, Any]:
    fields = record(observationId=item.observation_id, observationNotes=item.notes, childName=item.child_name)
    if item.kind == "wrong_type":
        fields["childAgeMonths"] = "three and a half"
    elif item.kind == "missing_field":
        del fields["attributeId"]
    elif item.kind == "invisible_notes":
        fields["observationNotes"] = "\u200b\x01\u2066"
    elif item.kind == "huge_id":
        fields["attributeId"] = 99999999999999999999999
    return fields


def jsonl_line(item: Item) -> str:
    if item.kind == "blank":
        return ""
    if item.kind == "broken":
        return json.dumps(payload(item), ensure_ascii=False)[:-7]
    if item.kind == "not_an_object":
        return json.dumps([item.observation_id, item.notes], ensure_ascii=False)
    text = json.dumps(payload(item), ensure_ascii=False)
    if item.kind == "repeated_key":
        text = text[:-1] + ', "observationNotes": "a second note"}'
    return text


def csv_line(item: Item, ending: str) -> str:
    # JSON escapes a NUL; a CSV cell would hold it raw, and a file with NUL bytes that is neither UTF-8 nor
    # UTF-16 is read as binary, whole: keep NULs out of CSV cells so their records stay checkable one by one.
    item = Item(item.kind, item.observation_id, item.notes.replace("\x00", ""), item.child_name.replace("\x00", ""))
    if item.kind == "blank":
        return ending
    if item.kind in ("broken", "repeated_key"):  # a CSV row cannot repeat a key: both get a quote that never closes
        return f'{item.observation_id},"{item.notes.replace(chr(34), "")},5,12{ending}'
    fields = payload(item)
    row = [fields.get(column) for column in CSV_FIELDS]
    if item.kind == "not_an_object":
        row = row[:3]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def encoded(chunks: list[str], encoding: str) -> tuple[bytes, list[int]]:
    """The file's bytes and where each chunk ends; characters an encoding lacks become '?'."""
    stateless = {"utf-8-sig": "utf-8", "utf-16": "utf-16-le"}.get(encoding, encoding)
    mark = {"utf-8-sig": codecs.BOM_UTF8, "utf-16": codecs.BOM_UTF16_LE}.get(encoding, b"")
    data, ends = mark, []
    for chunk in chunks:
        data += chunk.encode(stateless, errors="replace")
        ends.append(len(data))
    return data, ends


@st.composite
def exports(draw: st.DrawFn, name: str) -> Export:
    suffix = draw(st.sampled_from([".jsonl", ".csv", ".json"]))
    drawn = draw(items(name))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    encoding = draw(st.sampled_from(ENCODINGS))
    if suffix == ".jsonl":
        chunks = [jsonl_line(item) + ending for item in drawn]
    elif suffix == ".csv":
        chunks = [",".join(CSV_COLUMNS) + ending] + [csv_line(item, ending) for item in drawn]
    else:
        body = ", ".join(jsonl_line(item) for item in drawn if item.kind != "blank")
        chunks = ["[" + body + "]" + ending]
    data, ends = encoded(chunks, encoding)
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(data))))
    data = data if cut is None else data[:cut]
    valid = [item for item in drawn if item.kind == "valid"]
    if suffix == ".json":  # one document: every record or none
        readable = len(data) == ends[-1] and not any(item.kind == "broken" for item in drawn)
        intact = {item.observation_id for item in valid} if readable else set()
    else:  # a record is intact when the cut comes after its line (and after the CSV header)
        record_ends = dict(zip((item.observation_id for item in drawn), ends[1:] if suffix == ".csv" else ends))
        header_whole = suffix != ".csv" or ends[0] <= len(data)
        intact = {
            item.observation_id for item in valid if header_whole and record_ends[item.observation_id] <= len(data)
        }
    return Export(f"landing/{name}{suffix}", data, intact)


EYFS = load_taxonomy()
LANDINGS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True).flatmap(
    lambda names: st.tuples(*(exports(n) for n in names), st.booleans())
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LANDINGS)
def test_no_export_loses_anything(landing):
    *files, with_binary = landing
    for export in files:
        note(f"{export.name}: {export.data!r}")
    with tempfile.TemporaryDirectory() as root:
        storage = LocalStorage(Path(root))
        for export in files:
            storage.write_bytes(export.name, export.data)
        if with_binary:
            storage.write_bytes("landing/scan.csv", b"%PDF-1.7\n\x00\x00\xff\xfe\x93binary\x00")
        raw = read_landing(storage, "landing").table
    result = canonicalise(raw, EYFS)
    canonical, quarantined = result.canonical, result.quarantined

    assert len(raw) == len(canonical) + len(quarantined)
    places = raw["source_file"].astype(str) + ":" + raw["source_line"].astype(str)
    kept = canonical["source_file"].astype(str) + ":" + canonical["source_line"].astype(str)
    held = quarantined["source_file"].astype(str) + ":" + quarantined["source_line"].astype(str)
    assert set(places) == set(kept) | set(held) and not set(kept) & set(held)
    for reasons in quarantined["reasons"]:
        assert reasons and all(r.partition(":")[0].strip() and r.partition(":")[2].strip() for r in reasons)
    if with_binary:
        assert "landing/scan.csv" in set(quarantined["source_file"])
    for column in CLEANED_TEXT_FIELDS:  # no control or invisible character reaches redaction
        assert not canonical[column].str.contains(INVISIBLE_CHARACTERS).any(), column
    expected = set().union(*(export.intact_valid_ids for export in files))
    missing = expected - set(canonical["observation_id"])
    assert not missing, quarantined[quarantined["observation_id"].isin(missing)]["reasons"].tolist()

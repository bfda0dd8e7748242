import json
import os

import pandas as pd

from obs_platform.data.landing import LandingSnapshot
from obs_platform.data.raw import decode_export, parse_export, read_landing
from obs_platform.storage import LocalStorage, StorageError

from .conftest import jsonl, record

CSV_HEADER = "observationId,narrative,domainId,attributeId,progressionTitle,childAgeMonths\n"


def test_csv_keeps_the_first_line_of_multiline_records():
    data = (
        CSV_HEADER
        + 'obs-1,"A long story\nthat spans\nthree lines",5,12,Reception,50\n'
        + "obs-2,short note,5,11,Reception,\n"
    ).encode()
    frame = parse_export("landing/export.csv", data)
    assert list(frame["source_line"]) == [2, 5]
    assert frame.loc[0, "narrative"] == "A long story\nthat spans\nthree lines"
    assert frame.loc[1, "childAgeMonths"] is None  # an empty cell is missing, not ""
    assert frame["parse_error"].isna().all()


def test_csv_bad_rows_become_error_rows():
    # Zoë is real UTF-8, so the file is UTF-8 and the lone \xe9 is damage, not another encoding
    data = CSV_HEADER.encode() + "obs-0,Zoë sang,4,10,Reception,50\n".encode()
    data += b"obs-1,caf\xe9 role play,4,10,Reception,50\n" + b"obs-2,too,many,fields,here,1,2\n"
    frame = parse_export("export.csv", data)
    assert frame.loc[0, "narrative"] == "Zoë sang" and (frame["source_encoding"] == "utf-8").all()
    assert frame.loc[1, "parse_error"].startswith("invalid_utf8: byte 0xe9")
    assert "caf\\xe9" in frame.loc[1, "raw_text"]
    assert frame.loc[2, "parse_error"] == "invalid_csv_row: 7 fields where the header has 6"


def test_jsonl_keeps_going_after_broken_lines():
    data = json.dumps(record(observationId="a", observationNotes="Zoë"), ensure_ascii=False).encode() + b"\n"
    data += b'{"observationId": "b", \n' + b"\n" + b"[1, 2]\n" + b'{"x": "\xff"}\n'
    data += jsonl(record(observationId="c"))
    frame = parse_export("landing/x.jsonl", data)
    assert list(frame["source_line"]) == [1, 2, 4, 5, 6]
    errors = frame["parse_error"].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[4])
    assert errors[1].startswith("invalid_json:")
    assert errors[2].startswith("invalid_record: expected a JSON object, got list")
    assert errors[3].startswith("invalid_utf8: byte 0xff")


def test_json_documents():
    array = b'[{"observationId": "a"}, {"observationId": "b"}, 3]'
    frame = parse_export("x.json", array)
    assert frame["observationId"].tolist()[:2] == ["a", "b"]
    assert frame.loc[2, "parse_error"].startswith("invalid_record")
    wrapped = parse_export("x.json", b'{"exportedAt": "2025-01-01", "observations": [{"observationId": "a"}]}')
    assert wrapped["observationId"].tolist() == ["a"]
    broken = parse_export("x.json", b'[{"observationId": "a"},\n {"observationId": ')
    assert len(broken) == 1 and broken.loc[0, "source_line"] == 2
    assert broken.loc[0, "parse_error"].startswith("invalid_json")


def test_read_landing_lists_unsupported_files(storage):
    storage.write_bytes("landing/a.jsonl", jsonl(record()))
    storage.write_bytes("landing/sub/b.csv", (CSV_HEADER + "obs-2,note,5,11,Reception,40\n").encode())
    storage.write_bytes("landing/notes.txt", b"hello")
    result = read_landing(storage, "landing")
    assert result.files == ["landing/a.jsonl", "landing/sub/b.csv"]
    assert result.ignored_files == ["landing/notes.txt"]
    assert sorted(result.table["source_file"]) == ["landing/a.jsonl", "landing/sub/b.csv"]
    assert result.encodings == {"landing/a.jsonl": "utf-8", "landing/sub/b.csv": "utf-8"}


def test_empty_landing(storage):
    result = read_landing(storage, "landing")
    assert result.table.empty and result.files == []


# ----- encodings ----------------------------------------------------------------------------------

NOTE = "Zoë poured water – “this one has the most”"


def test_windows_1252_jsonl_is_read_as_such():
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in [record(observationNotes=NOTE), record()])
    frame = parse_export("x.jsonl", data.encode("cp1252"))
    assert frame["parse_error"].isna().all()
    assert frame.loc[0, "observationNotes"] == NOTE
    assert (frame["source_encoding"] == "cp1252").all()


def test_utf16_csv_with_and_without_byte_order_mark():
    text = CSV_HEADER + f"obs-1,{NOTE},5,12,Reception,50\r\n"
    for encoding, recorded in [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")]:
        frame = parse_export("x.csv", text.encode(encoding))
        assert frame["parse_error"].isna().all(), encoding
        assert frame.loc[0, "narrative"] == NOTE and frame.loc[0, "source_encoding"] == recorded


def test_byte_order_marks_and_fallbacks():
    assert decode_export(codecs_bom("utf-8-sig") + b"abc").text == "abc"
    assert decode_export(NOTE.encode("utf-8-sig")).encoding == "utf-8-sig"
    assert decode_export(NOTE.encode("utf-32")).encoding == "utf-32"
    assert decode_export("café".encode("latin-1")).text == "café"  # cp1252 agrees with Latin-1 on letters
    declared = decode_export("smørbrød".encode("iso8859_15"), fallback_encoding="iso8859_15")
    assert (declared.text, declared.encoding) == ("smørbrød", "iso8859_15")


def codecs_bom(encoding: str) -> bytes:
    return "".encode(encoding)


def test_truncated_utf16_keeps_the_whole_records():
    data = jsonl(record(observationId="a"), record(observationId="b")).decode().encode("utf-16")
    frame = parse_export("x.jsonl", data[:-3])  # the last record loses its end, mid code unit
    assert frame.loc[0, "observationId"] == "a" and pd.isna(frame.loc[0, "parse_error"])
    assert frame.loc[1, "parse_error"].startswith("invalid_encoding: byte 0x")
    assert frame.loc[1, "source_line"] == 2


def test_a_binary_file_is_one_error_row():
    frame = parse_export("landing/photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    assert len(frame) == 1 and pd.isna(frame.loc[0, "source_line"])
    assert frame.loc[0, "parse_error"].startswith("binary_file:")


# ----- broken records -----------------------------------------------------------------------------


def test_an_unclosed_csv_quote_does_not_swallow_the_next_records():
    data = (
        CSV_HEADER
        + 'obs-1,"Broken note that never closes,5,12,Reception,50\n'
        + "obs-2,fine,5,12,Reception,50\n"
        + 'obs-3,"quoted, fine",5,11,Reception,40\n'
        + "obs-4,fine too,5,11,Reception,40\n"
    ).encode()
    frame = parse_export("x.csv", data)
    assert frame["source_line"].tolist() == [2, 3, 4, 5]
    assert frame.loc[0, "parse_error"] == (
        "invalid_csv_row: a quote on line 2 never closes, so the record runs over lines 2-4 (7 fields where the "
        "header has 6); the lines after this one are read as records of their own"
    )
    assert frame.loc[0, "raw_text"] == 'obs-1,"Broken note that never closes,5,12,Reception,50'
    assert frame.loc[1:, "parse_error"].isna().all()
    assert frame.loc[1:, "observationId"].tolist() == ["obs-2", "obs-3", "obs-4"]
    assert frame.loc[2, "narrative"] == "quoted, fine"


def test_a_quote_closing_at_end_of_file_recovers_too():
    data = (CSV_HEADER + 'obs-1,"open,5,12,Reception,50\nobs-2,fine,5,12,Reception,50\n').encode()
    frame = parse_export("x.csv", data)
    assert frame["source_line"].tolist() == [2, 3] and frame["parse_error"].notna().tolist() == [True, False]


def test_a_swallowing_record_of_the_right_width_is_not_taken_for_one():
    # the stray quote pairs with the next record's opening quote: seven fields, but not well-formed CSV
    data = (CSV_HEADER + 'obs-1,",5,12\nobs-2,"Counted ""three""",5,12,Reception,40\n').encode()
    frame = parse_export("x.csv", data)
    assert frame["source_line"].tolist() == [2, 3] and frame["parse_error"].notna().tolist() == [True, False]
    assert frame.loc[1, "narrative"] == 'Counted "three"'


def test_repeated_keys_are_error_rows():
    repeated = '{"observationId": "d", "observationNotes": "first", "observationNotes": "second"}'
    nested = '{"observationId": "e", "secondaryTags": [{"attributeId": 1, "attributeId": 2}]}'
    spaced = '{"observationId" : "f", "observationNotes" : "say \\"hi\\": ok"}'  # no repeat, odd spacing
    for name, data in [
        ("x.jsonl", "\n".join([repeated, nested, spaced])),
        ("x.json", f"[{repeated}, {nested}, {spaced}]"),
    ]:
        frame = parse_export(name, data.encode())
        assert frame.loc[0, "parse_error"].startswith("duplicate_key: 'observationNotes' is repeated"), name
        assert '"first"' in frame.loc[0, "raw_text"] and '"second"' in frame.loc[0, "raw_text"]
        assert frame.loc[1, "parse_error"].startswith("duplicate_key: 'secondaryTags[0].attributeId'"), name
        assert pd.isna(frame.loc[2, "parse_error"]) and frame.loc[2, "observationNotes"] == 'say "hi": ok'


def test_repeated_keys_are_found_whatever_the_spacing():
    # a key spaced from its colon is not counted by the quick test, one repeated key too many: they cancel out
    spaced = parse_export("x.jsonl", b'{"observationId" : "g", "x": {"c": 1, "c": 2}}\n')
    assert spaced.loc[0, "parse_error"].startswith("duplicate_key: 'x.c' is repeated")
    listed = parse_export("x.json", b'[{"observationId": "h", "observationId": "i"}, 5]')
    assert listed.loc[0, "parse_error"].startswith("duplicate_key: 'observationId' is repeated")


def test_repeated_csv_columns_must_agree():
    data = b"observationId,narrative,narrative\nobs-1,same,same\nobs-2,one,other\n"
    frame = parse_export("x.csv", data)
    assert frame.loc[0, "narrative"] == "same" and pd.isna(frame.loc[0, "parse_error"])
    assert frame.loc[1, "parse_error"].startswith("duplicate_key: the header repeats 'narrative'")


# ----- files that cannot be read ------------------------------------------------------------------


def test_unreadable_files_are_rows_and_the_others_are_read(storage, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(CSV_HEADER + "obs-9,secret,5,12,Reception,50\n")
    storage.write_bytes("landing/a.jsonl", jsonl(record()))
    storage.write_bytes("landing/b.csv", b"\x00\x01PK\x03\x04\xff\xfe\x00binary")
    os.symlink(outside / "secret.csv", storage.local_path("landing/link.csv"))
    os.symlink(outside, storage.local_path("landing/folder"))
    result = read_landing(storage, "landing")
    by_file = result.table.set_index("source_file")
    assert by_file.loc["landing/a.jsonl", "observationId"] == "obs-t-1"
    assert set(result.unreadable_files) == {"landing/b.csv", "landing/link.csv", "landing/folder"}
    assert result.unreadable_files["landing/b.csv"].startswith("binary_file:")
    assert result.unreadable_files["landing/link.csv"].startswith(
        "symlink_refused: landing/link.csv is a symbolic link"
    )
    assert result.unreadable_files["landing/folder"].startswith("symlink_refused:")
    assert "obs-9" not in result.table.to_string()  # nothing was read through the links
    assert len(result.table) == 4


class FlakyStorage(LocalStorage):
    """Local storage whose disk fails on one file."""

    def read_bytes(self, path: str) -> bytes:
        if path.endswith("broken.jsonl"):
            raise StorageError(f"cannot read {self.uri(path)}: [Errno 5] Input/output error")
        return super().read_bytes(path)


def test_a_file_that_cannot_be_opened(tmp_path):
    storage = FlakyStorage(tmp_path / "home")
    storage.write_bytes("landing/a.jsonl", jsonl(record()))
    storage.write_bytes("landing/broken.jsonl", jsonl(record(observationId="b")))
    os.symlink("nowhere.jsonl", storage.local_path("landing/dangling.jsonl"))
    result = read_landing(storage, "landing")
    assert result.unreadable_files["landing/dangling.jsonl"].startswith("symlink_refused:")
    assert result.unreadable_files["landing/broken.jsonl"].startswith("unreadable_file: cannot read")
    assert result.table["source_file"].tolist() == ["landing/a.jsonl", "landing/broken.jsonl", "landing/dangling.jsonl"]
    assert result.encodings == {"landing/a.jsonl": "utf-8"}


def test_the_landing_sensor_never_reads_through_a_link(tmp_path):
    storage = FlakyStorage(tmp_path / "home")
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(jsonl(record()))
    storage.write_bytes("landing/broken.jsonl", jsonl(record()))
    os.symlink(outside, storage.local_path("landing/link.jsonl"))
    first = LandingSnapshot.take(storage, "landing")
    assert set(first.files) == {"landing/broken.jsonl", "landing/link.jsonl"}
    outside.write_bytes(jsonl(record(observationId="changed")))
    assert LandingSnapshot.take(storage, "landing") == first


def test_json_documents_that_hold_no_records():
    for document in [b"5", b'"text"', b"null", b"{}"]:
        frame = parse_export("x.json", document)
        assert len(frame) == 1, document
    assert parse_export("x.json", b"5").loc[0, "parse_error"].startswith("invalid_record: expected a JSON object")

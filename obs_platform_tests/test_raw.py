import pandas as pd

from obs_platform.data.raw import parse_export, read_landing

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
    data = CSV_HEADER.encode() + b"obs-1,caf\xe9 role play,4,10,Reception,50\n" + b"obs-2,too,many,fields,here,1,2\n"
    frame = parse_export("export.csv", data)
    assert frame.loc[0, "parse_error"].startswith("invalid_utf8: byte 0xe9")
    assert "caf\\xe9" in frame.loc[0, "raw_text"]
    assert frame.loc[1, "parse_error"] == "invalid_csv_row: 7 fields where the header has 6"


def test_jsonl_keeps_going_after_broken_lines():
    data = jsonl(record(observationId="a")) + b'{"observationId": "b", \n' + b"\n" + b"[1, 2]\n" + b'{"x": "\xff"}\n'
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


def test_empty_landing(storage):
    result = read_landing(storage, "landing")
    assert result.table.empty and result.files == []

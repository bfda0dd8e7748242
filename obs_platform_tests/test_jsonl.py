import orjson
import pandas as pd
import pyarrow as pa

from obs_platform.data import jsonl
from obs_platform.data.formats import TrainingLineRenderer, user_text

TRICKY = ['plain', 'quote " and \\ backslash', "new\nline\ttab\rreturn", "café – ✓ 😀", "bell\x07 and \x1f", "", "\u2028"]


def test_json_strings_match_orjson():
    encoded = jsonl.json_strings(TRICKY).to_pylist()
    assert encoded == [orjson.dumps(t).decode() for t in TRICKY]
    assert jsonl.json_strings(pa.array([None], type=pa.string())).to_pylist() == [None]


def test_json_numbers():
    assert jsonl.json_numbers(pa.array([40.0, 3.5, None])).to_pylist() == ["40", "3.5", "null"]
    assert jsonl.json_numbers(pa.array([7, None])).to_pylist() == ["7", "null"]


def test_file_chunks_are_the_lines(monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 7)  # several chunks
    lines = jsonl.join_lines(["[", jsonl.json_strings(TRICKY), "]"])
    body = b"".join(jsonl.file_chunks(lines.slice(1)))  # a slice starts inside the data buffer
    assert [orjson.loads(line) for line in body.split(b"\n")[:-1]] == [[t] for t in TRICKY[1:]]


def test_vectorised_user_text_matches_the_scalar_one(eyfs):
    frame = pd.DataFrame(
        {
            "text": ["a note", 'with "quotes"\nand lines', "no age"],
            "child_age_months": pd.array([40.0, 17.6, None], dtype="Float64"),
            "domain_id": [5, 1, 2],
            "attribute_id": [12, 2, 3],
            "progression_title": ["Reception", "Birth to three", "Reception"],
            "secondary_tags": [[], [{"domain_id": 5, "attribute_id": 11, "level": "Birth to three"}], []],
            "photo_uris": [[], [], ["gs://b/p.png"]],
        }
    )
    lines = [orjson.loads(line) for line in TrainingLineRenderer(eyfs).chat_lines(frame).to_pylist()]
    expected = [user_text(t, None if pd.isna(a) else float(a)) for t, a in zip(frame["text"], frame["child_age_months"])]
    assert [line["messages"][1]["content"] for line in lines] == expected
    assert expected[1].endswith("Child's age: 18 months")
    gemini = [orjson.loads(line) for line in TrainingLineRenderer(eyfs).gemini_lines(frame).to_pylist()]
    assert gemini[2]["contents"][0]["parts"][1] == {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/p.png"}}
    assert orjson.loads(gemini[1]["contents"][1]["parts"][0]["text"])["secondary"][0]["attribute"] == "Number"

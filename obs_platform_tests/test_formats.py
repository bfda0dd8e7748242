import copy
import datetime as dt
import random

import numpy as np
import orjson
import pandas as pd
import pytest

from obs_platform.data.formats import (
    AnswerError,
    TrainingExample,
    TrainingLineRenderer,
    chat_line,
    gemini_line,
    gemini_line_problems,
    parse_answer,
    system_instruction,
)
from obs_platform.data.json_lines import render_lines
from obs_platform.taxonomy import Label


@pytest.fixture
def example() -> TrainingExample:
    return TrainingExample(
        observation_id="obs-1",
        text="[CHILD] poured water into three cups: 'this one has the most'.",
        child_age_months=40.0,
        observation_date=dt.date(2025, 6, 12),
        label=Label(5, 12, "Three and four-year-olds"),
        secondary=(Label(1, 2, "Three and four-year-olds"),),
        photo_uris=("gs://photos/a.jpg", "/local/b.png", "gs://photos/c.txt"),
    )


def test_gemini_line_shape(eyfs, example):
    line = gemini_line(example, eyfs, system_instruction(eyfs))
    assert len(system_instruction(eyfs)) < 400  # repeated in every line and billed per example
    assert gemini_line_problems(line, eyfs) == []
    user, model = line["contents"]
    assert user["role"] == "user" and model["role"] == "model"
    assert user["parts"][0]["text"].endswith("Child's age: 40 months\nObserved on: 2025-06-12")
    assert user["parts"][1] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://photos/a.jpg"}}
    assert len(user["parts"]) == 2  # local paths and non-images never reach Gemini
    answer = orjson.loads(model["parts"][0]["text"])
    assert answer == {
        "domain": "mathematics",
        "attribute": "Numerical Patterns",
        "level": "Three and four-year-olds",
        "secondary": [
            {"domain": "communication_and_language", "attribute": "Speaking", "level": "Three and four-year-olds"}
        ],
    }
    assert "Birth to three; Three and four-year-olds" in line["systemInstruction"]["parts"][0]["text"]


def test_gemini_line_problems(eyfs, example):
    good = gemini_line(example, eyfs, "tag it")
    wrong_role = copy.deepcopy(good)
    wrong_role["contents"][1]["role"] = "assistant"
    assert any("roles" in p for p in gemini_line_problems(wrong_role, eyfs))
    bad_file = copy.deepcopy(good)
    bad_file["contents"][0]["parts"][1]["fileData"]["fileUri"] = "https://x/a.jpg"
    assert any("gs:// fileUri" in p for p in gemini_line_problems(bad_file, eyfs))
    bad_label = copy.deepcopy(good)
    bad_label["contents"][1]["parts"][0]["text"] = (
        '{"domain": "mathematics", "attribute": "Speaking", "level": "Reception"}'
    )
    assert any("not in domain" in p for p in gemini_line_problems(bad_label, eyfs))
    assert gemini_line_problems([], eyfs) == ["line is not a JSON object"]


def test_parse_answer_is_forgiving_but_strict_about_labels(eyfs):
    label, secondary = parse_answer(
        'Sure! {"domain": "Mathematics", "attribute": "numerical patterns", "level": "reception"}', eyfs
    )
    assert label == Label(5, 12, "Reception") and secondary == []
    for bad in [
        "no json here",
        '{"domain": "maths"}',
        '{"domain": "mathematics", "attribute": "Number", "level": "Expert"}',
        "[1]",
    ]:
        with pytest.raises(AnswerError):
            parse_answer(bad, eyfs)


def test_chat_line(eyfs, example):
    messages = chat_line(example, eyfs)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert parse_answer(messages[2]["content"], eyfs)[0] == example.label


def test_training_lines_column_by_column_are_the_line_renderers_bytes(eyfs):
    """The data assets render Gemini and chat files column by column (`gemini_pieces`, `chat_pieces`); every line
    must be the bytes the row-by-row renderer writes, whatever the note, age, date, photos and tags."""
    rng = random.Random(5)
    attributes = [(a.domain_id, a.id) for a in eyfs.attributes]
    levels = [level.title for level in eyfs.levels]
    notes = ['say "hi"', "back\\slash", "tab\there\nline\r\x00\x1f", "Zoë 😀 \u2028", "", "[CHILD] ran"]
    rows = []
    for k in range(120):
        domain_id, attribute_id = rng.choice(attributes)
        other_domain, other_attribute = rng.choice(attributes)
        rows.append(
            {
                "text": rng.choice(notes) + str(k),
                "child_age_months": rng.choice([None, float("nan"), 36.0, 40.5, 41.5, 59.6]),
                "observation_date": rng.choice([None, "2025-09-01", "2026-02-17"]),
                "domain_id": domain_id,
                "attribute_id": attribute_id,
                "progression_title": rng.choice(levels),
                "secondary_tags": rng.choice(
                    [[], None, [{"domain_id": other_domain, "attribute_id": other_attribute, "level": levels[0]}]]
                ),
                "photo_uris": rng.choice([[], ["gs://p/a.jpg"], ["gs://p/a.jpg", "http://x/b.png", "gs://p/c.txt"]]),
            }
        )
    frame = pd.DataFrame(rows).assign(observation_date=lambda f: pd.to_datetime(f["observation_date"]))
    renderer = TrainingLineRenderer(eyfs)
    order = np.random.default_rng(5).permutation(len(frame))
    gemini = b"".join(render_lines(renderer.gemini_pieces(frame), order, chunk_rows=32))
    chat = b"".join(render_lines(renderer.chat_pieces(frame), order, chunk_rows=32))

    def row_args(row):
        age = None if pd.isna(row.child_age_months) else row.child_age_months
        day = None if pd.isna(row.observation_date) else row.observation_date.date()
        tags = tuple((t["domain_id"], t["attribute_id"], t["level"]) for t in row.secondary_tags or ())
        return row.text, age, day, (row.domain_id, row.attribute_id, row.progression_title), tags, row.photo_uris

    expected = [row_args(frame.iloc[k]) for k in order]
    assert gemini == b"".join(renderer.gemini(*args) for args in expected)
    assert chat == b"".join(renderer.chat(*args[:5]) for args in expected)
    empty = frame.iloc[:0]
    nothing = np.array([], dtype=np.int64)
    assert b"".join(render_lines(renderer.gemini_pieces(empty), nothing, 32)) == b""
    assert b"".join(render_lines(renderer.chat_pieces(empty), nothing, 32)) == b""

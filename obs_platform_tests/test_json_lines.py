"""JSON lines rendered column by column are the bytes a per-row `orjson.dumps` writes, whatever the values."""

import random

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from obs_platform.data.json_lines import JsonLines, Kind, render_lines, take_texts

# Everything orjson escapes or passes through raw: quotes, backslashes, every control character, DEL, the line and
# paragraph separators, letters outside ASCII, an emoji (outside the BMP), and the empty string.
TRICKY = ['say "hi"', "back\\slash", "".join(map(chr, range(32))), "\x7f", "\u2028\u2029", "Zoë Łucja", "😀", ""]
KINDS = {
    "id": Kind.TEXT,
    "note": Kind.TEXT,
    "age": Kind.VALUE,
    "level": Kind.VALUE,
    "tags": Kind.LIST,
    "day": Kind.DATE,
}


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    alphabet = [*"abc \"\\'\n\t", "\x00", "\x1f", "é", "😀", "\u2028"]
    notes = [
        rng.choice(TRICKY) if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randrange(40)))
        for _ in range(rows)
    ]
    notes[rng.randrange(rows)] = None
    return pd.DataFrame(
        {
            "id": pd.array([f"obs-{i}" for i in range(rows)], dtype="string[pyarrow]"),
            "note": notes,
            "age": pd.array([rng.choice([None, 30.0, 41.5, 60.0]) for _ in range(rows)], dtype="Float64"),
            "level": [rng.choice(["Reception", 'the "ELG"', None]) for _ in range(rows)],
            "tags": [
                rng.choice([[], [], None, [{"level": "Reception", "id": 3}], ["gs://b/x y.jpg"]]) for _ in range(rows)
            ],
            "day": pd.to_datetime([rng.choice([None, "2025-09-01", "2026-02-17"]) for _ in range(rows)]),
        }
    )


def expected_lines(data: pd.DataFrame, rows: np.ndarray) -> bytes:
    def plain(name: str, value):
        if name == "day":
            return None if pd.isna(value) else value.date().isoformat()
        if not isinstance(value, list) and pd.isna(value):
            return None
        return value.item() if isinstance(value, np.generic) else value

    return b"".join(
        orjson.dumps({name: plain(name, data[name].iloc[row]) for name in KINDS}, option=orjson.OPT_APPEND_NEWLINE)
        for row in rows
    )


@pytest.mark.parametrize("seed", range(3))
def test_the_lines_are_orjsons_in_any_row_order_and_chunking(seed):
    data = frame(300, seed)
    rows = np.random.default_rng(seed).permutation(len(data))[:250]  # a subset, shuffled
    rendered = b"".join(render_lines(JsonLines(data, KINDS).pieces, rows, chunk_rows=64))
    assert rendered == expected_lines(data, rows)
    for line in rendered.splitlines():  # and each line is one JSON object
        assert isinstance(orjson.loads(line), dict)


def test_a_text_column_in_many_arrow_chunks_renders_the_same():
    data = frame(200, 7)
    chunked = pa.chunked_array(
        [pa.array(data["note"].iloc[i : i + 30].tolist(), type=pa.large_string()) for i in range(0, 200, 30)]
    )
    split_up = data.assign(note=pd.arrays.ArrowStringArray(chunked))
    rows = np.arange(199, -1, -1)
    assert b"".join(render_lines(JsonLines(split_up, KINDS).pieces, rows, 50)) == expected_lines(data, rows)


def test_taking_texts_chunk_by_chunk_equals_one_take():
    values = pa.chunked_array(
        [pa.array(["a", "b", None], type=pa.large_string()), pa.array(["c", "d"], type=pa.large_string())]
    )
    rows = np.array([4, 0, 2, 3, 1, 4], dtype=np.uint64)
    assert take_texts(values, rows).to_pylist() == ["d", "a", None, "c", "b", "d"]
    assert take_texts(values, np.array([], dtype=np.int64)).to_pylist() == []


def test_no_rows_no_bytes():
    assert b"".join(render_lines(JsonLines(frame(5, 1), KINDS).pieces, np.array([], dtype=np.int64), 10)) == b""

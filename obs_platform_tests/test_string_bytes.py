import numpy as np
import pyarrow as pa
import pytest

from obs_platform.data import string_bytes
from obs_platform.data.string_bytes import rows_holding, rows_matching

NOTES = ["", "plain", "mail me@here.org", "Zoë", "", "“quoted”", "tab\there", "@", "a\x01b", "last"]


def reference(notes: list[str | None], flagged) -> np.ndarray:
    return np.array([n is not None and bool(flagged(np.frombuffer(n.encode(), dtype=np.uint8)).any()) for n in notes])


@pytest.mark.parametrize("scan_rows", [1, 3, 65_536])
@pytest.mark.parametrize(
    "flagged",
    [lambda b: b == ord("@"), lambda b: b >= 0x80, lambda b: (b < 0x20) | (b == 0x7F)],
    ids=["at", "utf8", "ctl"],
)
def test_rows_holding_matches_a_note_by_note_look(monkeypatch, scan_rows, flagged):
    monkeypatch.setattr(string_bytes, "_SCAN_ROWS", scan_rows)
    whole = pa.array(NOTES, type=pa.large_string())
    chunked = pa.chunked_array([whole.slice(0, 4), pa.array([], type=pa.large_string()), whole.slice(4)])
    assert (rows_holding(whole, flagged) == reference(NOTES, flagged)).all()
    assert (rows_holding(chunked, flagged) == reference(NOTES, flagged)).all()
    assert (rows_holding(whole.slice(3, 5), flagged) == reference(NOTES[3:8], flagged)).all()  # an offset slice


def test_rows_holding_with_nulls_and_nothing():
    with_nulls = pa.array(["@", None, "x@", None], type=pa.large_string())
    assert rows_holding(with_nulls, lambda b: b == ord("@")).tolist() == [True, False, True, False]
    assert rows_holding(pa.array([], type=pa.large_string()), lambda b: b == ord("@")).tolist() == []
    assert rows_holding(pa.array(["", ""], type=pa.large_string()), lambda b: b == ord("@")).tolist() == [False, False]


def test_rows_matching_is_the_pattern_over_the_flagged_rows_only():
    notes = pa.chunked_array([pa.array(["a@b.org", "no mail", None, "@ alone", "x@y.io"], type=pa.large_string())])
    at = lambda b: b == ord("@")  # noqa: E731
    assert rows_matching(notes, at, r"\w@\w").tolist() == [True, False, False, False, True]
    # A pattern matching bytes the scan does not flag is not found: the flag must cover every match.
    assert rows_matching(notes, at, "no").tolist() == [False] * 5

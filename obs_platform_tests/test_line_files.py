"""Line files written again from the last bundle's lines: byte for byte what rendering every line writes, with only
the pieces that changed rendered."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from obs_platform.data import line_files, prepare
from obs_platform.data.line_files import id_hashes, piece_bounds, write_line_files
from obs_platform.storage import LocalStorage
from obs_platform.storage.base import MANIFEST

PIECE_ROWS = 32  # about fifty pieces over the corpus


def small_pieces(lines: line_files.LineFiles) -> line_files.LineFiles:
    return replace(lines, piece_rows=PIECE_ROWS)


def rendered(lines: line_files.LineFiles) -> dict[str, bytes]:
    """Every line rendered, nothing reused."""
    return {name: b"".join(chunks) for name, chunks in lines.files().items()}


def bundle(storage: LocalStorage, write: line_files.LineFilesWrite) -> dict[str, bytes]:
    return {name: storage.read_bytes(f"{write.written.folder}/{name}") for name in write.written.files}


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "root")


def test_an_id_hashes_alike_wherever_it_is_and_however_it_is_stored():
    ids = ["", "a", "ab", "abcdefgh", "abcdefghi", "x" * 40, "a", "ab", "obs-90001", "obs-90002"]
    hashes = id_hashes(pa.array(ids))
    assert hashes[1] == hashes[6] and hashes[2] == hashes[7]  # after "" and after "x" * 40: no neighbour's bytes
    assert len(set(hashes[[0, 1, 2, 3, 4, 5, 8, 9]].tolist())) == 8
    chunked = pa.chunked_array([pa.array(ids[:3], pa.string()), pa.array(ids[3:], pa.string())])
    assert np.array_equal(id_hashes(chunked), hashes)
    assert np.array_equal(id_hashes(pd.Series(ids, dtype="string[pyarrow]")), hashes)
    assert np.array_equal(id_hashes(pa.array(ids).slice(4)), hashes[4:])


def test_pieces_end_where_the_ids_say_so_rows_added_move_only_their_own_piece():
    ids = pd.Series([f"obs-{i}" for i in range(5_000)], dtype="string[pyarrow]")
    bounds = piece_bounds(ids, 64)
    assert bounds[0] == 0 and bounds[-1] == 5_000 and np.all(np.diff(bounds) > 0)
    assert np.diff(bounds).max() <= 4 * 64 and 40 < len(bounds) < 130
    grown = piece_bounds(pd.concat([ids, pd.Series(["new-1", "new-2"], dtype="string[pyarrow]")]), 64)
    assert np.array_equal(grown[grown < 5_000], bounds[:-1])  # every piece but the last is the same
    without_one = piece_bounds(ids.drop(index=2_500).reset_index(drop=True), 64)
    assert set(bounds[bounds < 2_500].tolist()) <= set(without_one.tolist())
    assert set((bounds[bounds > 2_500 + 4 * 64] - 1).tolist()) <= set(without_one.tolist())
    with pytest.raises(ValueError, match="power of two"):
        piece_bounds(ids, 48)
    assert piece_bounds(ids.iloc[:0], 64).tolist() == [0]


def test_a_bundle_written_again_reads_every_line_back_and_is_the_same_bundle(storage, split_frame):
    lines = small_pieces(prepare.split_lines(split_frame))
    first = write_line_files(storage, "splits", lines)
    assert (first.rows_reused, first.rows_rendered) == (0, len(split_frame))
    assert bundle(storage, first) == rendered(lines)
    again = write_line_files(storage, "splits", small_pieces(prepare.split_lines(split_frame.copy())))
    assert (again.rows_reused, again.rows_rendered) == (len(split_frame), 0)
    assert again.written.folder == first.written.folder and not again.written.written


def test_a_drop_renders_its_own_rows_and_the_piece_it_joins(storage, split_frame):
    old, new = split_frame.iloc[:-40], split_frame
    write_line_files(storage, "splits", small_pieces(prepare.split_lines(old)))
    lines = small_pieces(prepare.split_lines(new))
    drop = write_line_files(storage, "splits", lines)
    last_old_piece = len(old) - lines.bounds[lines.bounds <= len(old) - 1][-1]
    assert drop.rows_rendered <= 40 + last_old_piece and drop.rows_reused >= len(old) - last_old_piece
    assert bundle(storage, drop) == rendered(lines)


def _one_row(frame: pd.DataFrame, column: str, value) -> pd.DataFrame:
    values = frame[column].tolist()
    values[ROW] = value
    return frame.assign(**{column: pd.Series(values, index=frame.index, dtype=frame[column].dtype)})


ROW = 700
CHANGES = {
    "text": lambda f: _one_row(f, "text", 'a "changed" note\\ with\ttabs'),
    "age": lambda f: _one_row(f, "child_age_months", 61.0 if f["child_age_months"][ROW] != 61.0 else 62.0),
    "list": lambda f: _one_row(f, "secondary_tags", [{"domain_id": 1, "attribute_id": 2, "level": "x"}]),
    "split": lambda f: _one_row(f, "split", "test" if f["split"][ROW] != "test" else "train"),
    "date": lambda f: _one_row(f, "observation_date", pd.NaT),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_row_is_rendered_again_with_its_piece_alone(storage, split_frame, change):
    write_line_files(storage, "splits", small_pieces(prepare.split_lines(split_frame)))
    lines = small_pieces(prepare.split_lines(CHANGES[change](split_frame.copy())))
    again = write_line_files(storage, "splits", lines)
    piece = np.searchsorted(lines.bounds, ROW, side="right") - 1
    assert 0 < again.rows_rendered <= lines.bounds[piece + 1] - lines.bounds[piece]
    assert bundle(storage, again) == rendered(lines)


def test_every_format_reuses_its_own_lines_and_a_lost_bundle_is_rendered_again(storage, split_frame, eyfs):
    for base, make in (("gemini", prepare.gemini_lines), ("chat", prepare.chat_lines)):
        lines = small_pieces(make(split_frame, eyfs))
        first = write_line_files(storage, base, lines)
        assert bundle(storage, first) == rendered(lines)
        assert write_line_files(storage, base, lines).rows_rendered == 0
        storage.delete(f"{first.written.folder}/{MANIFEST}")  # the bundle is incomplete: never read from
        lost = write_line_files(storage, base, lines)
        assert lost.rows_reused == 0 and bundle(storage, lost) == rendered(lines)


def test_lines_rendered_by_other_code_are_not_reused(storage, split_frame, monkeypatch):
    lines = small_pieces(prepare.split_lines(split_frame))
    write_line_files(storage, "splits", lines)
    monkeypatch.setattr(line_files, "RENDER_CODE", "another renderer")
    assert write_line_files(storage, "splits", small_pieces(prepare.split_lines(split_frame))).rows_reused == 0


@pytest.mark.parametrize("index", [b"{not json", b'{"folder": "splits/x"}', b'{"folder": 1, "names": 2, "places": 3}'])
def test_an_index_that_cannot_be_read_is_no_index(storage, split_frame, index):
    lines = small_pieces(prepare.split_lines(split_frame))
    first = write_line_files(storage, "splits", lines)
    storage.write_bytes(f"{line_files.INDEX_PREFIX}/splits.json", index)
    again = write_line_files(storage, "splits", lines)
    assert again.rows_reused == 0 and again.written.folder == first.written.folder
    assert write_line_files(storage, "splits", lines).rows_rendered == 0  # indexed afresh

"""A check judges again only what it has not passed before, reading the same, under the same code and roster."""

import numpy as np

from obs_platform.data.checked_lines import line_hashes, read_passed, write_passed
from obs_platform.data.redaction import Roster
from obs_platform.data.redaction_cache import _store_roster

LINES = [b'{"text": "[CHILD] built a tower"}', b'{"text": "[CHILD] sang with Hope"}', b'{"text": "[CHILD] ran"}']


def judged(storage, lines, depends_on="v1", roster=None) -> list[int]:
    before = read_passed(storage, "check")
    return np.flatnonzero(before.to_judge(storage, lines, line_hashes(lines), depends_on, roster)).tolist()


def test_only_new_lines_are_judged_again(storage):
    assert judged(storage, LINES) == [0, 1, 2]  # nothing passed yet
    write_passed(storage, "check", line_hashes(LINES[:2]), "v1", None)  # the third failed: not kept
    assert judged(storage, LINES) == [2]
    assert judged(storage, [*LINES, b'{"text": "new"}']) == [2, 3]
    assert judged(storage, [LINES[0] + b" "]) == [0]  # another byte: another line
    assert judged(storage, LINES, depends_on="v2") == [0, 1, 2]  # other code or word lists: everything


def test_a_changed_roster_judges_again_the_lines_that_mention_what_changed(storage):
    first = Roster.from_names(["Amara Okafor"], ["Jo Smith"])
    _store_roster(storage, first, first.digest)
    write_passed(storage, "check", line_hashes(LINES), "v1", first)
    assert judged(storage, LINES, roster=first) == []
    grown = Roster.from_names(["Amara Okafor", "Hope Adeyemi"], ["Jo Smith"])  # a child called Hope
    assert judged(storage, LINES, roster=grown) == [1]
    unknown = Roster.from_names(["Zed Quill"], [])
    write_passed(storage, "check", line_hashes(LINES), "v1", unknown)  # a roster never stored: all judged again
    assert judged(storage, LINES, roster=grown) == [0, 1, 2]


def test_a_torn_cache_file_means_judging_everything(storage):
    storage.write_bytes("cache/checked-lines/check", b"{not json\n\x00\x01")
    assert judged(storage, LINES) == [0, 1, 2]

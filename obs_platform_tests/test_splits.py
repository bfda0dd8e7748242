import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from obs_platform.data.splits import _positions_in, assign_splits, group_keys


def word(i: int) -> str:
    letters = ""
    while True:
        i, rest = divmod(i, 26)
        letters += chr(97 + rest)
        if i == 0:
            return letters


def observations(n: int, start: int = 0, labels: int = 5) -> pd.DataFrame:
    ids = [f"obs-{i}" for i in range(start, start + n)]
    notes = pd.Series([f"note {word(i)} about blocks and sand" for i in range(start, start + n)])
    return pd.DataFrame(
        {
            "observation_id": ids,
            "group_key": group_keys(notes),
            "attribute_id": [i % labels for i in range(start, start + n)],
        }
    )


def test_group_keys_ignore_case_punctuation_names_and_numbers():
    keys = group_keys(
        pd.Series(
            [
                "[CHILD] built a tower of 5 bricks!",
                "[child_2]  BUILT a tower, of 7 bricks",
                "[CHILD] built a bridge",
            ]
        )
    )
    assert keys[0] == keys[1] != keys[2]


def test_group_keys_never_change_between_versions():
    """The ledger keeps the splits of groups by these keys: a new version of the code computing them must give the
    same numbers, or a near-duplicate of an old note could land in another split."""
    notes = pd.Series(["[CHILD] built a tower of 5 bricks!", "Zoë ŁUCJA poured water", "a", "", "ab"])
    assert group_keys(notes).tolist() == [-2825806515412577192, 7084770715434317635, 0, 0, -6003019395746496325]


def test_roughly_80_10_10_and_deterministic():
    frame = observations(3000)
    first = assign_splits(frame).assignments
    again = assign_splits(frame.sample(frac=1, random_state=3)).assignments.set_index("observation_id")
    shares = first["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["valid"] - 0.1) < 0.03
    first_split = first.set_index("observation_id")["split"]
    assert (first_split == again["split"].reindex(first_split.index)).all()


def test_assignments_never_move_when_data_is_added():
    old = observations(400)
    first = assign_splits(old)
    grown = pd.concat([observations(600, start=400), old])  # new rows, other order
    second = assign_splits(grown, first.ledger)
    before = first.assignments.set_index("observation_id")["split"]
    after = second.assignments.set_index("observation_id")["split"]
    assert (after[before.index] == before).all()
    assert len(second.ledger) == 1000


def test_near_duplicates_share_a_split_even_across_data_drops():
    base = observations(200)
    copies = base.head(50).assign(observation_id=lambda f: f["observation_id"] + "-copy")
    first = assign_splits(pd.concat([base, copies]))
    by_group = first.assignments.groupby("group_key")["split"].nunique()
    assert (by_group == 1).all()
    later = base.head(50).assign(observation_id=lambda f: f["observation_id"] + "-later")
    second = assign_splits(pd.concat([base, copies, later]), first.ledger).assignments.set_index("observation_id")
    for original in base.head(50)["observation_id"]:
        assert second.loc[original + "-later", "split"] == second.loc[original, "split"]


def test_every_frequent_attribute_reaches_every_split():
    frame = observations(120, labels=12)  # 10 per attribute: chance alone would leave gaps
    result = assign_splits(frame)
    table = pd.crosstab(result.assignments.merge(frame)["attribute_id"], result.assignments["split"].values)
    assert result.uncovered == {}
    assert (table[["train", "valid", "test"]] > 0).all().all()
    assert result.moved_for_coverage > 0


def test_old_rows_are_not_moved_for_coverage_and_gaps_are_reported():
    frame = observations(30, labels=1)
    ledger = pd.DataFrame(
        {"observation_id": frame["observation_id"], "group_key": frame["group_key"], "split": "train"}
    )
    result = assign_splits(frame, ledger)
    assert (result.assignments["split"] == "train").all()
    assert result.uncovered == {"0": ["valid", "test"]}


def arrow_ids(ids: list[str], chunks: int) -> pd.Series:
    """Arrow-backed ids in `chunks` chunks, as frames put together from parts hold them."""
    bounds = np.linspace(0, len(ids), chunks + 1).astype(int)
    array = pa.chunked_array([pa.array(ids[a:b], type=pa.large_string()) for a, b in zip(bounds, bounds[1:])])
    return pd.Series(pd.arrays.ArrowStringArray(array))


@pytest.mark.parametrize(
    "layout", ["appended", "removed_in_the_middle", "shuffled", "ledger_longer", "empty_ledger", "disjoint"]
)
def test_ledger_positions_match_a_lookup_whatever_the_order(layout: str):
    rng = np.random.default_rng(5)
    ledger = [f"obs-{i}" for i in range(500)]
    ids = {
        "appended": ledger + [f"new-{i}" for i in range(40)],
        "removed_in_the_middle": ledger[:100] + ledger[130:] + ["new-1", "obs-120"],
        "shuffled": list(rng.permutation(ledger[:300] + ["new-1", "new-2"])),
        "ledger_longer": ledger[:50],
        "empty_ledger": ledger[:20],
        "disjoint": [f"new-{i}" for i in range(30)],
    }[layout]
    known = [] if layout == "empty_ledger" else ledger
    where = {identifier: k for k, identifier in enumerate(known)}
    expected = [where.get(identifier, -1) for identifier in ids]
    assert _positions_in(pd.Series(ids), pd.Series(known, dtype=object)).tolist() == expected
    assert _positions_in(arrow_ids(ids, 3), arrow_ids(known, 4) if known else pd.Series([], dtype=object)).tolist() == (
        expected
    )

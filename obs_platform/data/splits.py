"""Stable train/valid/test assignment.

Rules:
- An observation keeps its split forever: assignments are kept in a ledger (observation id → split)
  under the storage root, and the ledger is consulted before anything else.
- Near-duplicate notes never straddle splits: observations are grouped by a fingerprint of their
  redacted, normalised text (case, punctuation, white space, names and numbers ignored; the same
  group observation written up for three children is one group), and a new observation joins the
  split of its group when the group already has one.
- A new group otherwise goes where a hash of its fingerprint puts it (about 80/10/10), so the same
  data always gives the same splits, on any machine, in any order.
- Every attribute with at least `min_examples` observations should appear in every split: when one
  is missing, the lowest-hash new groups of that attribute are moved there. Old observations are
  never moved to achieve this; an attribute that still misses a split is reported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import pandas as pd

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
LEDGER_COLUMNS = ["observation_id", "group_key", "split"]
_PLACEHOLDERS = re.compile(r"\[(?:child|adult|email|phone)(?:_\d+)?\]")
_NOT_WORD = re.compile(r"[^a-z]+")


@dataclass
class SplitResult:
    assignments: pd.DataFrame  # observation_id, group_key, split (one row per input row)
    ledger: pd.DataFrame  # the updated ledger to persist
    uncovered: dict[str, list[str]] = field(default_factory=dict)  # attribute → splits it misses
    moved_for_coverage: int = 0
    straddling_groups: int = 0


def group_keys(redacted_notes: pd.Series) -> pd.Series:
    """Fingerprint of each note, blind to case, punctuation, digits, names and spacing."""
    normalised = (
        redacted_notes.str.lower()
        .str.replace(_PLACEHOLDERS, " ", regex=True)
        .str.replace(_NOT_WORD, " ", regex=True)
        .str.strip()
    )
    return normalised.map(lambda text: hashlib.blake2b(text.encode(), digest_size=8).hexdigest())


def _bucket_split(group_key: str) -> str:
    position = int(group_key[:8], 16) / 0xFFFFFFFF
    if position < SPLIT_FRACTIONS["train"]:
        return "train"
    return "valid" if position < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["valid"] else "test"


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})


def assign_splits(
    observations: pd.DataFrame,
    ledger: pd.DataFrame | None = None,
    *,
    label_column: str = "attribute_id",
    min_examples: int = 10,
) -> SplitResult:
    """Assign each row of `observations` (observation_id, group_key, label) a split."""
    ledger = empty_ledger() if ledger is None else ledger
    frame = observations[["observation_id", "group_key", label_column]].copy()

    known = dict(zip(ledger["observation_id"], ledger["split"]))
    frame["split"] = frame["observation_id"].map(known).astype(object)
    fixed = frame["split"].notna()

    # Groups that already have a member keep new members beside it (first split seen, ledger order).
    group_split = (
        pd.concat([ledger[["group_key", "split"]], frame.loc[fixed, ["group_key", "split"]]])
        .drop_duplicates("group_key")
        .set_index("group_key")["split"]
    )
    straddling = int(frame.loc[fixed].groupby("group_key")["split"].nunique().gt(1).sum())
    joins = ~fixed & frame["group_key"].isin(group_split.index)
    frame.loc[joins, "split"] = frame.loc[joins, "group_key"].map(group_split)
    anchored = fixed | joins

    fresh = ~anchored
    frame.loc[fresh, "split"] = frame.loc[fresh, "group_key"].map(_bucket_split)

    moved = _repair_coverage(frame, anchored, label_column, min_examples)
    uncovered = _uncovered(frame, label_column, min_examples)

    updated = pd.concat(
        [ledger[LEDGER_COLUMNS], frame.loc[~fixed, LEDGER_COLUMNS]], ignore_index=True
    ).drop_duplicates("observation_id", keep="first")
    return SplitResult(
        assignments=frame[LEDGER_COLUMNS].copy(),
        ledger=updated.reset_index(drop=True),
        uncovered=uncovered,
        moved_for_coverage=moved,
        straddling_groups=straddling,
    )


def _repair_coverage(frame: pd.DataFrame, anchored: pd.Series, label_column: str, min_examples: int) -> int:
    """Move whole new groups from train into a split their attribute is missing from."""
    moved = 0
    counts = frame.groupby(label_column)["observation_id"].size()
    for label in counts[counts >= min_examples].index:
        of_label = frame[label_column] == label
        for split in ("test", "valid"):
            if (frame.loc[of_label, "split"] == split).any():
                continue
            movable = frame.loc[of_label & ~anchored & (frame["split"] == "train"), "group_key"]
            if movable.empty:
                continue
            group = min(movable.unique())
            if (frame.loc[frame["group_key"] == group, "split"] != "train").any():
                continue  # the group spans labels and is already placed elsewhere in part
            frame.loc[frame["group_key"] == group, "split"] = split
            moved += 1
    return moved


def _uncovered(frame: pd.DataFrame, label_column: str, min_examples: int) -> dict[str, list[str]]:
    table = pd.crosstab(frame[label_column], frame["split"]).reindex(columns=list(SPLITS), fill_value=0)
    big_enough = table.sum(axis=1) >= min_examples
    missing = {}
    for label, row in table[big_enough].iterrows():
        lacking = [s for s in SPLITS if row[s] == 0]
        if lacking:
            missing[str(label)] = lacking
    return missing

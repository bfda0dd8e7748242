"""Stable train/valid/test assignment.

Rules:
- An observation keeps its split forever: assignments are kept in a ledger (observation id → split)
  under the storage root, and the ledger is consulted before anything else.
- Near-duplicate notes never straddle splits: observations are grouped by a fingerprint of their
  redacted text, the multiset of its adjacent letter pairs (case, punctuation, digits, spacing, names
  and word order ignored; the same group observation written up for three children is one group), and
  a new observation joins the split of its group when the group already has one.
- A new group otherwise goes where a hash of its fingerprint puts it (about 80/10/10), so the same
  data always gives the same splits, on any machine, in any order.
- Every attribute with at least `min_examples` observations should appear in every split: when one
  is missing, the lowest-hash new groups of that attribute are moved there. Old observations are
  never moved to achieve this; an attribute that still misses a split is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.data.json_lines import take_texts
from obs_platform.data.string_bytes import offsets_and_bytes
from obs_platform.parallel import map_slices

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
LEDGER_COLUMNS = ["observation_id", "group_key", "split"]
_HASH_CHUNK = 20_000
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class SplitResult:
    assignments: pd.DataFrame  # observation_id, group_key, split (one row per input row)
    ledger: pd.DataFrame  # the updated ledger to persist
    uncovered: dict[str, list[str]] = field(default_factory=dict)  # attribute → splits it misses
    moved_for_coverage: int = 0
    straddling_groups: int = 0
    added_to_ledger: int = 0


def group_keys(redacted_notes: pd.Series) -> pd.Series:
    """A 64-bit fingerprint of each note: the multiset of its adjacent letter pairs, blind to case,
    punctuation, digits, spacing, names and word order ("built a tower, then a bridge" and "then a bridge,
    built a tower" fall together; so does the same group observation written up for three children).

    Computed on the notes' UTF-8 bytes with numpy: a per-note Python pass costs seconds at a million notes.
    Deterministic on every platform (fixed tables, uint64 arithmetic).
    """
    if redacted_notes.empty:
        return pd.Series([], index=redacted_notes.index, dtype=np.int64, name="group_key")
    texts = pa.array(redacted_notes, type=pa.large_string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    # Placeholders need no special case: "[CHILD_2]" and "[CHILD]" hold the same letters.
    keys = map_slices(texts, _lowered_pair_hashes)
    return pd.Series(keys.view(np.int64), index=redacted_notes.index, name="group_key")


def _lowered_pair_hashes(texts: pa.Array) -> np.ndarray:
    lowered = pc.utf8_lower(texts)
    keys = np.empty(len(lowered), dtype=np.uint64)
    for start in range(0, len(lowered), _HASH_CHUNK):
        chunk = lowered.slice(start, _HASH_CHUNK)
        keys[start : start + len(chunk)] = _pair_hashes(chunk)
    return keys


def _pair_hashes(chunk: pa.LargeStringArray) -> np.ndarray:
    offsets, data = offsets_and_bytes(chunk)
    data = data[offsets[0] : offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    if len(data) < 2:
        return np.zeros(len(chunk), dtype=np.uint64)
    # Each byte with the next, as a big-endian 16-bit number read at every byte (no arithmetic per byte).
    pairs = np.ndarray((len(data) - 1,), dtype=">u2", buffer=data, strides=(1,)).astype(np.uint16)
    # A pair that straddles two notes weighs nothing (pair 0 holds no letter), nor does one with a non-letter.
    pairs[starts[1:] - 1] = 0
    values = pc.take(_PAIR_WEIGHTS, pairs).to_numpy()  # Arrow's take: half the time of NumPy's fancy indexing
    sums = np.add.reduceat(values, np.minimum(starts, len(values) - 1))
    sums[np.diff(offsets) < 2] = 0  # reduceat returns a value, not zero, for an empty or one-byte note
    return sums


def _pair_table() -> np.ndarray:
    """A fixed pseudo-random weight per (letter, letter) byte pair; zero for pairs with a non-letter."""
    letter = np.zeros(256, dtype=bool)
    letter[ord("a") : ord("z") + 1] = True
    letter[0x80:] = True  # bytes of non-ASCII letters (é, ł, ...)
    rng = np.random.default_rng(20261128)
    table = rng.integers(1, 2**63, size=65536, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    both = letter[:, None] & letter[None, :]
    return np.where(both.reshape(-1), table, np.uint64(0))


_PAIR_WEIGHTS = pa.array(_pair_table())


def _bucket_splits(keys: pd.Series) -> pd.Series:
    """Spread fingerprints over [0, 1) (a multiplicative mix of their bits) and cut at 80/90 %."""
    mixed = keys.to_numpy().view(np.uint64) * _MIX
    position = (mixed >> np.uint64(32)).astype(np.float64) / 2**32
    train, valid = SPLIT_FRACTIONS["train"], SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["valid"]
    return pd.Series(np.where(position < train, "train", np.where(position < valid, "valid", "test")), index=keys.index)


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

    # A categorical split column keeps counting and comparing a million rows cheap; the ledger is looked up by an
    # index (a hash table in C), not a Python dict.
    at = _positions_in(frame["observation_id"], ledger["observation_id"])
    recorded = pd.Categorical(ledger["split"], categories=list(SPLITS)).codes
    frame["split"] = pd.Categorical.from_codes(
        np.where(at >= 0, recorded[at], -1) if len(recorded) else np.full(len(frame), -1), categories=list(SPLITS)
    )
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
    frame.loc[fresh, "split"] = _bucket_splits(frame.loc[fresh, "group_key"])

    moved = _repair_coverage(frame, anchored, label_column, min_examples)
    uncovered = {
        str(label): lacking for label, lacking in _uncovered(_split_counts(frame, label_column), min_examples).items()
    }

    # Observation ids are unique in `observations` and the new ones are not in the ledger yet.
    parts = [part for part in (ledger[LEDGER_COLUMNS], frame.loc[~fixed, LEDGER_COLUMNS]) if not part.empty]
    updated = pd.concat(parts, ignore_index=True) if parts else empty_ledger()
    return SplitResult(
        assignments=frame[LEDGER_COLUMNS].copy(),
        ledger=updated.reset_index(drop=True),
        uncovered=uncovered,
        moved_for_coverage=moved,
        straddling_groups=straddling,
        added_to_ledger=len(updated) - len(ledger),
    )


def _positions_in(ids: pd.Series, known: pd.Series) -> np.ndarray:
    """Where each of `ids` is in `known` (unique), -1 where it is not.

    The ledger grows in the order the frame's rows come (exports in landing order, new rows after the old), so most
    ids are where the ledger has them: one comparison finds those, and only the others are looked up (Arrow's hash
    lookup, without the copy to Python strings a pandas index of Arrow-backed text makes) among the ledger's rows not
    found so. A drop onto a million rows hashes its new ids, not the million."""
    ids_array, known_array = pa.array(ids, type=pa.large_string()), pa.array(known, type=pa.large_string())
    common = min(len(ids), len(known))
    in_place = np.zeros(len(ids), dtype=bool)
    in_place[:common] = np.asarray(pc.equal(ids_array[:common], known_array[:common]).fill_null(False))
    found = np.where(in_place, np.arange(len(ids)), -1)
    rest = np.flatnonzero(~in_place)
    unmatched = np.ones(len(known), dtype=bool)
    unmatched[:common] = ~in_place[:common]
    left = np.flatnonzero(unmatched)
    if len(rest) and len(left):
        hits = pc.index_in(take_texts(ids_array, rest), value_set=take_texts(known_array, left))
        at = np.asarray(hits.fill_null(-1), dtype=np.int64)
        found[rest] = np.where(at >= 0, left[at], -1)
    return found


def _split_counts(frame: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Observations per label (rows) and split (columns)."""
    label_codes, labels = pd.factorize(frame[label_column], sort=True)
    split_codes = frame["split"].cat.codes.to_numpy().astype(np.int64)
    cells = np.bincount(label_codes * len(SPLITS) + split_codes, minlength=len(labels) * len(SPLITS))
    return pd.DataFrame(cells.reshape(len(labels), len(SPLITS)), index=labels, columns=list(SPLITS))


def _repair_coverage(frame: pd.DataFrame, anchored: pd.Series, label_column: str, min_examples: int) -> int:
    """Move whole new groups from train into a split their attribute is missing from."""
    moved = 0
    labels = frame[label_column].to_numpy()
    for label, lacking in _uncovered(_split_counts(frame, label_column), min_examples).items():
        of_label = labels == label
        for split in [s for s in ("test", "valid") if s in lacking]:
            movable = frame.loc[of_label & ~anchored.to_numpy() & (frame["split"] == "train").to_numpy(), "group_key"]
            if movable.empty:
                continue
            in_group = (frame["group_key"] == min(movable.unique())).to_numpy()
            if (frame.loc[in_group, "split"] != "train").any():
                continue  # the group spans labels and is already placed elsewhere in part
            frame.loc[in_group, "split"] = split
            moved += 1
    return moved


def _uncovered(counts: pd.DataFrame, min_examples: int) -> dict[object, list[str]]:
    """Labels with enough examples that miss a split, and the splits they miss."""
    big_enough = counts[counts.sum(axis=1) >= min_examples]
    missing = {}
    for label, row in big_enough.iterrows():
        lacking = [s for s in SPLITS if row[s] == 0]
        if lacking:
            missing[label] = lacking
    return missing

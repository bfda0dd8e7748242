"""Canonical observations → redacted records → splits → training files.

Plain functions over DataFrames; the Dagster assets call them and add metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from obs_platform.data import jsonl
from obs_platform.data.formats import TrainingLineRenderer, photo_mime_type
from obs_platform.data.redaction import Redactor, Roster
from obs_platform.data.splits import SPLITS, SplitResult, assign_splits, group_keys
from obs_platform.taxonomy import Taxonomy
from obs_platform.data.gc_pause import without_gc_pauses

REDACTED_COLUMNS = [
    "observation_id",
    "text",
    "child_age_months",
    "domain_id",
    "domain_key",
    "attribute_id",
    "attribute_name",
    "progression_title",
    "level_index",
    "secondary_tags",
    "photo_uris",
    "observation_date",
    "setting",
]


def build_roster(canonical: pd.DataFrame, quarantined: pd.DataFrame) -> Roster:
    """Every child and adult name in the data set, quarantined rows included (they name people too)."""

    def names(column: str) -> set[str]:
        found: set[str] = set()
        for frame in (canonical, quarantined):
            if column in frame:
                found.update(v for v in frame[column].dropna().unique().tolist() if isinstance(v, str))
        return found

    return Roster.from_names(sorted(names("child_name")), sorted(names("educator_name")))


@without_gc_pauses
def redact_observations(canonical: pd.DataFrame, roster: Roster) -> pd.DataFrame:
    """Notes become `text` with names, e-mails and phone numbers replaced; name fields are dropped."""
    redactor = Redactor(roster)
    text = redactor.redact_many(canonical["notes"], canonical["child_name"].tolist())
    return canonical.assign(text=text)[REDACTED_COLUMNS].reset_index(drop=True)


@dataclass
class SplitOutcome:
    frame: pd.DataFrame  # redacted rows plus `group_key` and `split`
    result: SplitResult


@without_gc_pauses
def split_observations(redacted: pd.DataFrame, ledger: pd.DataFrame | None) -> SplitOutcome:
    keyed = redacted.assign(group_key=group_keys(redacted["text"]))
    result = assign_splits(keyed, ledger)
    split = result.assignments.set_index("observation_id")["split"]
    return SplitOutcome(frame=keyed.assign(split=keyed["observation_id"].map(split)), result=result)


# ----- rendering JSONL -----------------------------------------------------------------------------


def _split_lines(frame: pd.DataFrame) -> pa.Array:
    """Redacted records as JSON objects, rendered a column at a time."""
    if frame.empty:
        return jsonl.NO_LINES
    field = lambda name: f'"{name}":'  # noqa: E731
    return jsonl.join_lines([
        "{", field("observation_id"), jsonl.json_strings(frame["observation_id"]),
        ",", field("text"), jsonl.json_strings(frame["text"]),
        ",", field("child_age_months"), jsonl.json_numbers(pa.array(frame["child_age_months"].astype("Float64"), type=pa.float64())),
        ",", field("domain_id"), jsonl.json_numbers(pa.array(frame["domain_id"].astype(int))),
        ",", field("domain_key"), jsonl.json_strings(frame["domain_key"]),
        ",", field("attribute_id"), jsonl.json_numbers(pa.array(frame["attribute_id"].astype(int))),
        ",", field("progression_title"), jsonl.json_strings(frame["progression_title"]),
        ",", field("level_index"), jsonl.json_numbers(pa.array(frame["level_index"].astype(int))),
        ",", field("secondary_tags"), jsonl.encoded_each(frame["secondary_tags"].tolist(), "[]"),
        ",", field("photo_uris"), jsonl.encoded_each(frame["photo_uris"].tolist(), "[]"),
        "}",
    ])  # fmt: skip


def _by_split(frame: pd.DataFrame, splits: Iterable[str]) -> dict[str, pd.DataFrame]:
    ordered = frame.sort_values("observation_id", kind="stable")
    return {f"{s}.jsonl": ordered[ordered["split"] == s] for s in splits}


def split_files(frame: pd.DataFrame) -> dict[str, Iterable[bytes]]:
    """`train.jsonl`, `valid.jsonl`, `test.jsonl` of redacted records (what the classifier trains on)."""
    return {name: jsonl.file_chunks(_split_lines(part)) for name, part in _by_split(frame, SPLITS).items()}


def gemini_files(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    """Vertex Gemini tuning takes a training and a validation file (the test split stays for evaluation)."""
    renderer = TrainingLineRenderer(taxonomy)
    return {
        name: jsonl.file_chunks(renderer.gemini_lines(part))
        for name, part in _by_split(frame, ("train", "valid")).items()
    }


def chat_files(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    renderer = TrainingLineRenderer(taxonomy)
    return {name: jsonl.file_chunks(renderer.chat_lines(part)) for name, part in _by_split(frame, SPLITS).items()}


def photo_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many photos reach Gemini as file parts, and how many cannot (not gs:// or not an image)."""
    uris = [u for photos in frame["photo_uris"] for u in photos]
    usable = sum(1 for u in uris if u.startswith("gs://") and photo_mime_type(u))
    return {"photos_attached": usable, "photos_skipped": len(uris) - usable}

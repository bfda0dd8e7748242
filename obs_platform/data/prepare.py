"""Canonical observations → redacted records → splits → training files.

Plain functions over DataFrames; the Dagster assets call them and add metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from obs_platform.data.formats import TrainingLineRenderer, photo_mime_type
from obs_platform.data.json_lines import JsonLines, Kind
from obs_platform.data.line_files import LineFiles, LineFilesWrite, write_line_files
from obs_platform.data.redaction import Redactor, Roster
from obs_platform.data.splits import SPLITS, SplitResult, assign_splits, group_keys
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import Storage
from obs_platform.taxonomy import Taxonomy

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
# What a split file holds per observation (enough to train a classifier and to trace a row back), and how each
# column is rendered.
SPLIT_RECORD_KINDS = {
    "observation_id": Kind.TEXT,
    "text": Kind.TEXT,
    "child_age_months": Kind.VALUE,
    "domain_id": Kind.VALUE,
    "domain_key": Kind.VALUE,
    "attribute_id": Kind.VALUE,
    "progression_title": Kind.VALUE,
    "level_index": Kind.VALUE,
    "secondary_tags": Kind.LIST,
    "photo_uris": Kind.LIST,
    "observation_date": Kind.DATE,  # ISO date or null: with the age, it places the child in a school year and a term
}
SPLIT_RECORD_COLUMNS = list(SPLIT_RECORD_KINDS)
TAXONOMY_TEXTS_FILE = "taxonomy.jsonl"
SPLITS_BASE = "splits"  # split bundles are content-addressed folders under it
SPLIT_BUNDLE_ATTR = "split_bundle"  # a split frame's `attrs`: where its bundle was written (`split_bundle_record`)


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
    return with_redacted_text(
        canonical, Redactor(roster).redact_many(canonical["notes"], canonical["child_name"].tolist())
    )


@without_gc_pauses
def with_redacted_text(
    canonical: pd.DataFrame, texts: list[str] | pa.ChunkedArray, keys: np.ndarray | None = None
) -> pd.DataFrame:
    """The redacted records: `texts` (the notes redacted, row for row; Arrow-backed as they come from the cache)
    as `text` with its near-duplicate fingerprint `group_key` (`keys`, computed when not given), the name fields
    dropped."""
    if isinstance(texts, pa.ChunkedArray):
        texts = pd.arrays.ArrowStringArray(texts)
    redacted = canonical[[c for c in REDACTED_COLUMNS if c != "text"]].copy(deep=False)  # changed in place: no copy
    redacted.index = pd.RangeIndex(len(redacted))
    redacted.insert(REDACTED_COLUMNS.index("text"), "text", texts)
    redacted["group_key"] = group_keys(redacted["text"]) if keys is None else keys
    return redacted


@dataclass
class SplitOutcome:
    frame: pd.DataFrame  # redacted rows plus `group_key` and `split`
    result: SplitResult


@without_gc_pauses
def split_observations(redacted: pd.DataFrame, ledger: pd.DataFrame | None) -> SplitOutcome:
    # New columns go on a new frame sharing the columns' data: no copy of a million rows.
    keyed = redacted.copy(deep=False)
    if "group_key" not in keyed:
        keyed["group_key"] = group_keys(keyed["text"])
    result = assign_splits(keyed, ledger)  # its assignments are row for row
    keyed["split"] = result.assignments["split"].to_numpy()
    return SplitOutcome(frame=keyed, result=result)


# ----- rendering JSONL -----------------------------------------------------------------------------


def _split_codes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's split as its place in `SPLITS`."""
    return pd.Categorical(frame["split"], categories=list(SPLITS)).codes


def split_lines(frame: pd.DataFrame) -> LineFiles:
    """`train.jsonl`, `valid.jsonl`, `test.jsonl` of redacted records (what the classifier trains on), in frame
    order."""
    labels = {c: frame[c].astype(int) for c in ("domain_id", "attribute_id", "level_index")}
    lines = JsonLines({c: labels.get(c, frame[c]) for c in SPLIT_RECORD_COLUMNS}, SPLIT_RECORD_KINDS)
    return LineFiles(lines.pieces, frame["observation_id"], _split_codes(frame), tuple(f"{s}.jsonl" for s in SPLITS))


def split_records(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """The records of each split (`train`, `valid`, `test`) exactly as the split files hold them."""
    return {
        name.removesuffix(".jsonl"): [orjson.loads(line) for chunk in chunks for line in chunk.splitlines()]
        for name, chunks in split_lines(frame).files().items()
    }


def taxonomy_text_records(taxonomy: Taxonomy) -> list[dict]:
    """The taxonomy's own labelled text, in the split-record shape: each progression point's description (its
    attribute and level) and each attribute's guidance (`information`: its attribute, no level). Training rows for
    the hybrid classifier, the cheapest signal the corpus lacks for rarely observed ELGs and levels."""
    records = []
    for attribute in taxonomy.attributes:
        domain = taxonomy.domain(attribute.domain_id)
        label = {"domain_id": domain.id, "domain_key": domain.key, "attribute_id": attribute.id}
        texts = [(f"taxonomy-attribute-{attribute.id}", attribute.information, None)]
        texts += [(f"taxonomy-point-{p.id}", p.description, p.level) for p in attribute.points if not p.hidden]
        for record_id, text, level in texts:
            if text and text.strip():
                records.append(
                    {
                        "observation_id": record_id,
                        "text": text.strip(),
                        "child_age_months": None,
                        **label,
                        "progression_title": level.title if level else None,
                        "level_index": taxonomy.level_index(level.title) if level else None,
                        "secondary_tags": [],
                        "photo_uris": [],
                        "observation_date": None,
                    }
                )
    return records


def taxonomy_text_file(taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    return {
        TAXONOMY_TEXTS_FILE: [
            b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in taxonomy_text_records(taxonomy))
        ]
    }


def write_split_bundle(storage: Storage, frame: pd.DataFrame, taxonomy: Taxonomy) -> LineFilesWrite:
    """The split bundle under `splits/<version>/`: the split files of the frame and, beside them, the taxonomy's own
    texts; the lines of rows unchanged since the last bundle are read from it (`line_files`)."""
    return write_line_files(storage, SPLITS_BASE, split_lines(frame), beside=taxonomy_text_file(taxonomy))


def split_bundle_record(folder: str, taxonomy: Taxonomy) -> dict[str, str]:
    """What a split frame records of its bundle (`attrs[SPLIT_BUNDLE_ATTR]`): the folder it was written to (its name
    is its content's digest, the dataset version) and the taxonomy it was written with (whose labelled texts it
    holds)."""
    return {"folder": folder, "taxonomy_sha256": taxonomy.sha256}


def recorded_split_bundle(attrs: Mapping[str, Any], taxonomy: Taxonomy) -> str | None:
    """The folder of a split frame's bundle, from the frame's `attrs` alone (training and the checks find it without
    loading or rendering a million rows); None when the frame records none, or was written with another taxonomy."""
    record = attrs.get(SPLIT_BUNDLE_ATTR)
    if not isinstance(record, Mapping) or record.get("taxonomy_sha256") != taxonomy.sha256:
        return None
    return str(record["folder"])


def gemini_lines(frame: pd.DataFrame, taxonomy: Taxonomy) -> LineFiles:
    """Vertex Gemini tuning takes a training and a validation file (the test split stays for evaluation)."""
    pieces = TrainingLineRenderer(taxonomy).gemini_pieces(frame)
    return LineFiles(pieces, frame["observation_id"], _split_codes(frame), ("train.jsonl", "valid.jsonl"))


def chat_lines(frame: pd.DataFrame, taxonomy: Taxonomy) -> LineFiles:
    """The same examples as chat `messages` (train, valid and test)."""
    pieces = TrainingLineRenderer(taxonomy).chat_pieces(frame)
    return LineFiles(pieces, frame["observation_id"], _split_codes(frame), tuple(f"{s}.jsonl" for s in SPLITS))


def photo_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many photos reach Gemini as file parts, and how many cannot (not gs:// or not an image)."""
    uris = [u for photos in frame["photo_uris"] for u in photos]
    usable = sum(1 for u in uris if u.startswith("gs://") and photo_mime_type(u))
    return {"photos_attached": usable, "photos_skipped": len(uris) - usable}

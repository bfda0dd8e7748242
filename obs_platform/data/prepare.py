"""Canonical observations → redacted records → splits → training files.

Plain functions over DataFrames; the Dagster assets call them and add metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

from obs_platform.data.formats import TrainingLineRenderer, photo_mime_type
from obs_platform.data.redaction import Redactor, Roster
from obs_platform.data.splits import SPLITS, SplitResult, assign_splits, group_keys
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.storage import content_addressed_folder
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
# What a split file holds per observation: enough to train a classifier and to trace a row back.
SPLIT_RECORD_COLUMNS = [
    "observation_id",
    "text",
    "child_age_months",
    "domain_id",
    "domain_key",
    "attribute_id",
    "progression_title",
    "level_index",
    "secondary_tags",
    "photo_uris",
    "observation_date",  # ISO date or null: with the age, it places the child in a school year and a term
]
CHUNK_ROWS = 20_000
TAXONOMY_TEXTS_FILE = "taxonomy.jsonl"
SPLITS_BASE = "splits"  # split bundles are content-addressed folders under it


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
def with_redacted_text(canonical: pd.DataFrame, texts: list[str], keys: np.ndarray | None = None) -> pd.DataFrame:
    """The redacted records: `texts` (the notes redacted, row for row) as `text` with its near-duplicate
    fingerprint `group_key` (`keys`, computed when not given), the name fields dropped."""
    redacted = canonical.assign(text=texts)[REDACTED_COLUMNS].reset_index(drop=True)
    return redacted.assign(group_key=group_keys(redacted["text"]) if keys is None else keys)


@dataclass
class SplitOutcome:
    frame: pd.DataFrame  # redacted rows plus `group_key` and `split`
    result: SplitResult


@without_gc_pauses
def split_observations(redacted: pd.DataFrame, ledger: pd.DataFrame | None) -> SplitOutcome:
    keyed = redacted if "group_key" in redacted else redacted.assign(group_key=group_keys(redacted["text"]))
    result = assign_splits(keyed, ledger)
    split = result.assignments.set_index("observation_id")["split"]
    return SplitOutcome(frame=keyed.assign(split=keyed["observation_id"].map(split)), result=result)


# ----- rendering JSONL -----------------------------------------------------------------------------


def _label_columns(frame: pd.DataFrame) -> Iterator[tuple]:
    """Per row: text, age and date (None when unknown), label key, secondary label keys, photo URIs."""
    ages = frame["child_age_months"].astype(object).where(frame["child_age_months"].notna(), None).tolist()
    dates = _dates(frame["observation_date"])
    labels = zip(
        frame["domain_id"].astype(int).tolist(),
        frame["attribute_id"].astype(int).tolist(),
        frame["progression_title"].tolist(),
    )
    secondary = (
        tuple((t["domain_id"], t["attribute_id"], t["level"]) for t in tags) if tags else ()
        for tags in frame["secondary_tags"].tolist()
    )
    return zip(frame["text"].tolist(), ages, dates, labels, secondary, frame["photo_uris"].tolist())


def _dates(column: pd.Series) -> list[str | None]:
    """ISO days (None when unknown), vectorised: a million rows in a fraction of a second."""
    days = pd.to_datetime(column).to_numpy(dtype="datetime64[D]")
    iso = np.datetime_as_string(days, unit="D").astype(object)
    iso[np.isnat(days)] = None
    return iso.tolist()


def _chunked(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Join lines in chunks: fast, and bounded in memory however many rows there are."""
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= CHUNK_ROWS:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def _split_records(frame: pd.DataFrame) -> Iterator[bytes]:
    subset = frame[SPLIT_RECORD_COLUMNS]
    ages = subset["child_age_months"].astype(object).where(subset["child_age_months"].notna(), None)
    subset = subset.assign(
        child_age_months=ages,
        observation_date=_dates(subset["observation_date"]),
        domain_id=subset["domain_id"].astype(int),
        attribute_id=subset["attribute_id"].astype(int),
        level_index=subset["level_index"].astype(int),
    )
    columns = list(subset.columns)
    for values in zip(*(subset[c].tolist() for c in columns)):
        yield orjson.dumps(dict(zip(columns, values)), option=orjson.OPT_APPEND_NEWLINE)


def _by_split(frame: pd.DataFrame, splits: Iterable[str]) -> dict[str, pd.DataFrame]:
    ordered = frame.sort_values("observation_id", kind="stable")
    return {f"{s}.jsonl": ordered[ordered["split"] == s] for s in splits}


def split_records(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """The records of each split (`train`, `valid`, `test`) exactly as the split files hold them."""
    return {
        name.removesuffix(".jsonl"): [orjson.loads(line) for line in _split_records(part)]
        for name, part in _by_split(frame, SPLITS).items()
    }


def split_files(frame: pd.DataFrame) -> dict[str, Iterable[bytes]]:
    """`train.jsonl`, `valid.jsonl`, `test.jsonl` of redacted records (what the classifier trains on)."""
    return {name: _chunked(_split_records(part)) for name, part in _by_split(frame, SPLITS).items()}


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


def split_bundle(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    """The files of one split bundle: the split files of the frame and, beside them, the taxonomy's own texts."""
    return split_files(frame) | taxonomy_text_file(taxonomy)


def split_bundle_folder(frame: pd.DataFrame, taxonomy: Taxonomy) -> str:
    """Where the frame's split bundle is written, found from the frame alone (its name is its content's digest,
    also the dataset version): what training and the checks of `training_splits` read, without writing."""
    return content_addressed_folder(SPLITS_BASE, split_bundle(frame, taxonomy))


def gemini_files(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    """Vertex Gemini tuning takes a training and a validation file (the test split stays for evaluation)."""
    renderer = TrainingLineRenderer(taxonomy)
    return {
        name: _chunked(renderer.gemini(*row) for row in _label_columns(part))
        for name, part in _by_split(frame, ("train", "valid")).items()
    }


def chat_files(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Iterable[bytes]]:
    renderer = TrainingLineRenderer(taxonomy)
    return {
        name: _chunked(renderer.chat(*row[:5]) for row in _label_columns(part))
        for name, part in _by_split(frame, SPLITS).items()
    }


def photo_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many photos reach Gemini as file parts, and how many cannot (not gs:// or not an image)."""
    uris = [u for photos in frame["photo_uris"] for u in photos]
    usable = sum(1 for u in uris if u.startswith("gs://") and photo_mime_type(u))
    return {"photos_attached": usable, "photos_skipped": len(uris) - usable}

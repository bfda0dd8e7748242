"""The pandera contracts of canonical observations.

`ObservationRecordSchema` holds the per-row rules any taxonomy shares; `taxonomy_schema(taxonomy)`
extends it at run time with the rules that come from the taxonomy file in use (ids exist, attribute
belongs to domain, level valid for the attribute). Every check method is named by the reason code a
failing row is quarantined under, so the quarantine table speaks the schema's language (the method name,
not `name=`: pandera forgets `name=` when a model class is built a second time).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

from obs_platform.data.string_bytes import rows_matching
from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_level_title

# Text columns are Arrow-backed strings: their checks run in C++ (a million notes validate in
# milliseconds, where object columns cost seconds).
ArrowString = Annotated[pd.StringDtype, "pyarrow", pd.NA]
STRING_DTYPE = "string[pyarrow]"
MAX_NOTES_CHARS = 4000
MAX_AGE_MONTHS = 72  # early years ends with the Reception year (a child turns six at the latest)
EARLIEST_DATE = pd.Timestamp("2000-01-01")
# Control characters but tab, LF and CR (C0, DEL, C1), the soft hyphen, zero-width and bidirectional format
# characters, the BOM and tag characters: invisible in a note, and redaction uses a control character as its
# own marker. Python escapes put the characters themselves in the pattern, which RE2 (Arrow) and re both read.
INVISIBLE_CHARACTERS = (
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\U000e0000-\U000e007f]"
)


def holding_invisible_characters(text: pd.Series) -> np.ndarray:
    """Which values hold one of `INVISIBLE_CHARACTERS`. A byte scan finds the values that may (those with a byte
    outside printable ASCII) and the pattern looks at those only: a million notes in 0.2 s instead of 0.56 s. A
    column that is not all text is matched by the pattern alone."""
    try:
        strings = pyarrow.array(text, type=pyarrow.large_string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return text.str.contains(INVISIBLE_CHARACTERS, regex=True, na=False).to_numpy(bool)
    return rows_matching(strings, _outside_printable_ascii, INVISIBLE_CHARACTERS)


def _outside_printable_ascii(data: np.ndarray) -> np.ndarray:
    """Bytes outside printable ASCII (a control byte, DEL, or any byte of a character outside ASCII, where the
    invisible ones are encoded), in two operations: the byte minus 32, wrapping, is 95 or more. Tabs and line breaks
    are flagged too (a tenth of the notes then), and the pattern tells."""
    return data - np.uint8(32) >= np.uint8(95)


def _latest_plausible_date() -> pd.Timestamp:
    """Tomorrow: an observation can't be dated in the future (one day of slack for time zones)."""
    return pd.Timestamp(dt.date.today() + dt.timedelta(days=1))


class ObservationRecordSchema(pa.DataFrameModel):
    """Per-row rules that hold whatever the taxonomy."""

    observation_id: Series[ArrowString] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 200})
    notes: Series[ArrowString] = pa.Field(nullable=False)
    domain_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    attribute_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    progression_title: Series[ArrowString] = pa.Field(nullable=False)
    child_age_months: Series[pd.Float64Dtype] = pa.Field(nullable=True)
    observation_date: Series[pa.DateTime] = pa.Field(nullable=True)
    child_name: Series[ArrowString] = pa.Field(nullable=True)
    educator_id: Series[ArrowString] = pa.Field(nullable=True)
    educator_name: Series[ArrowString] = pa.Field(nullable=True)
    setting: Series[ArrowString] = pa.Field(nullable=True)
    photo_uris: Series[object] = pa.Field(nullable=False)
    secondary_tags: Series[object] = pa.Field(nullable=False)
    source_file: Series[ArrowString] = pa.Field(nullable=False)
    source_line: Series[pd.Int64Dtype] = pa.Field(nullable=True)

    @pa.check("notes", error="notes are empty or only white space")
    def empty_notes(cls, notes: Series[ArrowString]) -> Series[bool]:
        return notes.str.strip().str.len() > 0

    @pa.check("notes", error=f"notes are longer than {MAX_NOTES_CHARS} characters")
    def notes_too_long(cls, notes: Series[ArrowString]) -> Series[bool]:
        return notes.str.len() <= MAX_NOTES_CHARS

    @pa.check("child_age_months", error=f"child age must be 0 to {MAX_AGE_MONTHS} months")
    def age_out_of_range(cls, age: Series[pd.Float64Dtype]) -> Series[bool]:
        return age.between(0, MAX_AGE_MONTHS)

    @pa.check("observation_date", error="date is before 2000 or in the future")
    def implausible_date(cls, date: Series[pa.DateTime]) -> Series[bool]:
        return date.between(EARLIEST_DATE, _latest_plausible_date())

    class Config:
        coerce = False
        strict = False


class CanonicalObservationsSchema(ObservationRecordSchema):
    """The `canonical_observations` asset: valid rows, one per observation id, with derived names."""

    observation_id: Series[ArrowString] = pa.Field(nullable=False, unique=True)
    domain_key: Series[ArrowString] = pa.Field(nullable=False)
    domain_name: Series[ArrowString] = pa.Field(nullable=False)
    attribute_name: Series[ArrowString] = pa.Field(nullable=False)
    level_index: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)

    @pa.check("notes", "child_name", "educator_id", "educator_name", "setting", error="control or invisible characters")
    def invisible_characters(cls, text: Series[ArrowString]) -> Series[bool]:
        return pd.Series(~holding_invisible_characters(text), index=text.index)


def taxonomy_schema(taxonomy: Taxonomy) -> type[ObservationRecordSchema]:
    """Build the taxonomy-bound schema at run time: nothing about EYFS is fixed in code."""
    domain_ids = sorted(d.id for d in taxonomy.domains)
    attribute_ids = sorted(a.id for a in taxonomy.attributes)
    attribute_domain = taxonomy.attribute_domain
    valid_pairs = taxonomy.valid_label_keys
    known_levels = {lvl.key for lvl in taxonomy.levels}
    valid_triples = {(a.domain_id, a.id, lvl.title) for a in taxonomy.attributes for lvl in a.label_levels}

    class TaxonomyObservationSchema(ObservationRecordSchema):
        @pa.check("domain_id", error="domain id is not in the taxonomy")
        def unknown_domain(cls, domain_id: Series[pd.Int64Dtype]) -> Series[bool]:
            return domain_id.isin(domain_ids)

        @pa.check("attribute_id", error="attribute id is not in the taxonomy")
        def unknown_attribute(cls, attribute_id: Series[pd.Int64Dtype]) -> Series[bool]:
            return attribute_id.isin(attribute_ids)

        @pa.dataframe_check(error="attribute does not belong to the domain")
        def attribute_not_in_domain(cls, df: pd.DataFrame) -> Series[bool]:
            owner = df["attribute_id"].map(attribute_domain)
            # Unknown ids are reported by their own checks, not twice.
            domain_known = df["domain_id"].isin(domain_ids).fillna(False).astype(bool)
            return (owner.isna() | ~domain_known | (owner == df["domain_id"])).fillna(True).astype(bool)

        @pa.dataframe_check(error="progression level is not valid for the attribute")
        def invalid_level(cls, df: pd.DataFrame) -> Series[bool]:
            titles = df["progression_title"]
            level_key = titles.map({t: normalise_level_title(t) for t in titles.dropna().unique()})
            pair = df["attribute_id"].astype("string") + "|" + level_key.astype("string")
            attribute_known = df["attribute_id"].isin(attribute_ids).fillna(False).astype(bool)
            level_known = level_key.isin(known_levels)
            ok = pair.isin(valid_pairs).fillna(False).astype(bool) | (~attribute_known & level_known)
            return ok | df["progression_title"].isna()

        @pa.check("secondary_tags", error="a secondary tag names no valid domain/attribute/level")
        def invalid_secondary_tag(cls, tags: Series[object]) -> Series[bool]:
            def valid(tag_list: list) -> bool:
                return all(
                    (t.get("domain_id"), t.get("attribute_id"), t.get("level")) in valid_triples for t in tag_list
                )

            return pd.Series([not t or valid(t) for t in tags.tolist()], index=tags.index)

    return TaxonomyObservationSchema

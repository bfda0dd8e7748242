"""The pandera contracts of canonical observations.

`ObservationRecordSchema` holds the per-row rules any taxonomy shares; `taxonomy_schema(taxonomy)`
extends it at run time with the rules that come from the taxonomy file in use (ids exist, attribute
belongs to domain, level valid for the attribute). Every check is named by the reason code a failing row
is quarantined under, so the quarantine table speaks the same language as the schema.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_level_title

MAX_NOTES_CHARS = 4000
MAX_AGE_MONTHS = 72  # early years ends with the Reception year (a child turns six at the latest)
EARLIEST_DATE = pd.Timestamp("2000-01-01")


def _latest_plausible_date() -> pd.Timestamp:
    """Tomorrow: an observation can't be dated in the future (one day of slack for time zones)."""
    return pd.Timestamp(dt.date.today() + dt.timedelta(days=1))


class ObservationRecordSchema(pa.DataFrameModel):
    """Per-row rules that hold whatever the taxonomy."""

    observation_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 200})
    notes: Series[str] = pa.Field(nullable=False)
    domain_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    attribute_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    progression_title: Series[str] = pa.Field(nullable=False)
    child_age_months: Series[pd.Float64Dtype] = pa.Field(nullable=True)
    observation_date: Series[pa.DateTime] = pa.Field(nullable=True)
    child_name: Series[str] = pa.Field(nullable=True)
    educator_id: Series[str] = pa.Field(nullable=True)
    educator_name: Series[str] = pa.Field(nullable=True)
    setting: Series[str] = pa.Field(nullable=True)
    photo_uris: Series[object] = pa.Field(nullable=False)
    secondary_tags: Series[object] = pa.Field(nullable=False)
    source_file: Series[str] = pa.Field(nullable=False)
    source_line: Series[pd.Int64Dtype] = pa.Field(nullable=True)

    @pa.check("notes", name="empty_notes", error="notes are empty or only white space")
    def _notes_not_blank(cls, notes: Series[str]) -> Series[bool]:
        return notes.str.strip().str.len() > 0

    @pa.check("notes", name="notes_too_long", error=f"notes are longer than {MAX_NOTES_CHARS} characters")
    def _notes_bounded(cls, notes: Series[str]) -> Series[bool]:
        return notes.str.len() <= MAX_NOTES_CHARS

    @pa.check("child_age_months", name="age_out_of_range", error=f"child age must be 0 to {MAX_AGE_MONTHS} months")
    def _age_plausible(cls, age: Series[pd.Float64Dtype]) -> Series[bool]:
        return age.between(0, MAX_AGE_MONTHS)

    @pa.check("observation_date", name="implausible_date", error="date is before 2000 or in the future")
    def _date_plausible(cls, date: Series[pa.DateTime]) -> Series[bool]:
        return date.between(EARLIEST_DATE, _latest_plausible_date())

    class Config:
        coerce = False
        strict = False


class CanonicalObservationsSchema(ObservationRecordSchema):
    """The `canonical_observations` asset: valid rows, one per observation id, with derived names."""

    observation_id: Series[str] = pa.Field(nullable=False, unique=True)
    domain_key: Series[str] = pa.Field(nullable=False)
    domain_name: Series[str] = pa.Field(nullable=False)
    attribute_name: Series[str] = pa.Field(nullable=False)
    level_index: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    record_hash: Series[str] = pa.Field(nullable=False)


def taxonomy_schema(taxonomy: Taxonomy) -> type[ObservationRecordSchema]:
    """Build the taxonomy-bound schema at run time: nothing about EYFS is fixed in code."""
    domain_ids = sorted(d.id for d in taxonomy.domains)
    attribute_ids = sorted(a.id for a in taxonomy.attributes)
    attribute_domain = taxonomy.attribute_domain
    valid_pairs = taxonomy.valid_label_keys
    known_levels = {lvl.key for lvl in taxonomy.levels}

    class TaxonomyObservationSchema(ObservationRecordSchema):
        @pa.check("domain_id", name="unknown_domain", error="domain id is not in the taxonomy")
        def _domain_known(cls, domain_id: Series[pd.Int64Dtype]) -> Series[bool]:
            return domain_id.isin(domain_ids)

        @pa.check("attribute_id", name="unknown_attribute", error="attribute id is not in the taxonomy")
        def _attribute_known(cls, attribute_id: Series[pd.Int64Dtype]) -> Series[bool]:
            return attribute_id.isin(attribute_ids)

        @pa.dataframe_check(name="attribute_not_in_domain", error="attribute does not belong to the domain")
        def _attribute_in_domain(cls, df: pd.DataFrame) -> Series[bool]:
            owner = df["attribute_id"].map(attribute_domain)
            # Unknown ids are reported by their own checks, not twice.
            domain_known = df["domain_id"].isin(domain_ids).fillna(False).astype(bool)
            return (owner.isna() | ~domain_known | (owner == df["domain_id"])).fillna(True).astype(bool)

        @pa.dataframe_check(name="invalid_level", error="progression level is not valid for the attribute")
        def _level_valid(cls, df: pd.DataFrame) -> Series[bool]:
            level_key = df["progression_title"].map(normalise_level_title, na_action="ignore")
            pair = df["attribute_id"].astype("string") + "|" + level_key.astype("string")
            attribute_known = df["attribute_id"].isin(attribute_ids).fillna(False).astype(bool)
            level_known = level_key.isin(known_levels)
            ok = pair.isin(valid_pairs).fillna(False).astype(bool) | (~attribute_known & level_known)
            return ok | df["progression_title"].isna()

        @pa.check(
            "secondary_tags",
            name="invalid_secondary_tag",
            error="a secondary tag names no valid domain/attribute/level",
            element_wise=True,
        )
        def _secondary_valid(cls, tags: object) -> bool:
            return all(
                not taxonomy.label_problems(t.get("domain_id"), t.get("attribute_id"), t.get("level")) for t in tags
            )

    return TaxonomyObservationSchema

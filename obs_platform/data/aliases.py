"""Export field names → canonical columns: every alias table of the exports, written once, and the Arrow-typed
columns of a clean export turned into pandas values."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from obs_platform.data.values import arrow_lists

# canonical column → accepted source names, first match wins
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "observation_id": ("observationId", "observation_id", "id"),
    "notes": ("observationNotes", "narrative", "notes", "observation_notes"),
    "photo_uris": ("photoUris", "photo_uris", "photos"),
    "domain_id": ("domainId", "domain_id"),
    "domain_key": ("domainKey", "domain_key"),
    "attribute_id": ("attributeId", "attribute_id"),
    "progression_title": ("progressionTitle", "progression_title", "progressionLevel", "level"),
    "child_age_months": ("childAgeMonths", "child_age_months"),
    "observation_date": ("observationDate", "observation_date"),
    "educator_id": ("educatorId", "educator_id"),
    "educator_name": ("educatorName", "educator_name"),
    "child_name": ("childName", "child_name"),
    "setting": ("setting",),
    "secondary_tags": ("secondaryTags", "secondary_tags"),
    # the CSV export flattens one secondary tag into three columns
    "secondary_domain_id": ("secondaryDomainId", "secondary_domain_id"),
    "secondary_attribute_id": ("secondaryAttributeId", "secondary_attribute_id"),
    "secondary_progression_title": ("secondaryProgressionTitle", "secondary_progression_title"),
}

# a secondary tag's field → accepted source names: the same spellings as the observation's own label fields
TAG_ALIASES: dict[str, tuple[str, ...]] = {
    "domain_id": FIELD_ALIASES["domain_id"],
    "attribute_id": FIELD_ALIASES["attribute_id"],
    "level": FIELD_ALIASES["progression_title"],
}


def from_arrow(column: pd.Series) -> pd.Series:
    """Columns of a clean export arrive Arrow-typed: keep strings and numbers vectorised, lists as lists."""
    if not isinstance(column.dtype, pd.ArrowDtype):
        return column
    kind = column.dtype.pyarrow_dtype
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Wrapping the Arrow data directly is ~20x faster than astype, which validates value by value.
        return pd.Series(pd.arrays.ArrowStringArray(pa.array(column).cast(pa.large_string())), index=column.index)
    if pa.types.is_integer(kind):
        return column.astype("Int64")
    if pa.types.is_floating(kind):
        return column.astype("Float64")
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return column.astype("datetime64[ns]")
    return pd.Series(arrow_lists(column), index=column.index, dtype=object)


def map_aliases(parsed: pd.DataFrame) -> pd.DataFrame:
    mapped = pd.DataFrame(index=parsed.index)
    for field, aliases in FIELD_ALIASES.items():
        present = [a for a in aliases if a in parsed.columns]
        if not present:
            mapped[field] = pd.Series(None, index=parsed.index, dtype=object)
            continue
        # Secondary tags stay Arrow-typed until `coerce_secondary`, which converts them with the taxonomy.
        column = (
            parsed[present[0]] if field == "secondary_tags" and len(present) == 1 else from_arrow(parsed[present[0]])
        )
        for alias in present[1:]:
            column = column.astype(object).where(column.notna(), from_arrow(parsed[alias]).astype(object))
        mapped[field] = column
    mapped["source_file"] = parsed["source_file"].astype(str)
    mapped["source_line"] = pd.to_numeric(parsed["source_line"], errors="coerce").astype("Int64")
    return mapped

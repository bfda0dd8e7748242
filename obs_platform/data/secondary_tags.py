"""Secondary tags → `[{"domain_id", "attribute_id", "level"}]`: from a list (JSON, Python or Arrow `list<struct>`,
converted in bulk when clean) or from the CSV export's three flat columns."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.data.aliases import TAG_ALIASES, from_arrow
from obs_platform.data.quarantine import Reasons, is_missing, wrong_type
from obs_platform.data.values import arrow_lists
from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_level_title

TAG_FIELDS = ("domain_id", "attribute_id", "level")


def coerce_secondary(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: Reasons) -> pd.Series:
    """Normalise secondary tags to `[{"domain_id", "attribute_id", "level"}]`, from a list or flat columns."""

    titles = {lvl.key: lvl.title for lvl in taxonomy.levels}

    @lru_cache(maxsize=256)
    def spell(level: str) -> str:
        return titles.get(normalise_level_title(level), level)

    def tag(domain: Any, attribute: Any, level: Any) -> dict[str, Any] | None:
        try:
            domain_id = int(domain) if domain is not None and not isinstance(domain, bool) else None
            attribute_id = int(attribute) if attribute is not None and not isinstance(attribute, bool) else None
        except (TypeError, ValueError):
            return None
        if domain_id is None and attribute_id is not None:
            domain_id = taxonomy.attribute_domain.get(attribute_id)
        title = spell(level) if isinstance(level, str) else None
        return {"domain_id": domain_id, "attribute_id": attribute_id, "level": title}

    def from_list(value: Any) -> list[dict[str, Any]] | None:
        if is_missing(value):
            return []
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            return None
        tags = []
        for raw in value:
            converted = tag(
                *(next((raw[n] for n in TAG_ALIASES[name] if raw.get(n) is not None), None) for name in TAG_FIELDS),
            )
            if converted is None:
                return None
            tags.append(converted)
        return tags

    column = mapped["secondary_tags"]
    converted = _tags_from_arrow(column, taxonomy, spell)
    if converted is not None:
        listed = pd.Series([v if v is not None else [] for v in converted], index=mapped.index, dtype=object)
    else:
        values = from_arrow(column).tolist()
        listed = pd.Series(
            [[] if v.__class__ is list and not v else from_list(v) for v in values], index=mapped.index, dtype=object
        )
    flat = mapped["secondary_attribute_id"].notna() | mapped["secondary_domain_id"].notna()
    for index in flat[flat].index:
        converted = tag(
            mapped.at[index, "secondary_domain_id"],
            mapped.at[index, "secondary_attribute_id"],
            mapped.at[index, "secondary_progression_title"],
        )
        listed.at[index] = (listed.at[index] or []) + [converted] if converted else None
    missing = pd.Series([v is None for v in listed.tolist()], index=listed.index)
    wrong_type(column, missing, "secondary_tags", "a list of tags", reasons)
    return pd.Series([v if v is not None else [] for v in listed.tolist()], index=listed.index, dtype=object)


def _tags_from_arrow(column: pd.Series, taxonomy: Taxonomy, spell: Callable[[str], str]) -> list[Any] | None:
    """Secondary tags of a clean export (Arrow `list<struct>`), converted in bulk: fields renamed, levels
    spelled as the taxonomy does, a missing domain taken from the attribute. None when the column has
    another shape (the per-value path then handles it)."""
    if not isinstance(column.dtype, pd.ArrowDtype):
        return None
    array = pa.array(column)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_list(array.type) or not pa.types.is_struct(array.type.value_type):
        return None
    values = array.values
    names = [field.name for field in values.type]

    # Tags of one export may mix spellings of a field: the first spelling with a value wins.
    spellings = [[values.field(n) for n in TAG_ALIASES[name] if n in names] for name in TAG_FIELDS]
    if any(len({spelt.type for spelt in found}) > 1 for found in spellings):
        return None  # a field spelt with values of different types: the per-value path sorts them out
    domain, attribute, level = (pc.coalesce(*found) if len(found) > 1 else (found or [None])[0] for found in spellings)
    if attribute is None or level is None or not pa.types.is_integer(attribute.type):
        return None
    if not (pa.types.is_string(level.type) or pa.types.is_large_string(level.type)):
        return None
    if domain is not None and not pa.types.is_integer(domain.type):
        return None
    attribute = attribute.cast(pa.int64())
    ids = pa.array([a.id for a in taxonomy.attributes], type=pa.int64())
    owners = pa.array([a.domain_id for a in taxonomy.attributes], type=pa.int64()).take(pc.index_in(attribute, ids))
    domain = owners if domain is None else pc.coalesce(domain.cast(pa.int64()), owners)
    distinct = pc.unique(level)
    spelled = pa.array([spell(t) if t is not None else None for t in distinct.to_pylist()], type=pa.string())
    level = spelled.take(pc.index_in(level, distinct))
    tags = pa.StructArray.from_arrays([domain, attribute, level], names=["domain_id", "attribute_id", "level"])
    return arrow_lists(pa.ListArray.from_arrays(array.offsets, tags, mask=array.is_null()))

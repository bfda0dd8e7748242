"""Raw values → typed columns: what could not be coerced is a reason (`wrong_type`, `bad_date`, `out_of_range`, …),
never an exception; clean columns stay on pandas' and Arrow's vectorised paths."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import orjson
import pandas as pd

from obs_platform.data.quarantine import Reasons, is_missing, wrong_type
from obs_platform.data.schema import INVISIBLE_CHARACTERS, STRING_DTYPE, holding_invisible_characters
from obs_platform.data.secondary_tags import coerce_secondary
from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_level_title

TEXT_FIELDS = ("child_name", "educator_id", "educator_name", "setting")
# Free text that redaction and the models read: control and invisible characters are removed from it.
CLEANED_TEXT_FIELDS = ("notes", *TEXT_FIELDS)
_URI_SPLIT = re.compile(r"[;|\s]+")
_LARGEST_ID = 2**53


def _inferred(series: pd.Series) -> str:
    """pandas' C-level type inference: lets clean columns skip the per-value Python path."""
    return pd.api.types.infer_dtype(series, skipna=True)


def _type_names(series: pd.Series) -> pd.Series:
    return pd.Series([type(v).__name__ for v in series.tolist()], index=series.index)


def coerce(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: Reasons) -> pd.DataFrame:
    typed = _coerce_values(mapped, taxonomy, reasons)
    text_columns = ["observation_id", "notes", "progression_title", *TEXT_FIELDS, "source_file"]
    return typed.astype(dict.fromkeys(text_columns, STRING_DTYPE))


def _coerce_values(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: Reasons) -> pd.DataFrame:
    typed = pd.DataFrame(index=mapped.index)
    typed["observation_id"] = _coerce_id(mapped["observation_id"], reasons)
    typed["notes"] = _coerce_text(mapped["notes"], "notes", reasons, allow_numbers=False)
    typed["domain_id"] = _coerce_domain(mapped, taxonomy, reasons)
    typed["attribute_id"] = _coerce_int(mapped["attribute_id"], "attribute_id", reasons)
    typed["progression_title"] = _coerce_level(
        _coerce_text(mapped["progression_title"], "progression_title", reasons), taxonomy
    )
    typed["child_age_months"] = _coerce_number(mapped["child_age_months"], "child_age_months", reasons)
    typed["observation_date"] = _coerce_date(mapped["observation_date"], reasons)
    for field in TEXT_FIELDS:
        typed[field] = _coerce_text(mapped[field], field, reasons)
    typed["photo_uris"] = _coerce_uris(mapped["photo_uris"], reasons)
    typed["secondary_tags"] = coerce_secondary(mapped, taxonomy, reasons)
    typed["source_file"] = mapped["source_file"]
    typed["source_line"] = mapped["source_line"]
    return typed


def without_invisible_characters(typed: pd.DataFrame, reasons: Reasons) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove control characters (but tab and line breaks) and zero-width or bidirectional format characters
    from free text: redaction marks names with a control character, and nobody can read or review what
    cannot be seen. Notes that held nothing else are quarantined rather than left empty. The values holding one
    are found by a byte scan and the pattern (`holding_invisible_characters`: five columns of 100k rows in 0.03 s
    instead of 0.08 s); Python touches only those."""
    removed: dict[str, int] = {}
    for field in CLEANED_TEXT_FIELDS:
        column = typed[field]
        holds = holding_invisible_characters(column)
        if not holds.any():
            continue
        found = pd.Series(holds, index=column.index)
        original = column[found]
        cleaned = original.str.replace(INVISIBLE_CHARACTERS, "", regex=True)
        removed[field] = len(cleaned)
        if field == "notes":
            emptied = original.index[cleaned.str.strip().str.len().eq(0) & original.str.strip().str.len().gt(0)]
            shown = original[emptied].map(lambda v: f"notes: only control or invisible characters ({_code_points(v)})")
            reasons.add(emptied, "notes", "invisible_notes", shown)
        typed[field] = column.mask(found, cleaned)
    return typed, removed


def _code_points(text: str) -> str:
    points = list(dict.fromkeys(f"U+{ord(c):04X}" for c in re.findall(INVISIBLE_CHARACTERS, text)))
    return ", ".join(points[:5]) + (", ..." if len(points) > 5 else "")


def _coerce_id(series: pd.Series, reasons: Reasons) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series.str.strip()
    if _inferred(series) in ("string", "empty"):
        return series.str.strip().astype(object)
    kinds = _type_names(series)
    ok = kinds.isin(["str", "int"])
    wrong_type(series, series.notna() & ~ok, "observation_id", "a string", reasons)
    return series.where(ok).map(lambda v: str(v).strip(), na_action="ignore").astype(object)


def _coerce_text(series: pd.Series, field: str, reasons: Reasons, allow_numbers: bool = True) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series
    if _inferred(series) in ("string", "empty"):
        return series.astype(object)
    kinds = _type_names(series)
    accepted = ["str", "int", "float"] if allow_numbers else ["str"]
    ok = kinds.isin(accepted)
    wrong_type(series, series.notna() & ~ok, field, "text", reasons)
    text = series.where(ok)
    if allow_numbers:
        text = text.map(lambda v: v if isinstance(v, str) else str(v), na_action="ignore")
    return text.astype(object)


def _coerce_number(series: pd.Series, field: str, reasons: Reasons) -> pd.Series:
    if _inferred(series) in ("integer", "floating", "mixed-integer-float", "empty", "decimal"):
        return pd.to_numeric(series).astype("Float64")
    kinds = _type_names(series)
    numeric = pd.to_numeric(series.where(kinds.isin(["int", "float", "str"])), errors="coerce")
    bad = series.notna() & numeric.isna()
    wrong_type(series, bad, field, "a number", reasons)
    return numeric.astype("Float64")


def _coerce_int(series: pd.Series, field: str, reasons: Reasons) -> pd.Series:
    number = _coerce_number(series, field, reasons)
    # Beyond 2**53 a float no longer holds every integer, and beyond 2**63 Int64 would wrap: no id is that big.
    too_large = (number.abs() > _LARGEST_ID).fillna(False).astype(bool)
    fractional = (number.notna() & (number % 1 != 0)).fillna(False).astype(bool) & ~too_large
    wrong_type(series, fractional, field, "an integer", reasons)
    shown = series[too_large].map(lambda v: f"{field}: {v!r:.60} is too large to be an id")
    reasons.add(shown.index, field, "out_of_range", shown)
    return number.where(~(fractional | too_large)).round().astype("Int64")


def _coerce_domain(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: Reasons) -> pd.Series:
    """`domain_id`, or the domain resolved from `domain_key` when an export carries only the key."""
    domain_id = _coerce_int(mapped["domain_id"], "domain_id", reasons)
    keys = {d.key: d.id for d in taxonomy.domains}
    from_key = mapped["domain_key"].map(lambda k: keys.get(str(k).lower()), na_action="ignore")
    return domain_id.fillna(pd.to_numeric(from_key, errors="coerce").astype("Int64"))


def _coerce_level(titles: pd.Series, taxonomy: Taxonomy) -> pd.Series:
    """Spell known levels exactly as the taxonomy does; unknown ones stay for the schema to reject."""
    canonical = {lvl.key: lvl.title for lvl in taxonomy.levels}
    spelled = {t: canonical.get(normalise_level_title(t), t) for t in titles.dropna().unique()}
    return titles.map(spelled).astype(object)


def _coerce_date(series: pd.Series, reasons: Reasons) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.astype("datetime64[ns]")
    if _inferred(series) in ("string", "empty"):
        text = series
    else:  # a mixed column: dates that an Arrow-read export already parsed sit beside strings
        text = series.map(lambda v: v.isoformat() if isinstance(v, dt.date) else v, na_action="ignore")
        text = text.where(_type_names(text) == "str")
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    retry = parsed.isna() & text.notna()
    if retry.any():  # UK exports write day/month/year
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", format="%d/%m/%Y")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    bad = series.notna() & parsed.isna()
    shown = series[bad].map(lambda v: f"observation_date: {v!r:.40} is not a date (YYYY-MM-DD)")
    reasons.add(shown.index, "observation_date", "bad_date", shown)
    return parsed.astype("datetime64[ns]")


def _coerce_uris(series: pd.Series, reasons: Reasons) -> pd.Series:
    def to_list(value: Any) -> list[str] | None:
        if is_missing(value):
            return []
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError:
                    return None
            else:
                return [u for u in _URI_SPLIT.split(text) if u]
        if isinstance(value, list) and all(isinstance(u, str) for u in value):
            return [u.strip() for u in value if u.strip()]
        return None

    values = series.tolist()
    lists = [v if v.__class__ is list and (not v or all(u.__class__ is str for u in v)) else to_list(v) for v in values]
    bad = pd.Series([v is None for v in lists], index=series.index)
    wrong_type(series, bad, "photo_uris", "a list of URIs", reasons)
    return pd.Series([v if v is not None else [] for v in lists], index=series.index, dtype=object)

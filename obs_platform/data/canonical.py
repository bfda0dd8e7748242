"""Raw export rows → canonical observations, or quarantine with every reason.

Steps: map the original system's field aliases (camelCase exports, the seed's snake_case canonical
records) onto canonical columns, coerce types (remembering which raw values could not be coerced),
validate with the taxonomy-bound pandera schema, then resolve duplicate ids.

Duplicate rule: copies of an observation id with identical content are one observation (the first
by source file and line is kept, the other copies are quarantined as `duplicate_exact`); copies with
different content are all quarantined as `duplicate_id_conflict`, because the platform cannot know
which label is right and a wrong label is worse than a missing one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.data.raw import PROVENANCE_COLUMNS
from obs_platform.data.schema import INVISIBLE_CHARACTERS, STRING_DTYPE, taxonomy_schema
from obs_platform.data.values import plain_value
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_level_title

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
TEXT_FIELDS = ("child_name", "educator_id", "educator_name", "setting")
CONTENT_COLUMNS = [
    "notes",
    "domain_id",
    "attribute_id",
    "progression_title",
    "child_age_months",
    "observation_date",
    "child_name",
    "educator_id",
    "educator_name",
    "setting",
    "photo_uris",
    "secondary_tags",
]
CANONICAL_COLUMNS = [
    "observation_id",
    "notes",
    "domain_id",
    "domain_key",
    "domain_name",
    "attribute_id",
    "attribute_name",
    "progression_title",
    "level_index",
    "secondary_tags",
    "child_age_months",
    "observation_date",
    "child_name",
    "educator_id",
    "educator_name",
    "setting",
    "photo_uris",
    "source_file",
    "source_line",
]
QUARANTINE_COLUMNS = [
    "source_file",
    "source_line",
    "observation_id",
    "reason_codes",
    "reasons",
    "notes",
    "child_name",
    "educator_name",
    "raw_text",
]
# pandera's built-in check names → our reason codes
_PANDERA_CODES = {"not_nullable": "missing_field", "str_length": "wrong_length", "field_uniqueness": "duplicate_id"}
_URI_SPLIT = re.compile(r"[;|\s]+")
_LARGEST_ID = 2**53
# Free text that redaction and the models read: control and invisible characters are removed from it.
CLEANED_TEXT_FIELDS = ("notes", *TEXT_FIELDS)


@dataclass
class CanonicalResult:
    canonical: pd.DataFrame
    quarantined: pd.DataFrame
    # text field → rows whose control or invisible characters were removed
    invisible_characters_removed: dict[str, int]


class _Reasons:
    """Collects (row, column, code, message) facts; cheap when rows are many and failures few."""

    def __init__(self) -> None:
        self._parts: list[pd.DataFrame] = []

    def add(self, index: pd.Index, column: str | None, code: str, message: pd.Series | str) -> None:
        if len(index) == 0:
            return
        messages = message.loc[index].astype(str).to_numpy() if isinstance(message, pd.Series) else message
        self._parts.append(pd.DataFrame({"row": index, "column": column, "code": code, "message": messages}))

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame(columns=["row", "column", "code", "message"])
        return pd.concat(self._parts, ignore_index=True)


@without_gc_pauses
def canonicalise(raw: pd.DataFrame, taxonomy: Taxonomy) -> CanonicalResult:
    """Split raw rows into canonical observations and quarantined rows; raw = canonical + quarantined."""
    if not isinstance(raw.index, pd.RangeIndex) or raw.index.start != 0 or raw.index.step != 1:
        raw = raw.reset_index(drop=True)
    reasons = _Reasons()

    parse_error = raw["parse_error"] if "parse_error" in raw else pd.Series(None, index=raw.index, dtype=object)
    unparsed = parse_error.notna()
    if unparsed.any():
        codes = parse_error[unparsed].astype(str).str.partition(":")
        for code, group in codes.groupby(0):
            reasons.add(group.index, None, str(code), group[2].str.strip())

    parsed = raw.loc[~unparsed] if unparsed.any() else raw  # copying a million clean rows costs seconds
    typed, removed = _without_invisible_characters(_coerce(_map_aliases(parsed), taxonomy, reasons), reasons)
    _validate(typed, taxonomy, reasons)

    found = reasons.frame()
    bad_rows = pd.Index(found["row"].unique())
    valid = typed.drop(index=bad_rows, errors="ignore") if len(bad_rows) else typed
    kept = _resolve_duplicates(valid, reasons)

    canonical = _with_names(kept, taxonomy)[CANONICAL_COLUMNS]
    if len(canonical) != len(typed):
        canonical = canonical.reset_index(drop=True)
    quarantined = _quarantine_table(raw, typed, reasons.frame())
    return CanonicalResult(canonical=canonical, quarantined=quarantined, invisible_characters_removed=removed)


# ----- aliases and coercion ------------------------------------------------------------------------


def _from_arrow(column: pd.Series) -> pd.Series:
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
    return pd.Series(_arrow_lists(column), index=column.index, dtype=object)


def _arrow_lists(column: pd.Series) -> list[Any]:
    """Python values of an Arrow list column, converting only the (few) non-empty lists element by element."""
    array = pa.array(column)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        return array.to_pylist()
    offsets = np.asarray(array.offsets)
    lengths = np.diff(offsets)
    values = array.values.to_pylist()
    valid = np.asarray(array.is_valid())
    out: list[Any] = [[] if ok else None for ok in valid.tolist()]
    for row in np.flatnonzero(lengths).tolist():
        out[row] = values[offsets[row] : offsets[row + 1]]
    return out


def _map_aliases(parsed: pd.DataFrame) -> pd.DataFrame:
    mapped = pd.DataFrame(index=parsed.index)
    for field, aliases in FIELD_ALIASES.items():
        present = [a for a in aliases if a in parsed.columns]
        if not present:
            mapped[field] = pd.Series(None, index=parsed.index, dtype=object)
            continue
        # Secondary tags stay Arrow-typed until `_coerce_secondary`, which converts them with the taxonomy.
        column = (
            parsed[present[0]] if field == "secondary_tags" and len(present) == 1 else _from_arrow(parsed[present[0]])
        )
        for alias in present[1:]:
            column = column.astype(object).where(column.notna(), _from_arrow(parsed[alias]).astype(object))
        mapped[field] = column
    mapped["source_file"] = parsed["source_file"].astype(str)
    mapped["source_line"] = pd.to_numeric(parsed["source_line"], errors="coerce").astype("Int64")
    return mapped


def _inferred(series: pd.Series) -> str:
    """pandas' C-level type inference: lets clean columns skip the per-value Python path."""
    return pd.api.types.infer_dtype(series, skipna=True)


def _type_names(series: pd.Series) -> pd.Series:
    return pd.Series([type(v).__name__ for v in series.tolist()], index=series.index)


def _coerce(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: _Reasons) -> pd.DataFrame:
    typed = _coerce_values(mapped, taxonomy, reasons)
    text_columns = ["observation_id", "notes", "progression_title", *TEXT_FIELDS, "source_file"]
    return typed.astype(dict.fromkeys(text_columns, STRING_DTYPE))


def _coerce_values(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: _Reasons) -> pd.DataFrame:
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
    typed["secondary_tags"] = _coerce_secondary(mapped, taxonomy, reasons)
    typed["source_file"] = mapped["source_file"]
    typed["source_line"] = mapped["source_line"]
    return typed


def _without_invisible_characters(typed: pd.DataFrame, reasons: _Reasons) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove control characters (but tab and line breaks) and zero-width or bidirectional format characters
    from free text: redaction marks names with a control character, and nobody can read or review what
    cannot be seen. Notes that held nothing else are quarantined rather than left empty. One RE2 scan per
    column; Python touches only the rows that hold such characters."""
    removed: dict[str, int] = {}
    for field in CLEANED_TEXT_FIELDS:
        column = typed[field]
        found = column.str.contains(INVISIBLE_CHARACTERS, regex=True).fillna(False).astype(bool)
        if not found.any():
            continue
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


def _wrong_type(series: pd.Series, bad: pd.Series, field: str, expected: str, reasons: _Reasons) -> None:
    shown = series[bad].map(lambda v: f"{field}: expected {expected}, got {type(v).__name__} {v!r:.60}")
    reasons.add(shown.index, field, "wrong_type", shown)


def _coerce_id(series: pd.Series, reasons: _Reasons) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series.str.strip()
    if _inferred(series) in ("string", "empty"):
        return series.str.strip().astype(object)
    kinds = _type_names(series)
    ok = kinds.isin(["str", "int"])
    _wrong_type(series, series.notna() & ~ok, "observation_id", "a string", reasons)
    return series.where(ok).map(lambda v: str(v).strip(), na_action="ignore").astype(object)


def _coerce_text(series: pd.Series, field: str, reasons: _Reasons, allow_numbers: bool = True) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series
    if _inferred(series) in ("string", "empty"):
        return series.astype(object)
    kinds = _type_names(series)
    accepted = ["str", "int", "float"] if allow_numbers else ["str"]
    ok = kinds.isin(accepted)
    _wrong_type(series, series.notna() & ~ok, field, "text", reasons)
    text = series.where(ok)
    if allow_numbers:
        text = text.map(lambda v: v if isinstance(v, str) else str(v), na_action="ignore")
    return text.astype(object)


def _coerce_number(series: pd.Series, field: str, reasons: _Reasons) -> pd.Series:
    if _inferred(series) in ("integer", "floating", "mixed-integer-float", "empty", "decimal"):
        return pd.to_numeric(series).astype("Float64")
    kinds = _type_names(series)
    numeric = pd.to_numeric(series.where(kinds.isin(["int", "float", "str"])), errors="coerce")
    bad = series.notna() & numeric.isna()
    _wrong_type(series, bad, field, "a number", reasons)
    return numeric.astype("Float64")


def _coerce_int(series: pd.Series, field: str, reasons: _Reasons) -> pd.Series:
    number = _coerce_number(series, field, reasons)
    # Beyond 2**53 a float no longer holds every integer, and beyond 2**63 Int64 would wrap: no id is that big.
    too_large = (number.abs() > _LARGEST_ID).fillna(False).astype(bool)
    fractional = (number.notna() & (number % 1 != 0)).fillna(False).astype(bool) & ~too_large
    _wrong_type(series, fractional, field, "an integer", reasons)
    shown = series[too_large].map(lambda v: f"{field}: {v!r:.60} is too large to be an id")
    reasons.add(shown.index, field, "out_of_range", shown)
    return number.where(~(fractional | too_large)).round().astype("Int64")


def _coerce_domain(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: _Reasons) -> pd.Series:
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


def _coerce_date(series: pd.Series, reasons: _Reasons) -> pd.Series:
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


def _coerce_uris(series: pd.Series, reasons: _Reasons) -> pd.Series:
    def to_list(value: Any) -> list[str] | None:
        if _missing(value):
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
    _wrong_type(series, bad, "photo_uris", "a list of URIs", reasons)
    return pd.Series([v if v is not None else [] for v in lists], index=series.index, dtype=object)


def _coerce_secondary(mapped: pd.DataFrame, taxonomy: Taxonomy, reasons: _Reasons) -> pd.Series:
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
        if _missing(value):
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
                raw.get("domainId", raw.get("domain_id")),
                raw.get("attributeId", raw.get("attribute_id")),
                raw.get("progressionTitle", raw.get("progression_title", raw.get("level"))),
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
        values = _from_arrow(column).tolist()
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
    _wrong_type(column, missing, "secondary_tags", "a list of tags", reasons)
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

    def field(*aliases: str) -> pa.Array | None:
        return next((values.field(n) for n in aliases if n in names), None)

    domain, attribute = field("domainId", "domain_id"), field("attributeId", "attribute_id")
    level = field("progressionTitle", "progression_title", "level")
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
    return _arrow_lists(pa.ListArray.from_arrays(array.offsets, tags, mask=array.is_null()))


# ----- validation -------------------------------------------------------------------------------------


def _validate(typed: pd.DataFrame, taxonomy: Taxonomy, reasons: _Reasons) -> None:
    """Run the taxonomy schema lazily; report each failure unless coercion already explained that cell."""
    if typed.empty:
        return
    schema = taxonomy_schema(taxonomy)
    try:
        schema.validate(typed, lazy=True)
        return
    except pandera.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    already = set(zip(reasons.frame()["row"], reasons.frame()["column"]))
    checks = _checks_by_identifier(schema)
    failures = failures.assign(
        code=failures["check"].map(lambda c: _PANDERA_CODES.get(checks.get(c, (c, c))[0], checks.get(c, (c, c))[0])),
        row=pd.to_numeric(failures["index"], errors="coerce").astype(int),
    )
    whole_row = failures["schema_context"] == "DataFrameSchema"
    # Row-level checks are reported once per column by pandera: report them once per row.
    for check, group in failures[whole_row].groupby("check", sort=False):
        index = pd.Index(group["row"].unique())
        code, detail = checks.get(check, (check, check))
        reasons.add(index, None, code, _row_message(typed.loc[index], detail))
    for (column, code), group in failures[~whole_row].groupby(["column", "code"], sort=False):
        index = pd.Index([r for r in group["row"].unique() if (r, column) not in already])
        if code == "missing_field":
            reasons.add(index, column, code, f"{column}: is missing")
            continue
        detail = checks.get(group["check"].iloc[0], (code, code))[1]
        values = typed.loc[index, column]
        reasons.add(index, column, code, values.map(lambda v, c=column, d=detail: f"{c}: {d} (value {_short(v)})"))


def _checks_by_identifier(schema: type[pandera.DataFrameModel]) -> dict[str, tuple[str, str]]:
    """pandera names a failing check by its error text when it has one: map that back to (name, error)."""
    compiled = schema.to_schema()
    found: dict[str, tuple[str, str]] = {}
    for check in [*compiled.checks, *(c for column in compiled.columns.values() for c in column.checks)]:
        for identifier in (check.name, check.error):
            if identifier:
                found[identifier] = (check.name, check.error or check.name)
    return found


def _row_message(rows: pd.DataFrame, detail: str) -> pd.Series:
    def describe(row: pd.Series) -> str:
        return (
            f"{detail}: domain {_short(row['domain_id'])}, attribute {_short(row['attribute_id'])}, "
            f"level {_short(row['progression_title'])}"
        )

    return rows.apply(describe, axis=1) if len(rows) else pd.Series(dtype=object)


def _short(value: Any) -> str:
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return "missing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----- duplicates, derived columns, quarantine ---------------------------------------------------------


def _record_hash(frame: pd.DataFrame) -> pd.Series:
    """A content fingerprint (labels, notes, context) that ignores where the row came from."""
    if frame.empty:
        return pd.Series(dtype=object, index=frame.index)
    content = frame[CONTENT_COLUMNS].copy()
    for column in ("photo_uris", "secondary_tags"):
        content[column] = [orjson.dumps(v).decode() if v else "" for v in content[column].tolist()]
    hashed = pd.util.hash_pandas_object(content, index=False)
    return hashed.map("{:016x}".format).astype(object)


def _resolve_duplicates(valid: pd.DataFrame, reasons: _Reasons) -> pd.DataFrame:
    """Rows arrive in file and line order, so "first" is the first by source file and line."""
    repeated = valid[valid["observation_id"].duplicated(keep=False)]
    if repeated.empty:
        return valid
    repeated = repeated.assign(record_hash=_record_hash(repeated))
    drop: list[int] = []
    for observation_id, group in repeated.groupby("observation_id", sort=False):
        places = [f"{f}:{line}" for f, line in zip(group["source_file"], group["source_line"])]
        if group["record_hash"].nunique() == 1:
            others = group.index[1:]
            message = f"observation_id {observation_id!r}: exact copy of {places[0]}, kept once"
            reasons.add(others, "observation_id", "duplicate_exact", message)
            drop.extend(others)
        else:
            message = (
                f"observation_id {observation_id!r} appears {len(group)} times with different content "
                f"({', '.join(places[:5])}); none is trusted"
            )
            reasons.add(group.index, "observation_id", "duplicate_id_conflict", message)
            drop.extend(group.index)
    return valid.drop(index=drop)


def _with_names(frame: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    domains = {d.id: d for d in taxonomy.domains}
    level_index = {lvl.title: i for i, lvl in enumerate(taxonomy.levels)}
    return frame.assign(
        domain_key=frame["domain_id"].map({i: d.key for i, d in domains.items()}).astype(STRING_DTYPE),
        domain_name=frame["domain_id"].map({i: d.name for i, d in domains.items()}).astype(STRING_DTYPE),
        attribute_name=frame["attribute_id"].map({a.id: a.name for a in taxonomy.attributes}).astype(STRING_DTYPE),
        level_index=frame["progression_title"].map(level_index).astype("Int64"),
    )


def _quarantine_table(raw: pd.DataFrame, typed: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    if found.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    grouped = found.groupby("row", sort=True).agg(
        reason_codes=("code", lambda c: sorted(set(c))),
        reasons=("message", lambda m: [f"{code}: {msg}" for code, msg in zip(found.loc[m.index, "code"], m)]),
    )
    rows = raw.loc[grouped.index]
    payload_columns = [c for c in raw.columns if c not in PROVENANCE_COLUMNS and c != "source_line"]

    def original_text(index: int) -> str:
        if isinstance(raw.at[index, "raw_text"], str):
            return raw.at[index, "raw_text"]
        record = {c: plain_value(raw.at[index, c]) for c in payload_columns if _present(raw.at[index, c])}
        try:
            return orjson.dumps(record, default=str).decode()
        except TypeError:  # an integer beyond 64 bits, which only the json module writes
            return json.dumps(record, default=str, ensure_ascii=False)

    table = pd.DataFrame(
        {
            "source_file": rows["source_file"].astype(str),
            "source_line": pd.to_numeric(rows["source_line"], errors="coerce").astype("Int64"),
            "observation_id": typed["observation_id"].reindex(grouped.index).astype(object),
            "reason_codes": grouped["reason_codes"],
            "reasons": grouped["reasons"],
            "notes": typed["notes"].reindex(grouped.index).astype(object),
            "child_name": typed["child_name"].reindex(grouped.index).astype(object),
            "educator_name": typed["educator_name"].reindex(grouped.index).astype(object),
            "raw_text": [original_text(i) for i in grouped.index],
        }
    )
    return table.reset_index(drop=True)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _present(value: Any) -> bool:
    if isinstance(value, (list, dict, np.ndarray)):
        return True
    return value is not None and not pd.isna(value)

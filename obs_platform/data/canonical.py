"""Raw export rows → canonical observations, or quarantine with every reason.

Steps: map the original system's field aliases (camelCase exports, the seed's snake_case canonical
records) onto canonical columns (`aliases`), coerce types, remembering which raw values could not be coerced
(`coercion`, `secondary_tags`), validate with the taxonomy-bound pandera schema, then resolve duplicate ids; every
rejected row goes to the quarantine with all its reasons (`quarantine`).

Duplicate rule: copies of an observation id with identical content are one observation (the first
by source file and line is kept, the other copies are quarantined as `duplicate_exact`); copies with
different content are all quarantined as `duplicate_id_conflict`, because the platform cannot know
which label is right and a wrong label is worse than a missing one. Exports canonicalised one by one
(`parts`) apply the rule within each export, then across exports (`resolve_duplicates_across_exports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pandera.pandas as pandera

from obs_platform.data.aliases import map_aliases
from obs_platform.data.coercion import coerce, without_invisible_characters
from obs_platform.data.id_hashes import id_hashes
from obs_platform.data.quarantine import Reasons, quarantine_table
from obs_platform.data.schema import STRING_DTYPE, taxonomy_schema
from obs_platform.gc_pause import without_gc_pauses
from obs_platform.taxonomy import Taxonomy

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
# pandera's built-in check names → our reason codes
_PANDERA_CODES = {"not_nullable": "missing_field", "str_length": "wrong_length", "field_uniqueness": "duplicate_id"}


@dataclass
class CanonicalResult:
    canonical: pd.DataFrame
    quarantined: pd.DataFrame
    # text field → rows whose control or invisible characters were removed
    invisible_characters_removed: dict[str, int]


@without_gc_pauses
def canonicalise(raw: pd.DataFrame, taxonomy: Taxonomy) -> CanonicalResult:
    """Split raw rows into canonical observations and quarantined rows; raw = canonical + quarantined."""
    if not isinstance(raw.index, pd.RangeIndex) or raw.index.start != 0 or raw.index.step != 1:
        raw = raw.reset_index(drop=True)
    reasons = Reasons()

    parse_error = raw["parse_error"] if "parse_error" in raw else pd.Series(None, index=raw.index, dtype=object)
    unparsed = parse_error.notna()
    if unparsed.any():
        codes = parse_error[unparsed].astype(str).str.partition(":")
        for code, group in codes.groupby(0):
            reasons.add(group.index, None, str(code), group[2].str.strip())

    parsed = raw.loc[~unparsed] if unparsed.any() else raw  # copying a million clean rows costs seconds
    typed, removed = without_invisible_characters(coerce(map_aliases(parsed), taxonomy, reasons), reasons)
    _validate(typed, taxonomy, reasons)

    found = reasons.frame()
    bad_rows = pd.Index(found["row"].unique())
    valid = typed.drop(index=bad_rows, errors="ignore") if len(bad_rows) else typed
    kept = _resolve_duplicates(valid, reasons)

    canonical = _with_names(kept, taxonomy)[CANONICAL_COLUMNS]
    if len(canonical) != len(typed):
        canonical = canonical.reset_index(drop=True)
    quarantined = quarantine_table(raw, typed, reasons.frame())
    return CanonicalResult(canonical=canonical, quarantined=quarantined, invisible_characters_removed=removed)


# ----- validation -------------------------------------------------------------------------------------


def _validate(typed: pd.DataFrame, taxonomy: Taxonomy, reasons: Reasons) -> None:
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


# ----- duplicates and derived columns ------------------------------------------------------------------


def _record_hash(frame: pd.DataFrame) -> pd.Series:
    """A content fingerprint (labels, notes, context) that ignores where the row came from."""
    if frame.empty:
        return pd.Series(dtype=object, index=frame.index)
    content = frame[CONTENT_COLUMNS].copy()
    for column in ("photo_uris", "secondary_tags"):
        content[column] = [orjson.dumps(v).decode() if v else "" for v in content[column].tolist()]
    hashed = pd.util.hash_pandas_object(content, index=False)
    return hashed.map("{:016x}".format).astype(object)


def _resolve_duplicates(valid: pd.DataFrame, reasons: Reasons) -> pd.DataFrame:
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


def resolve_duplicates_across_exports(canonical: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The duplicate rule over the canonical rows of several exports, each already free of its own copies:
    the rows kept, and the quarantine rows of the others (their `raw_text` is the canonical record, the
    export's own text being in its file)."""
    if not _may_repeat(canonical["observation_id"]):
        return canonical, quarantine_table(canonical, canonical, Reasons().frame())
    reasons = Reasons()
    kept = _resolve_duplicates(canonical, reasons)
    quarantined = quarantine_table(canonical.assign(raw_text=None), canonical, reasons.frame())
    return kept.reset_index(drop=True), quarantined


def _may_repeat(ids: pd.Series) -> bool:
    """Whether an id may appear twice. Never when the ids' hashes are all distinct: a sort of a million integers, a
    fraction of the cost of hashing a million strings into a table; when two hashes agree, pandas says."""
    hashes = np.sort(id_hashes(ids))
    return bool((hashes[1:] == hashes[:-1]).any()) and bool(ids.duplicated().any())


def _with_names(frame: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    domains = {d.id: d for d in taxonomy.domains}
    level_index = {lvl.title: i for i, lvl in enumerate(taxonomy.levels)}
    return frame.assign(
        domain_key=frame["domain_id"].map({i: d.key for i, d in domains.items()}).astype(STRING_DTYPE),
        domain_name=frame["domain_id"].map({i: d.name for i, d in domains.items()}).astype(STRING_DTYPE),
        attribute_name=frame["attribute_id"].map({a.id: a.name for a in taxonomy.attributes}).astype(STRING_DTYPE),
        level_index=frame["progression_title"].map(level_index).astype("Int64"),
    )

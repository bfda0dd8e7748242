"""The quarantine: reasons collected per row and column while rows are read, and the table of rejected rows with
every reason and the original text."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pandas as pd

from obs_platform.data.raw import PROVENANCE_COLUMNS
from obs_platform.data.values import plain_value

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


class Reasons:
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


def wrong_type(series: pd.Series, bad: pd.Series, field: str, expected: str, reasons: Reasons) -> None:
    shown = series[bad].map(lambda v: f"{field}: expected {expected}, got {type(v).__name__} {v!r:.60}")
    reasons.add(shown.index, field, "wrong_type", shown)


def quarantine_table(raw: pd.DataFrame, typed: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
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
        record = {c: plain_value(raw.at[index, c]) for c in payload_columns if is_present(raw.at[index, c])}
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


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def is_present(value: Any) -> bool:
    if isinstance(value, (list, dict, np.ndarray)):
        return True
    return value is not None and not pd.isna(value)

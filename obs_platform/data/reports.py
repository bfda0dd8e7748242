"""Summaries of the data assets for people: tables and markdown an analyst reads in the Dagster UI."""

from __future__ import annotations

import pandas as pd

from obs_platform.data.splits import SPLITS


def rows_per_file(raw: pd.DataFrame) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame(columns=["source_file", "rows", "unparseable"])
    grouped = raw.groupby("source_file")
    return pd.DataFrame(
        {"rows": grouped.size(), "unparseable": grouped["parse_error"].apply(lambda s: int(s.notna().sum()))}
    ).reset_index()


def quarantine_reasons(quarantined: pd.DataFrame) -> pd.DataFrame:
    """One row per reason code: how many rows carry it and one example message."""
    if quarantined.empty:
        return pd.DataFrame(columns=["reason_code", "rows", "example"])
    exploded = quarantined[["reasons"]].explode("reasons").dropna()
    exploded["reason_code"] = exploded["reasons"].str.partition(":")[0]
    summary = exploded.groupby("reason_code").agg(rows=("reasons", "size"), example=("reasons", "first"))
    return summary.sort_values("rows", ascending=False).reset_index()


def label_distribution(frame: pd.DataFrame) -> pd.DataFrame:
    """Observations per domain/attribute, one column per split when the frame has splits."""
    keys = (
        ["domain_key", "attribute_id", "attribute_name"]
        if "attribute_name" in frame
        else ["domain_key", "attribute_id"]
    )
    if "split" not in frame:
        return frame.groupby(keys).size().rename("rows").reset_index()
    table = frame.groupby([*keys, "split"], observed=True).size().unstack("split", fill_value=0)
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def level_distribution(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["level_index", "progression_title"]).size().rename("rows").reset_index()


def markdown_preview(frame: pd.DataFrame, columns: list[str], rows: int = 5, width: int = 80) -> str:
    """The first rows as a markdown table, long text shortened so the table stays readable."""
    shown = frame[columns].head(rows).copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v: _shorten(v, width))
    return shown.to_markdown(index=False)


def _shorten(value: object, width: int) -> str:
    text = str(value).replace("\n", " ").replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"

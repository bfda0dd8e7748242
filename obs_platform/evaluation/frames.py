"""Labelled observations and predictions of them, joined into the table the metrics read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from obs_platform.evaluation.metrics import PREDICTION_COLUMNS
from obs_platform.predictions import Instance, Prediction
from obs_platform.taxonomy import Taxonomy


@dataclass(frozen=True)
class LabelledObservation:
    """A split record reduced to what evaluation needs: the input and the truth."""

    observation_id: str
    text: str
    child_age_months: float | None
    domain: str
    attribute: int
    level: str | None  # None where the source has no level (the external comment bank)
    tags: tuple[int, ...]
    observation_date: dt.date | None = None  # unknown for the external comment bank

    @classmethod
    def from_split_record(cls, record: dict[str, Any]) -> LabelledObservation:
        secondary = tuple(int(t["attribute_id"]) for t in record.get("secondary_tags") or [])
        age = record.get("child_age_months")
        return cls(
            observation_id=str(record["observation_id"]),
            text=str(record["text"]),
            child_age_months=None if age is None or age != age else float(age),
            observation_date=dt.date.fromisoformat(day) if (day := record.get("observation_date")) else None,
            domain=str(record["domain_key"]),
            attribute=int(record["attribute_id"]),
            level=record.get("progression_title"),
            tags=(int(record["attribute_id"]), *secondary),
        )

    def instance(self) -> Instance:
        return Instance(self.text, self.child_age_months, observation_date=self.observation_date)


def prediction_frame(
    observations: Sequence[LabelledObservation], predictions: Sequence[Prediction], taxonomy: Taxonomy
) -> pd.DataFrame:
    """One row per observation, truth beside prediction (levels as indices on the scale; -1 when unknown)."""
    if len(observations) != len(predictions):
        raise ValueError(f"{len(observations)} observations but {len(predictions)} predictions")

    def level_index(title: str | None) -> int:
        try:
            return taxonomy.level_index(title) if title else -1
        except KeyError:
            return -1

    rows = [
        {
            "observation_id": o.observation_id,
            "true_domain": o.domain,
            "true_attribute": o.attribute,
            "true_level": level_index(o.level),
            "true_tags": list(o.tags),
            "pred_domain": p.domain,
            "pred_attribute": p.attribute_id,
            "pred_level": level_index(p.level),
            "pred_top_k": [s.attribute_id for s in p.top_k] or [p.attribute_id],
            "pred_tags": list(p.tags) or [p.attribute_id],
            "confidence": p.confidence,
        }
        for o, p in zip(observations, predictions)
    ]
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)).astype(
        {k: v for k, v in PREDICTION_COLUMNS.items() if v != "object"}
    )

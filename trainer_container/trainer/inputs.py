"""What the model reads for one observation. The platform builds serving requests the same way
(`obs_platform.data.formats.user_text`); a test keeps the two identical."""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

_AGE_LINE = "\nChild's age: "
_DATE_LINE = "\nObserved on: "


class ModelInput(NamedTuple):
    """A rendered model input read back: the note, the child's age in months and the observation's date."""

    note: str
    child_age_months: float | None
    observation_date: dt.date | None


def model_input(text: str, child_age_months: float | None, observation_date: dt.date | str | None = None) -> str:
    """The note, then the age (whole months) and the date of the observation (ISO), each when known."""
    rendered = f"Observation: {text}"
    if child_age_months is not None and not (isinstance(child_age_months, float) and math.isnan(child_age_months)):
        rendered += f"{_AGE_LINE}{round(child_age_months)} months"
    if observation_date is not None and observation_date == observation_date:  # NaT is not equal to itself
        rendered += f"{_DATE_LINE}{dt.date.fromisoformat(str(observation_date)[:10]).isoformat()}"
    return rendered


def split_model_input(rendered: str) -> ModelInput:
    """The note, the age and the date back out of `model_input`'s text (the hybrid reads them as numbers)."""
    text = rendered.removeprefix("Observation: ")
    observation_date = None
    head, found, tail = text.rpartition(_DATE_LINE)
    if found:
        try:
            observation_date = dt.date.fromisoformat(tail)
            text = head
        except ValueError:
            pass
    head, found, tail = text.rpartition(_AGE_LINE)
    if found and tail.endswith(" months") and tail.removesuffix(" months").isdigit():
        return ModelInput(head, float(tail.removesuffix(" months")), observation_date)
    return ModelInput(text, None, observation_date)

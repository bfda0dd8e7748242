"""What the model reads for one observation. The platform builds serving requests the same way
(`obs_platform.data.formats.user_text`); a test keeps the two identical."""

from __future__ import annotations

import math

_AGE_LINE = "\nChild's age: "


def model_input(text: str, child_age_months: float | None) -> str:
    rendered = f"Observation: {text}"
    if child_age_months is not None and not (isinstance(child_age_months, float) and math.isnan(child_age_months)):
        rendered += f"{_AGE_LINE}{round(child_age_months)} months"
    return rendered


def split_model_input(rendered: str) -> tuple[str, float | None]:
    """The note and the age back out of `model_input`'s text (the hybrid reads the age as a number)."""
    text = rendered.removeprefix("Observation: ")
    head, found, tail = text.rpartition(_AGE_LINE)
    if found and tail.endswith(" months") and tail.removesuffix(" months").isdigit():
        return head, float(tail.removesuffix(" months"))
    return text, None

"""What the model reads for one observation. The platform builds serving requests the same way
(`obs_platform.data.formats.user_text`); a test keeps the two identical."""

from __future__ import annotations

import math


def model_input(text: str, child_age_months: float | None) -> str:
    rendered = f"Observation: {text}"
    if child_age_months is not None and not (isinstance(child_age_months, float) and math.isnan(child_age_months)):
        rendered += f"\nChild's age: {round(child_age_months)} months"
    return rendered

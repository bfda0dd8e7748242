"""Plain Python values from what pandas and Arrow hand back."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain_value(value: Any) -> Any:
    """Numpy arrays (Arrow lists, parquet list columns) become lists, recursively through dicts."""
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    return value

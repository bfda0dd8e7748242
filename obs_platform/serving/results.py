"""What a prediction is, on both sides of the wire: the predictor returns these, the client parses them.

Kept free of torch so an app that only calls the endpoint never imports the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instance:
    notes: str
    child_age_months: float | None = None
    child_name: str | None = None
    image_uri: str | None = None


@dataclass(frozen=True)
class Suggestion:
    domain: str
    domain_name: str
    attribute: str
    attribute_id: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    domain: str
    domain_name: str
    attribute: str
    attribute_id: int
    level: str
    confidence: float
    level_confidence: float
    top_k: list[Suggestion] = field(default_factory=list)

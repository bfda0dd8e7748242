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
    confident: bool = False  # calibrated probability at or above its domain's threshold


@dataclass(frozen=True)
class Prediction:
    """One suggestion for one observation.

    `confidence` is calibrated when the model version carries a calibration (`confident` then says whether it
    reaches the domain's threshold); `tags` are every attribute the model gives the observation, primary
    first. `status` is `ok` for a classifier, and for a generative model says how its answer was read: `ok`
    (named a label exactly), `repaired` (moved to the nearest valid label; `problem` says how) or `invalid`
    (no label: the label fields are empty, confidence is 0 and `problem` says why).
    """

    domain: str
    domain_name: str
    attribute: str
    attribute_id: int
    level: str
    confidence: float
    level_confidence: float
    top_k: list[Suggestion] = field(default_factory=list)
    confident: bool = False
    tags: list[int] = field(default_factory=list)
    status: str = "ok"
    problem: str = ""

    @classmethod
    def invalid(cls, problem: str) -> Prediction:
        return cls("", "", "", 0, "", 0.0, 0.0, [], status="invalid", problem=problem)

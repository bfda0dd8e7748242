"""What a prediction is, on both sides of the wire and on both sides of the platform: the predictor returns these,
the client parses them, evaluation scores them; and the calibration a classifier version carries, which
evaluation fits and the predictor applies (its file's place in a version is the registry's,
`ModelRegistry.calibration_path`).

Kept free of torch so an app that only calls the endpoint never imports the model stack, and free of both serving
and evaluation, which meet here without importing each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field

from obs_platform.taxonomy import Taxonomy


@dataclass(frozen=True)
class Instance:
    notes: str
    child_age_months: float | None = None
    child_name: str | None = None
    image_uri: str | None = None
    observation_date: dt.date | None = None  # with the age: the child's school year and the term

    @property
    def fingerprint(self) -> str:
        """A digest of everything the model is given: an answer kept for an observation is its answer again only
        while the observation's instance has the same fingerprint."""
        day = self.observation_date.isoformat() if self.observation_date else None
        given = [self.notes, self.child_age_months, self.child_name, self.image_uri, day]
        return hashlib.sha256(json.dumps(given, ensure_ascii=False).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Suggestion:
    domain: str
    domain_name: str
    attribute: str
    attribute_id: int
    probability: float
    confident: bool = False  # calibrated probability at or above its domain's threshold

    @classmethod
    def of(cls, taxonomy: Taxonomy, attribute_id: int, probability: float, confident: bool = False) -> Suggestion:
        """The attribute decides the domain: an attribute belongs to exactly one domain of the taxonomy."""
        attribute = taxonomy.attribute(attribute_id)
        domain = taxonomy.domain(attribute.domain_id)
        return cls(domain.key, domain.name, attribute.name, attribute.id, round(probability, 4), confident)


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
    prediction_id: str = ""  # the endpoint's name for this answer (feedback on it names it)

    @classmethod
    def ranked(cls, suggestions: list[Suggestion], level: str, level_confidence: float, **extra: object) -> Prediction:
        """The prediction whose label is the first of `suggestions` (ranked, most probable first)."""
        best = suggestions[0]
        return cls(
            domain=best.domain,
            domain_name=best.domain_name,
            attribute=best.attribute,
            attribute_id=best.attribute_id,
            level=level,
            confidence=round(best.probability, 4),
            level_confidence=round(level_confidence, 4),
            top_k=suggestions,
            confident=best.confident,
            **extra,  # type: ignore[arg-type]
        )

    @classmethod
    def from_dict(cls, data: dict) -> Prediction:
        """A prediction as the serving app writes it (`asdict`); its ids as ints again (JSON through a protobuf Value,
        as a Vertex batch job returns it, holds every number as a double)."""
        top_k = [Suggestion(**{**s, "attribute_id": int(s["attribute_id"])}) for s in data.get("top_k", [])]
        return cls(
            **{
                **data,
                "attribute_id": int(data["attribute_id"]),
                "tags": [int(tag) for tag in data.get("tags", [])],
                "top_k": top_k,
            }
        )

    @classmethod
    def invalid(cls, problem: str) -> Prediction:
        return cls("", "", "", 0, "", 0.0, 0.0, [], status="invalid", problem=problem)


@dataclass(frozen=True)
class KeptAnswer:
    """A model version's answer for one observation, with the fingerprint of the instance it answered
    (`Instance.fingerprint`): the answer holds again while the observation reads the same."""

    fingerprint: str
    prediction: Prediction


@dataclass(frozen=True)
class Calibration:
    """Temperatures and per-domain confidence thresholds of one classifier version (fitted on the validation split
    by `obs_platform.evaluation.calibration`)."""

    attribute_temperature: float
    level_temperature: float
    thresholds: dict[str, float]  # domain key → calibrated probability from which a suggestion is confident
    target_precision: float
    validation: dict[str, float] = field(default_factory=dict)  # ECE before/after, examples
    test: dict[str, float | None] = field(default_factory=dict)  # how it carries over (reported, never fitted)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Calibration:
        return cls(**json.loads(data))

    def threshold(self, domain: str) -> float:
        return self.thresholds.get(domain, 1.01)

"""The inference client for the model family the platform serves by default (`served_model`'s decision): an
educator's app asks `served_classifier` rather than naming an endpoint, so a new decision moves every caller.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from obs_platform.data.redaction import Roster
from obs_platform.serving.client import ObservationClassifier
from obs_platform.settings import ROSTER_PATH
from obs_platform.storage import Storage
from obs_platform.taxonomy import Taxonomy

if TYPE_CHECKING:
    from obs_platform.cloud.vertex import VertexSettings

SERVED_MODEL_PATH = "serving/served_model.json"  # the decision, where clients and people read it


@dataclass(frozen=True)
class ServedModelDecision:
    """The family the inference client uses by default (evaluation's choice), and where its model answers."""

    family: str
    model_version: str
    reason: str
    compared: tuple[dict[str, Any], ...]
    address: str = ""  # where the chosen model answers: a URL, or a Vertex endpoint's resource name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ServedModelDecision:
        return cls(**{**value, "compared": tuple(value["compared"])})


class NoServedModel(LookupError):
    """No served-model decision has been recorded under this storage root yet."""


def served_model(home: Storage) -> ServedModelDecision:
    """The recorded decision: which family, which version, where it answers and why."""
    if not home.exists(SERVED_MODEL_PATH):
        raise NoServedModel(f"no {home.uri(SERVED_MODEL_PATH)} yet: materialise `served_model` (it follows evaluation)")
    return ServedModelDecision.from_dict(json.loads(home.read_bytes(SERVED_MODEL_PATH)))


def served_classifier(
    home: Storage, taxonomy: Taxonomy, *, vertex: VertexSettings | None = None, token: str | None = None
) -> ObservationClassifier:
    """A client of the served model: the local endpoint (with its bearer `token`), the open-source champion's Vertex
    endpoint, or the tuned Gemini's endpoint (requests redacted with the data set's roster, as the batch evaluation's
    were); `vertex` is needed for the last two."""
    decision = served_model(home)
    if decision.address.startswith(("http://", "https://")):
        if token is None:
            raise ValueError(f"the served model answers at {decision.address}, which needs its bearer token")
        return ObservationClassifier.for_local_endpoint(decision.address, token)
    if vertex is None:
        raise ValueError(f"the served model is on Vertex AI ({decision.address}): pass the Vertex settings")
    from obs_platform.cloud.transports import GeminiTransport, VertexEndpointTransport

    if decision.family == "gemini":
        roster = Roster.from_json(home.read_bytes(ROSTER_PATH)) if home.exists(ROSTER_PATH) else None
        return ObservationClassifier(GeminiTransport(vertex, decision.address, taxonomy, roster))
    return ObservationClassifier(VertexEndpointTransport(vertex, decision.address))

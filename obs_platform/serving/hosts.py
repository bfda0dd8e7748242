"""Where the champion is served: one protocol, a local process or a Vertex AI endpoint behind it.

`serve` is idempotent: a host already serving the version at the same revision (its calibration) leaves it alone,
so re-materialising the endpoint asset costs nothing and never interrupts requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from obs_platform.serving import endpoint
from obs_platform.serving.client import ObservationClassifier
from obs_platform.training.registry import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class ServedModel:
    """Where a version is served and a client for it."""

    address: str  # a URL, or a Vertex endpoint's resource name
    model_version: str
    restarted: bool  # whether this call (re)deployed it
    client: ObservationClassifier
    details: dict[str, Any] = field(default_factory=dict)


class ModelHost(Protocol):
    name: str

    def serve(self, version: ModelVersion) -> ServedModel: ...


class LocalModelHost:
    """The FastAPI app as a managed process on loopback (its state under the storage root)."""

    name = "local"

    def __init__(self, root: Path, taxonomy_path: str):
        self.root = root
        self.taxonomy_path = taxonomy_path

    def serve(self, version: ModelVersion) -> ServedModel:
        try:
            running = endpoint.status(self.root)
        except (endpoint.StaleEndpointState, endpoint.EndpointStateError):
            running = None  # not an endpoint of this root: `start` replaces the state
        current = (
            running is not None
            and running.model_version == version.label
            and running.revision == endpoint.model_revision(version.uri)
        )
        state = running if current else endpoint.start(self.root, version.uri, version.label, self.taxonomy_path)
        token, _ = endpoint.endpoint_token(self.root)
        return ServedModel(
            address=state.url,
            model_version=state.model_version,
            restarted=not current,
            client=ObservationClassifier.for_local_endpoint(state.url, token),
            details={"pid": state.pid, "token": state.token_file, "log": state.log_file},
        )


def registry_revision(models: ModelRegistry, version: ModelVersion) -> str:
    """A version's revision read from the registry (its calibration file), wherever the registry lives."""
    path = models.calibration_path(version)
    return endpoint.calibration_revision(models.storage.read_bytes(path) if models.storage.exists(path) else None)

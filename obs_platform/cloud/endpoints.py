"""A registered model version on Vertex AI: its files uploaded as a Vertex Model that the project's serving image
serves, and that Model deployed to an endpoint, which the client's `VertexEndpointTransport` then calls.

Through the generated clients over REST, as custom jobs are (vertex.py says why). Uploading, creating an endpoint
and deploying are long-running operations: each is polled until done, within a bound (deploying starts machines,
which takes Vertex many minutes); past it the operation goes on at Vertex and the caller gets a JobError.

Running again is safe and stays simple: an upload always makes a new Model (an undeployed Model costs nothing,
and a version's files never change, so nothing is gained by versioning Models under a parent); deploying reuses
the endpoint of that display name, and does nothing when the model is already deployed there.
"""

from __future__ import annotations

import concurrent.futures
import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from obs_platform.cloud.transports import VertexEndpointTransport
from obs_platform.cloud.vertex import VertexConfigError, VertexSettings, label_value, translated_errors
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.hosts import ServedModel, registry_revision
from obs_platform.training.backend import JobError
from obs_platform.training.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from google.api_core.operation import Operation
    from google.cloud.aiplatform_v1 import Endpoint, EndpointServiceClient, ModelServiceClient

# What the serving image answers on (the FastAPI app's routes): Vertex forwards predictions and health checks there.
PREDICT_ROUTE = "/v1/predict"
HEALTH_ROUTE = "/health"
SERVING_PORT = 8080
# How long to wait for each long-running operation, in seconds.
UPLOAD_WAIT_S = 600.0
CREATE_ENDPOINT_WAIT_S = 300.0
DEPLOY_WAIT_S = 1800.0  # starting serving machines takes Vertex 5 to 20 minutes


class VertexModelDeployer:
    """Uploads registered model versions to Vertex AI's model registry and deploys them to endpoints."""

    def __init__(
        self,
        settings: VertexSettings,
        models: ModelServiceClient | None = None,
        endpoints: EndpointServiceClient | None = None,
    ):
        self.settings = settings
        self._models = models
        self._endpoints = endpoints

    @cached_property
    def models(self) -> ModelServiceClient:
        return self._models or self.settings.model_service_client()

    @cached_property
    def endpoints(self) -> EndpointServiceClient:
        return self._endpoints or self.settings.endpoint_service_client()

    def upload(
        self, version_label: str, artifact_uri: str, labels: dict[str, str], serving_image_uri: str = "",
        environment: dict[str, str] | None = None,
    ) -> str:  # fmt: skip
        """Upload a version's model files (a `gs://` folder) as a Vertex Model named after the version and served by
        the serving image (the configured one when none is given) with `environment` set in its container;
        returns the Model's resource name."""
        environment = {"OBS_PLATFORM_MODEL_VERSION": version_label, **(environment or {})}
        from google.api_core.exceptions import GoogleAPICallError

        image = serving_image_uri or self.settings.serving_image_uri
        if not image:
            raise VertexConfigError("uploading a model to Vertex AI needs OBS_PLATFORM_VERTEX_SERVING_IMAGE")
        if not artifact_uri.startswith("gs://"):
            raise JobError(f"Vertex AI reads model files from a gs:// folder, not {artifact_uri!r}")
        model = {
            "display_name": version_label,
            "artifact_uri": artifact_uri,
            "labels": {key: label_value(value) for key, value in labels.items()},
            "container_spec": {
                "image_uri": image,
                "predict_route": PREDICT_ROUTE,
                "health_route": HEALTH_ROUTE,
                "ports": [{"container_port": SERVING_PORT}],
                # what the serving entrypoint reads besides AIP_*: the version it reports, where the roster is
                "env": [{"name": name, "value": value} for name, value in sorted(environment.items())],
            },
        }
        action = f"upload model {version_label} from {artifact_uri}"
        with translated_errors(action, GoogleAPICallError):
            operation = self.models.upload_model(
                parent=self.settings.parent, model=model, timeout=self.settings.request_timeout_s
            )
            return _finished(operation, action, UPLOAD_WAIT_S).model

    def deploy(
        self,
        model_name: str,
        endpoint_display_name: str,
        machine_type: str = "",
        min_replicas: int = 1,
        max_replicas: int = 1,
    ) -> str:
        """Deploy a Model to the endpoint of that display name (created when there is none), on dedicated machines
        (the configured serving machine type when none is given), with all of the endpoint's traffic; returns the
        endpoint's resource name."""
        from google.api_core.exceptions import GoogleAPICallError

        if not 1 <= min_replicas <= max_replicas:
            raise JobError(f"replicas must satisfy 1 <= min <= max, not min={min_replicas}, max={max_replicas}")
        endpoint = self._endpoint(endpoint_display_name)
        if any(deployed.model == model_name for deployed in endpoint.deployed_models):
            return endpoint.name
        deployed_model = {
            "model": model_name,
            "display_name": endpoint_display_name,
            "dedicated_resources": {
                "machine_spec": {"machine_type": machine_type or self.settings.serving_machine_type},
                "min_replica_count": min_replicas,
                "max_replica_count": max_replicas,
            },
        }
        action = f"deploy model {model_name} to endpoint {endpoint.name}"
        with translated_errors(action, GoogleAPICallError):
            operation = self.endpoints.deploy_model(
                endpoint=endpoint.name,
                deployed_model=deployed_model,
                traffic_split={"0": 100},  # "0": the model this request deploys
                timeout=self.settings.request_timeout_s,
            )
            _finished(operation, action, DEPLOY_WAIT_S)
        return endpoint.name

    def _endpoint(self, display_name: str) -> Endpoint:
        """The endpoint of that display name (the first listed if there are several), or a new one."""
        from google.api_core.exceptions import GoogleAPICallError

        action = f"find or create endpoint {display_name}"
        with translated_errors(action, GoogleAPICallError):
            found = self.endpoints.list_endpoints(
                request={"parent": self.settings.parent, "filter": f"display_name={json.dumps(display_name)}"},
                timeout=self.settings.request_timeout_s,
            )
            existing = next(iter(found), None)
            if existing is not None:
                return existing
            operation = self.endpoints.create_endpoint(
                parent=self.settings.parent,
                endpoint={"display_name": display_name},
                timeout=self.settings.request_timeout_s,
            )
            return _finished(operation, action, CREATE_ENDPOINT_WAIT_S)


def _finished(operation: Operation, action: str, wait_s: float) -> Any:
    """The operation's result once it is done; JobError when it is still running after `wait_s` seconds. An
    operation that failed raises its error as the SDK's API error, for `translated_errors` to classify."""
    try:
        return operation.result(timeout=wait_s)
    except concurrent.futures.TimeoutError as exc:
        raise JobError(
            f"cannot {action}: operation {operation.operation.name} is still running after {wait_s:g} s"
        ) from exc


class VertexModelHost:
    """The champion on a Vertex AI endpoint: each version uploaded once per revision (the upload is recorded in the
    registry beside the version), then deployed to the endpoint with all of its traffic."""

    name = "vertex"

    def __init__(self, deployer: VertexModelDeployer, models: ModelRegistry, endpoint_display_name: str):
        self.deployer = deployer
        self.models = models
        self.endpoint_display_name = endpoint_display_name

    def serve(self, version: ModelVersion) -> ServedModel:
        revision = registry_revision(self.models, version)
        record = f"{version.folder}/vertex/{revision or 'uncalibrated'}.json"
        if self.models.storage.exists(record):
            model, uploaded = json.loads(self.models.storage.read_bytes(record))["model"], False
        else:
            labels = {"model_version": version.label, "dataset_version": version.dataset_version}
            environment = {"OBS_PLATFORM_HOME": self.models.storage.root_uri}  # the roster's storage root
            model, uploaded = self.deployer.upload(version.label, version.uri, labels, environment=environment), True
            self.models.storage.write_bytes(record, json.dumps({"model": model}).encode())
        endpoint_name = self.deployer.deploy(model, self.endpoint_display_name)
        transport = VertexEndpointTransport(self.deployer.settings, endpoint_name)
        return ServedModel(
            address=endpoint_name,
            model_version=version.label,
            restarted=uploaded,
            client=ObservationClassifier(transport),
            details={"vertex_model": model, "revision": revision},
        )

"""A registered model version on Vertex AI: its files uploaded as a Vertex Model that the project's serving image
serves, and that Model deployed to an endpoint, which the client's `VertexEndpointTransport` then calls.

Through the generated clients over REST, as custom jobs are (vertex.py says why). Uploading, creating an endpoint
deploying and undeploying are long-running operations: each is polled until done, within a bound (deploying starts
machines, which takes Vertex many minutes); past it the operation goes on at Vertex and the caller gets a JobError.

A deployed model bills its machines whether or not it has traffic, so once a new model serves, the models it
replaced are undeployed, but for the `keep_deployed` newest (kept at 0 % traffic for a quick rollback).

Running again is safe and stays simple: an upload always makes a new Model (an undeployed Model costs nothing,
and a version's files never change, so nothing is gained by versioning Models under a parent); deploying reuses
the endpoint of that display name, and when the model is already deployed there it deploys and undeploys nothing:
it only moves all of the traffic back to the model when it lacks any (a rollback to a kept model).
"""

from __future__ import annotations

import concurrent.futures
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from obs_platform.cloud.costs import Prices, machine_hours, priced
from obs_platform.cloud.transports import VertexEndpointTransport
from obs_platform.cloud.vertex import VertexConfigError, VertexSettings, label_value, translated_errors
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.hosts import ServedModel, registry_revision
from obs_platform.training.backend import JobError
from obs_platform.training.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from google.api_core.operation import Operation
    from google.cloud.aiplatform_v1 import DeployedModel as VertexDeployedModel
    from google.cloud.aiplatform_v1 import Endpoint, EndpointServiceClient, ModelServiceClient

# What the serving image answers on (the FastAPI app's routes): Vertex forwards predictions and health checks there.
PREDICT_ROUTE = "/v1/predict"
HEALTH_ROUTE = "/health"
SERVING_PORT = 8080
# How long to wait for each long-running operation, in seconds.
UPLOAD_WAIT_S = 600.0
CREATE_ENDPOINT_WAIT_S = 300.0
DEPLOY_WAIT_S = 1800.0  # starting serving machines takes Vertex 5 to 20 minutes
UNDEPLOY_WAIT_S = 900.0  # stopping them takes minutes too


@dataclass(frozen=True)
class DeployedModel:
    """A Model deployed on an endpoint, with what its bill counts: its machines (the minimum replicas run even
    without traffic) from the time it was deployed."""

    id: str  # the deployed model's id on the endpoint, which traffic splits name
    model: str  # the Model's resource name
    deployed_at: datetime  # Vertex's create_time of the deployment
    replicas: int  # min_replica_count: the machines always running
    machine_type: str

    @classmethod
    def of(cls, deployed: VertexDeployedModel) -> DeployedModel:
        resources = deployed.dedicated_resources
        return cls(
            id=deployed.id,
            model=deployed.model,
            deployed_at=deployed.create_time,
            replicas=resources.min_replica_count,
            machine_type=resources.machine_spec.machine_type,
        )


@dataclass(frozen=True)
class Deployment:
    """An endpoint after a deploy: the models deployed there, newest first, and those the deploy undeployed."""

    endpoint: str  # the endpoint's resource name
    deployed: tuple[DeployedModel, ...]
    undeployed: tuple[DeployedModel, ...] = ()


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
        self,
        version_label: str,
        artifact_uri: str,
        labels: dict[str, str],
        serving_image_uri: str = "",
        environment: dict[str, str] | None = None,
    ) -> str:
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
    ) -> Deployment:
        """Deploy a Model to the endpoint of that display name (created when there is none), on dedicated machines
        (the configured serving machine type when none is given), with all of the endpoint's traffic; once it
        serves, undeploy the models it replaced but for the `keep_deployed` newest.

        A Model already deployed there (one kept for a rollback) is not deployed again: it is given all of the
        traffic if it lacks any, and nothing is undeployed, not even the newer models it takes the traffic from
        (they are now the kept ones: `keep_deployed` applies when a new model is deployed)."""
        from google.api_core.exceptions import GoogleAPICallError

        if not 1 <= min_replicas <= max_replicas:
            raise JobError(f"replicas must satisfy 1 <= min <= max, not min={min_replicas}, max={max_replicas}")
        endpoint = self._endpoint(endpoint_display_name)
        already = next((deployed for deployed in endpoint.deployed_models if deployed.model == model_name), None)
        if already is not None:
            if endpoint.traffic_split.get(already.id, 0) != 100:
                endpoint = self._move_traffic(endpoint.name, already.id)
            return Deployment(endpoint.name, _newest_first(endpoint))
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
            serving_id = _finished(operation, action, DEPLOY_WAIT_S).deployed_model.id
        return self._undeploy_replaced(endpoint.name, serving_id)

    def _move_traffic(self, endpoint_name: str, deployed_id: str) -> Endpoint:
        """Give a model deployed on the endpoint all of its traffic (the others keep their machines, at 0 %);
        returns the endpoint as updated."""
        from google.api_core.exceptions import GoogleAPICallError

        with translated_errors(
            f"move all traffic of endpoint {endpoint_name} to deployed model {deployed_id}", GoogleAPICallError
        ):
            return self.endpoints.update_endpoint(
                endpoint={"name": endpoint_name, "traffic_split": {deployed_id: 100}},
                update_mask={"paths": ["traffic_split"]},  # only the split: the rest of the endpoint stays as it is
                timeout=self.settings.request_timeout_s,
            )

    def _undeploy_replaced(self, endpoint_name: str, serving_id: str) -> Deployment:
        """Undeploy the endpoint's models other than the one serving (which has all the traffic), but for the
        `keep_deployed` newest: each would bill its machines at 0 % traffic."""
        from google.api_core.exceptions import GoogleAPICallError

        with translated_errors(f"read endpoint {endpoint_name}", GoogleAPICallError):
            endpoint = self.endpoints.get_endpoint(name=endpoint_name, timeout=self.settings.request_timeout_s)
        deployed = _newest_first(endpoint)
        replaced = [model for model in deployed if model.id != serving_id][self.settings.keep_deployed :]
        for model in replaced:
            action = f"undeploy model {model.model} (deployed model {model.id}) from endpoint {endpoint_name}"
            with translated_errors(action, GoogleAPICallError):
                operation = self.endpoints.undeploy_model(
                    endpoint=endpoint_name,
                    deployed_model_id=model.id,
                    traffic_split={serving_id: 100},  # as it is: the new model keeps all the traffic
                    timeout=self.settings.request_timeout_s,
                )
                _finished(operation, action, UNDEPLOY_WAIT_S)
        still_deployed = tuple(model for model in deployed if model not in replaced)
        return Deployment(endpoint_name, still_deployed, tuple(replaced))

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


def _newest_first(endpoint: Endpoint) -> tuple[DeployedModel, ...]:
    deployed = (DeployedModel.of(model) for model in endpoint.deployed_models)
    return tuple(sorted(deployed, key=lambda model: model.deployed_at, reverse=True))


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
    registry beside the version), then deployed to the endpoint with all of its traffic. Its details show what the
    endpoint bills: each deployed model's machine-hours so far, and those of the models the deploy undeployed,
    priced where a serving price is configured."""

    name = "vertex"

    def __init__(
        self, deployer: VertexModelDeployer, models: ModelRegistry, endpoint_display_name: str, prices: Prices
    ):
        self.deployer = deployer
        self.models = models
        self.endpoint_display_name = endpoint_display_name
        self.prices = prices

    def model(self, version: ModelVersion) -> tuple[str, bool]:
        """The version's Vertex Model (its resource name) at its current revision, and whether this call uploaded
        it: uploaded once per revision, the upload recorded beside the version, so the endpoint and a batch
        prediction job of the same version run the same Model."""
        return self._model(version, registry_revision(self.models, version))

    def _model(self, version: ModelVersion, revision: str) -> tuple[str, bool]:
        record = f"{version.folder}/vertex/{revision or 'uncalibrated'}.json"
        if self.models.storage.exists(record):
            return json.loads(self.models.storage.read_bytes(record))["model"], False
        labels = {"model_version": version.label, "dataset_version": version.dataset_version}
        environment = {"OBS_PLATFORM_HOME": self.models.storage.root_uri}  # the roster's storage root
        model = self.deployer.upload(version.label, version.uri, labels, environment=environment)
        self.models.storage.write_bytes(record, json.dumps({"model": model}).encode())
        return model, True

    def serve(self, version: ModelVersion) -> ServedModel:
        revision = registry_revision(self.models, version)  # read once (a bucket read): the upload and details need it
        model, uploaded = self._model(version, revision)
        deployment = self.deployer.deploy(model, self.endpoint_display_name)
        now = datetime.now(UTC)
        transport = VertexEndpointTransport(self.deployer.settings, deployment.endpoint)
        return ServedModel(
            address=deployment.endpoint,
            model_version=version.label,
            restarted=uploaded,
            client=ObservationClassifier(transport),
            details={
                "vertex_model": model,
                "revision": revision,
                "deployed_models": [self._billed(deployed, now) for deployed in deployment.deployed],
                "undeployed_models": [self._billed(undeployed, now) for undeployed in deployment.undeployed],
            },
        )

    def _billed(self, deployed: DeployedModel, until: datetime) -> dict[str, Any]:
        """A deployed model as metadata: what it runs on, since when, its machine-hours up to `until`, and their
        estimated price when one is configured."""
        hours = machine_hours(deployed.deployed_at, until, deployed.replicas)
        usd = priced(hours, self.prices.serving_usd_per_machine_hour)
        return {
            "deployed_model_id": deployed.id,
            "vertex_model": deployed.model,
            "machine_type": deployed.machine_type,
            "replicas": deployed.replicas,
            "deployed_at": deployed.deployed_at.isoformat(),
            "machine_hours": hours,
            **({} if usd is None else {"estimated_usd": usd}),
        }

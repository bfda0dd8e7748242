"""Serving on Vertex AI with the real SDKs (aiplatform's generated clients, google-genai) over real HTTP to the
loopback fake of Vertex, and GCS through its emulator: a registered version uploaded and deployed, then asked
through `ObservationClassifier` on the endpoint's transport and on a tuned Gemini model's, with the results,
retries and refusals the local endpoint's transport gives."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from pydantic.alias_generators import to_camel

from obs_platform.cloud import endpoints
from obs_platform.cloud.costs import Prices, machine_hours, priced
from obs_platform.cloud.endpoints import VertexModelDeployer, VertexModelHost
from obs_platform.cloud.transports import GeminiTransport, VertexEndpointTransport
from obs_platform.cloud.vertex import ENV_VARIABLES, VertexConfigError, VertexSettings
from obs_platform.data.formats import TrainingLineRenderer, system_instruction
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Suggestion
from obs_platform.serving.client import (
    ClassificationResult,
    EndpointUnavailable,
    ObservationClassifier,
    RequestRejected,
)
from obs_platform.storage import storage_from_uri
from obs_platform.training.backend import BackendUnavailable, JobError, ModelArtifact
from obs_platform.training.registry import ModelRegistry

from .conftest import free_port
from .fake_vertex import ANSWER_MEAN_LOGPROB, ANSWER_TOKENS, SERVING_IMAGE, FakeVertex, Refused, fake_settings

# The SDKs come with the `cloud` extra.
storage = pytest.importorskip("google.cloud.storage")
pytest.importorskip("google.genai")
aiplatform = pytest.importorskip("google.cloud.aiplatform_v1")
api_exceptions = pytest.importorskip("google.api_core.exceptions")
Model = aiplatform.Model

LOCATION = "projects/271828182845/locations/europe-west2"
RETRIES = 2


@pytest.fixture
def fake(fake_vertex: FakeVertex, eyfs) -> FakeVertex:
    fake_vertex.taxonomy = eyfs
    return fake_vertex


@pytest.fixture
def settings(fake: FakeVertex, gcs_emulator: str) -> VertexSettings:
    return fake_settings(fake, gcs_emulator)


@pytest.fixture
def model_files(gcs_emulator: str, tmp_path) -> str:
    """A registered version's files in the bucket."""
    bucket = storage.Client().bucket(gcs_emulator)
    for name in ("manifest.json", "adapter/adapter_model.safetensors"):
        bucket.blob(f"{tmp_path.name}/registry/v3/{name}").upload_from_string(b"{}")
    return f"gs://{gcs_emulator}/{tmp_path.name}/registry/v3"


@pytest.fixture
def deployer(settings: VertexSettings) -> VertexModelDeployer:
    return VertexModelDeployer(settings)


@pytest.fixture
def endpoint(deployer: VertexModelDeployer, model_files: str) -> str:
    """An endpoint serving the version `obs-v3`."""
    model = deployer.upload("obs-v3", model_files, {"dataset_version": "d1"})
    return deployer.deploy(model, "obs-classifier").endpoint


def classifier(transport) -> ObservationClassifier:
    return ObservationClassifier(transport, retries=RETRIES, backoff_seconds=0)


def polled_operations(fake: FakeVertex) -> list[str]:
    return [path for method, path, _ in fake.received if method == "GET" and "/operations/" in path]


# ----- settings ------------------------------------------------------------------------------------------------


def test_serving_settings_are_optional(monkeypatch):
    for variable in ENV_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(VertexConfigError) as error:
        VertexSettings.from_env()
    assert "SERVING" not in str(error.value)
    for name, value in {"PROJECT": "p", "REGION": "europe-west2", "BUCKET": "gs://b", "TRAINER_IMAGE": "t"}.items():
        monkeypatch.setenv(f"OBS_PLATFORM_VERTEX_{name}", value)
    assert VertexSettings.from_env().serving_image_uri == ""
    assert VertexSettings.from_env().serving_machine_type == "n1-standard-2"
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_SERVING_IMAGE", SERVING_IMAGE)
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_SERVING_MACHINE_TYPE", "n1-standard-4")
    configured = VertexSettings.from_env()
    assert (configured.serving_image_uri, configured.serving_machine_type) == (SERVING_IMAGE, "n1-standard-4")


# ----- upload and deploy -----------------------------------------------------------------------------------------


def test_upload_registers_the_version_served_by_the_serving_image(settings, fake, deployer, model_files):
    name = deployer.upload("obs-v3", model_files, {"dataset_version": "Data_1", "taxonomy": "eyfs"})

    assert name.startswith(f"{LOCATION}/models/")
    assert fake.requests("models:upload") == [
        {
            "model": {
                "displayName": "obs-v3",
                "artifactUri": model_files,
                "labels": {"dataset_version": "data_1", "taxonomy": "eyfs"},  # made valid label values
                "containerSpec": {
                    "imageUri": SERVING_IMAGE,
                    "predictRoute": "/v1/predict",
                    "healthRoute": "/health",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "OBS_PLATFORM_MODEL_VERSION", "value": "obs-v3"}],  # what the app reports
                },
            }
        }
    ]
    # The upload is a long-running operation, waited for: the generated client polls it under /ui/, not /v1/.
    [poll] = polled_operations(fake)
    assert poll.startswith(f"/ui/{name}/operations/")

    model = settings.model_service_client().get_model(name=f"{name}@1")  # travels as models/ID%401
    assert model.display_name == "obs-v3" and model.labels["dataset_version"] == "data_1"
    assert model.container_spec.image_uri == SERVING_IMAGE and model.version_id == "1"
    assert list(model.supported_deployment_resources_types) == [Model.DeploymentResourcesType.DEDICATED_RESOURCES]


def test_upload_refusals(settings, fake, deployer, model_files, gcs_emulator):
    with pytest.raises(JobError, match="No model files found"):  # the operation fails, not the request
        deployer.upload("obs-v4", f"gs://{gcs_emulator}/nowhere", {})
    with pytest.raises(JobError, match="gs:// folder"):
        deployer.upload("obs-v4", "/local/registry/v4", {})
    with pytest.raises(JobError, match="invalid label"):
        deployer.upload("obs-v4", model_files, {"Dataset": "d1"})
    with pytest.raises(VertexConfigError, match="OBS_PLATFORM_VERTEX_SERVING_IMAGE"):
        VertexModelDeployer(replace(settings, serving_image_uri="")).upload("obs-v4", model_files, {})
    fake.unavailable = 1
    with pytest.raises(BackendUnavailable, match="503"):
        deployer.upload("obs-v4", model_files, {})
    # A serving image given to the call wins over the configured one.
    VertexModelDeployer(replace(settings, serving_image_uri="")).upload("obs-v4", model_files, {}, "img:2")
    assert fake.requests("models:upload")[-1]["model"]["containerSpec"]["imageUri"] == "img:2"


def test_deploy_creates_the_endpoint_once_and_moves_traffic_to_the_newest_model(fake, deployer, model_files):
    first = deployer.upload("obs-v3", model_files, {})
    endpoint = deployer.deploy(first, "obs-classifier").endpoint

    assert endpoint.startswith(f"{LOCATION}/endpoints/")
    assert fake.created("endpoints") == [{"displayName": "obs-classifier"}]
    assert fake.requests(":deployModel") == [
        {
            "deployedModel": {
                "model": first,
                "displayName": "obs-classifier",
                "dedicatedResources": {
                    "machineSpec": {"machineType": "n1-standard-2"},
                    "minReplicaCount": 1,
                    "maxReplicaCount": 1,
                },
            },
            "trafficSplit": {"0": 100},
        }
    ]
    assert len(polled_operations(fake)) == 3  # upload, create, deploy: each waited for

    assert deployer.deploy(first, "obs-classifier").endpoint == endpoint  # already deployed there: nothing to do
    assert len(fake.requests(":deployModel")) == 1

    second = deployer.upload("obs-v4", model_files, {})
    deployment = deployer.deploy(second, "obs-classifier", machine_type="n1-standard-4", max_replicas=2)
    assert deployment.endpoint == endpoint
    assert len(fake.created("endpoints")) == 1  # found by its display name
    resources = fake.requests(":deployModel")[-1]["deployedModel"]["dedicatedResources"]
    assert resources["machineSpec"] == {"machineType": "n1-standard-4"} and resources["maxReplicaCount"] == 2
    deployed = {model["model"]: model["id"] for model in fake.endpoints[endpoint]["deployedModels"]}
    assert fake.endpoints[endpoint]["trafficSplit"] == {deployed[second]: 100}


def test_an_operation_still_running_after_its_bound_is_an_error(fake, deployer, model_files, monkeypatch):
    monkeypatch.setattr(endpoints, "UPLOAD_WAIT_S", 0.05)
    fake.unfinished = 1
    with pytest.raises(JobError, match=r"operation projects/.*/operations/\d+ is still running after 0.05 s"):
        deployer.upload("obs-v3", model_files, {})


def test_deploy_refusals(fake, deployer, endpoint):
    with pytest.raises(JobError, match="does not exist"):
        deployer.deploy(f"{LOCATION}/models/404", "obs-classifier")
    with pytest.raises(JobError, match="replicas"):
        deployer.deploy(f"{LOCATION}/models/404", "obs-classifier", min_replicas=2, max_replicas=1)
    fake.unavailable = 1
    with pytest.raises(BackendUnavailable, match="503"):
        deployer.deploy(f"{LOCATION}/models/404", "obs-classifier")


# ----- undeploying what a new model replaces -------------------------------------------------------------------------


def deployed_ids(fake: FakeVertex, endpoint: str) -> dict[str, str]:
    """The endpoint's deployed models at the fake: Model name → deployed model id."""
    return {model["model"]: model["id"] for model in fake.endpoints[endpoint]["deployedModels"]}


def test_a_new_model_undeploys_the_one_it_replaces_once_it_serves(settings, fake, deployer, model_files, endpoint):
    [(first, first_id)] = deployed_ids(fake, endpoint).items()
    second = deployer.upload("obs-v4", model_files, {})
    deployment = deployer.deploy(second, "obs-classifier")

    second_id = deployed_ids(fake, endpoint)[second]
    # Undeployed after the deploy, with the traffic left on the new model; the operation waited for.
    verbs = [path.rpartition(":")[2] for _, path, _ in fake.received if path.endswith("ployModel")]
    assert verbs == ["deployModel", "deployModel", "undeployModel"]
    assert fake.requests(":undeployModel") == [{"deployedModelId": first_id, "trafficSplit": {second_id: 100}}]
    assert polled_operations(fake)[-1].startswith(f"/ui/{endpoint}/operations/")
    assert deployed_ids(fake, endpoint) == {second: second_id}
    assert fake.endpoints[endpoint]["trafficSplit"] == {second_id: 100}

    assert deployment.endpoint == endpoint
    [undeployed], [serving] = deployment.undeployed, deployment.deployed
    assert (undeployed.id, undeployed.model, serving.id, serving.model) == (first_id, first, second_id, second)
    assert (serving.replicas, serving.machine_type) == (1, "n1-standard-2")
    assert undeployed.deployed_at < serving.deployed_at
    result = classifier(VertexEndpointTransport(settings, endpoint)).classify("Sang a song.")
    assert result.model_version == "obs-v4"


def test_keep_deployed_keeps_the_newest_replaced_models_for_rollback(settings, fake, model_files):
    deployer = VertexModelDeployer(replace(settings, keep_deployed=1))
    v3, v4, v5 = (deployer.upload(label, model_files, {}) for label in ("obs-v3", "obs-v4", "obs-v5"))
    endpoint = deployer.deploy(v3, "obs-classifier").endpoint

    kept = deployer.deploy(v4, "obs-classifier")
    assert kept.undeployed == () and [model.model for model in kept.deployed] == [v4, v3]  # newest first
    assert fake.requests(":undeployModel") == []
    assert fake.endpoints[endpoint]["trafficSplit"] == {deployed_ids(fake, endpoint)[v4]: 100}  # v3 at 0 %

    oldest_id = deployed_ids(fake, endpoint)[v3]
    third = deployer.deploy(v5, "obs-classifier")
    assert [model.model for model in third.undeployed] == [v3]
    assert [model.model for model in third.deployed] == [v5, v4]
    assert [body["deployedModelId"] for body in fake.requests(":undeployModel")] == [oldest_id]
    assert set(deployed_ids(fake, endpoint)) == {v4, v5}


def traffic_updates(fake: FakeVertex) -> list[tuple[str, dict]]:
    """The endpoint updates the fake received (PATCH of an endpoint): path, body."""
    return [(path, body) for method, path, body in fake.received if method == "PATCH"]


def test_deploying_a_kept_model_again_rolls_the_traffic_back_to_it(settings, fake, model_files):
    deployer = VertexModelDeployer(replace(settings, keep_deployed=1))
    v3, v4 = (deployer.upload(label, model_files, {}) for label in ("obs-v3", "obs-v4"))
    endpoint = deployer.deploy(v3, "obs-classifier").endpoint
    deployer.deploy(v4, "obs-classifier")  # v3 kept at 0 %
    ids = deployed_ids(fake, endpoint)
    transport = VertexEndpointTransport(settings, endpoint)
    assert classifier(transport).classify("Sang a song.").model_version == "obs-v4"
    uploads, deploys = len(fake.requests("models:upload")), len(fake.requests(":deployModel"))

    rolled_back = deployer.deploy(v3, "obs-classifier")

    # Only the traffic moves, in one update of the split (the update mask checked by the fake): no upload, no
    # deploy, and the newer model stays deployed at 0 %, now the kept one.
    assert traffic_updates(fake) == [(f"/v1/{endpoint}", {"trafficSplit": {ids[v3]: 100}})]
    assert (len(fake.requests("models:upload")), len(fake.requests(":deployModel"))) == (uploads, deploys)
    assert fake.requests(":undeployModel") == []
    assert deployed_ids(fake, endpoint) == ids and fake.endpoints[endpoint]["trafficSplit"] == {ids[v3]: 100}
    assert rolled_back.endpoint == endpoint and rolled_back.undeployed == ()
    assert [model.model for model in rolled_back.deployed] == [v4, v3]  # newest first, as ever
    assert classifier(transport).classify("Sang a song.").model_version == "obs-v3"

    # Forward again: v4 is deployed, so it only takes the traffic back.
    deployer.deploy(v4, "obs-classifier")
    assert traffic_updates(fake)[-1] == (f"/v1/{endpoint}", {"trafficSplit": {ids[v4]: 100}})
    assert deployed_ids(fake, endpoint) == ids and len(fake.requests(":deployModel")) == deploys


def test_deploying_the_model_with_all_the_traffic_updates_nothing(settings, fake, model_files):
    deployer = VertexModelDeployer(replace(settings, keep_deployed=1))
    v3, v4 = (deployer.upload(label, model_files, {}) for label in ("obs-v3", "obs-v4"))
    endpoint = deployer.deploy(v3, "obs-classifier").endpoint
    deployer.deploy(v4, "obs-classifier")
    sent = len(fake.received)

    again = deployer.deploy(v4, "obs-classifier")
    assert [method for method, _, _ in fake.received[sent:]] == ["GET"]  # the endpoint looked up, nothing else
    assert traffic_updates(fake) == [] and [model.model for model in again.deployed] == [v4, v3]
    assert fake.endpoints[endpoint]["trafficSplit"] == {deployed_ids(fake, endpoint)[v4]: 100}


def test_a_refused_traffic_update_is_a_job_error(settings, fake, model_files, monkeypatch):
    client = settings.endpoint_service_client()
    deployer = VertexModelDeployer(replace(settings, keep_deployed=1))
    v3, v4 = (deployer.upload(label, model_files, {}) for label in ("obs-v3", "obs-v4"))
    endpoint = deployer.deploy(v3, "obs-classifier").endpoint
    deployer.deploy(v4, "obs-classifier")
    ids = deployed_ids(fake, endpoint)
    # What the fake refuses, as the service does: a split that is not 100 %, or that names no deployed model.
    for split in ({ids[v3]: 50}, {"404": 100}, {ids[v3]: 60, ids[v4]: 60}):
        with pytest.raises(api_exceptions.BadRequest, match="100 percent"):
            client.update_endpoint(
                endpoint={"name": endpoint, "traffic_split": split}, update_mask={"paths": ["traffic_split"]}
            )
    with pytest.raises(api_exceptions.BadRequest, match="updateMask"):
        client.update_endpoint(endpoint={"name": endpoint, "traffic_split": {ids[v3]: 100}})
    assert fake.endpoints[endpoint]["trafficSplit"] == {ids[v4]: 100}

    def refused(endpoint: dict, body: dict, update_mask: str) -> dict:
        raise Refused(400, "FAILED_PRECONDITION", "The endpoint is being updated.")

    monkeypatch.setattr(fake, "_update_endpoint", refused)
    with pytest.raises(JobError, match=rf"cannot move all traffic of .* to deployed model {ids[v3]}: .*being updated"):
        deployer.deploy(v3, "obs-classifier")
    assert fake.endpoints[endpoint]["trafficSplit"] == {ids[v4]: 100}  # v4 still serves
    assert deployed_ids(fake, endpoint) == ids and fake.requests(":undeployModel") == []


def test_redeploying_a_deployed_model_undeploys_nothing(fake, deployer, model_files, endpoint):
    [first] = deployed_ids(fake, endpoint)
    sent = len(fake.received)
    again = deployer.deploy(first, "obs-classifier")

    assert again.undeployed == () and [model.model for model in again.deployed] == [first]
    assert [method for method, _, _ in fake.received[sent:]] == ["GET"]  # the endpoint looked up, nothing else


def test_undeploy_refusals(settings, fake, deployer, model_files, endpoint, monkeypatch):
    client = settings.endpoint_service_client()
    [(first, first_id)] = deployed_ids(fake, endpoint).items()
    with pytest.raises(api_exceptions.NotFound, match="not found"):
        client.undeploy_model(endpoint=endpoint, deployed_model_id="404")
    with pytest.raises(api_exceptions.BadRequest, match="100% of the traffic"):  # over REST: by HTTP status
        client.undeploy_model(endpoint=endpoint, deployed_model_id=first_id)  # it serves: the endpoint's only model
    with pytest.raises(api_exceptions.BadRequest, match="100 percent"):
        client.undeploy_model(endpoint=endpoint, deployed_model_id=first_id, traffic_split={"404": 100})
    assert deployed_ids(fake, endpoint) == {first: first_id}

    def refused(endpoint: dict, body: dict) -> dict:
        raise Refused(400, "FAILED_PRECONDITION", "The endpoint is being updated.")

    monkeypatch.setattr(fake, "_undeploy", refused)
    second = deployer.upload("obs-v4", model_files, {})
    with pytest.raises(JobError, match=rf"cannot undeploy model .* \(deployed model {first_id}\) .*being updated"):
        deployer.deploy(second, "obs-classifier")
    assert fake.endpoints[endpoint]["trafficSplit"] == {deployed_ids(fake, endpoint)[second]: 100}  # it serves


def test_the_host_reports_the_machine_hours_the_endpoint_bills(settings, fake, model_files, gcs_emulator, tmp_path):
    registry = ModelRegistry(storage_from_uri(f"gs://{gcs_emulator}/{tmp_path.name}/home"))
    first, second = (
        registry.register("oss-classifier", ModelArtifact(model_files, {}), dataset_version="d1", job_id=job)
        for job in ("job-1", "job-2")
    )
    deployer, price = VertexModelDeployer(settings), 0.5
    host = VertexModelHost(deployer, registry, "obs-classifier", Prices(serving_usd_per_machine_hour=price))
    host.serve(first)
    before = datetime.now(UTC)
    served = host.serve(second)
    after = datetime.now(UTC)

    [replaced], [serving] = served.details["undeployed_models"], served.details["deployed_models"]
    assert deployed_ids(fake, served.address) == {serving["vertex_model"]: serving["deployed_model_id"]}
    assert replaced["vertex_model"] != serving["vertex_model"]
    for billed in (replaced, serving):
        assert (billed["machine_type"], billed["replicas"]) == ("n1-standard-2", 1)
        deployed_at = datetime.fromisoformat(billed["deployed_at"])  # the fake dates deploys from 2026-01-01
        assert machine_hours(deployed_at, before) <= billed["machine_hours"] <= machine_hours(deployed_at, after)
        assert billed["machine_hours"] > 0 and billed["estimated_usd"] == priced(billed["machine_hours"], price)

    unpriced = VertexModelHost(deployer, registry, "obs-classifier", Prices()).serve(second)
    [still_serving] = unpriced.details["deployed_models"]
    assert unpriced.details["undeployed_models"] == [] and "estimated_usd" not in still_serving
    assert still_serving["machine_hours"] >= serving["machine_hours"]


def test_the_host_rolls_back_to_a_kept_version(settings, fake, model_files, gcs_emulator, tmp_path):
    registry = ModelRegistry(storage_from_uri(f"gs://{gcs_emulator}/{tmp_path.name}/home"))
    first, second = (
        registry.register("oss-classifier", ModelArtifact(model_files, {}), dataset_version="d1", job_id=job)
        for job in ("job-1", "job-2")
    )
    deployer = VertexModelDeployer(replace(settings, keep_deployed=1))
    host = VertexModelHost(deployer, registry, "obs-classifier", Prices())
    served_first, served_second = host.serve(first), host.serve(second)
    uploads = len(fake.requests("models:upload"))

    rolled_back = host.serve(first)  # the champion alias moved back to the kept version

    assert len(fake.requests("models:upload")) == uploads  # the upload recorded beside the version is reused
    assert rolled_back.model_version == first.label and rolled_back.address == served_first.address
    assert rolled_back.details["vertex_model"] == served_first.details["vertex_model"]
    # Both stay deployed and billed, newest first, the newer one now the kept one at 0 %: nothing undeployed.
    deployed = [model["vertex_model"] for model in rolled_back.details["deployed_models"]]
    assert deployed == [served_second.details["vertex_model"], served_first.details["vertex_model"]]
    assert rolled_back.details["undeployed_models"] == []
    ids = deployed_ids(fake, rolled_back.address)
    assert fake.endpoints[rolled_back.address]["trafficSplit"] == {ids[served_first.details["vertex_model"]]: 100}
    assert rolled_back.client.classify("Sang a song.").model_version == first.label


# ----- the deployed endpoint through the client --------------------------------------------------------------------


def test_endpoint_predictions_are_the_apps_as_classification_results(settings, fake, endpoint):
    items = [
        {"notes": "Amara poured water into three cups.", "child_age_months": 40, "child_name": "Amara Okafor"},
        {"notes": "Sang a song."},
    ]
    results = classifier(VertexEndpointTransport(settings, endpoint)).classify_batch(items)

    assert fake.requests(":predict") == [{"instances": items}]
    for item, result in zip(items, results, strict=True):
        written = fake.prediction_for(item["notes"])
        expected = {**written, "top_k": [Suggestion(**s) for s in written["top_k"]]}
        assert result == ClassificationResult(**expected, model_version="obs-v3")  # the Model's display name
        # A protobuf Struct carries numbers as doubles: the ids are ints again, as the app wrote them.
        ids = [result.attribute_id, *result.tags, *(s.attribute_id for s in result.top_k)]
        assert all(type(i) is int for i in ids)
    assert results[0].attribute != results[1].attribute


def test_endpoint_errors_are_the_clients(settings, fake, endpoint):
    client = classifier(VertexEndpointTransport(settings, endpoint))
    fake.unavailable = RETRIES  # every attempt but the last answers 503
    assert client.classify("Sang a song.").status == "ok"
    fake.unavailable = RETRIES + 1
    with pytest.raises(EndpointUnavailable, match="503"):
        client.classify("Sang a song.")
    assert len(fake.requests(":predict")) == 2 * (RETRIES + 1)

    unreachable = replace(settings, api_endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EndpointUnavailable, match="cannot reach"):
        classifier(VertexEndpointTransport(unreachable, endpoint)).classify("Sang a song.")

    with pytest.raises(RequestRejected) as rejected:  # refused at once: no retry
        classifier(VertexEndpointTransport(settings, f"{LOCATION}/endpoints/404")).classify("Sang a song.")
    assert rejected.value.status == 404 and "not found" in rejected.value.detail
    with pytest.raises(RequestRejected, match="needs notes"):
        VertexEndpointTransport(settings, endpoint).predict([{"text": "Sang a song."}])


# ----- a tuned Gemini model through the client -----------------------------------------------------------------------


@pytest.fixture
def gemini(settings, fake, eyfs) -> ObservationClassifier:
    roster = Roster.from_names(["Amara Okafor"])
    return classifier(GeminiTransport(settings, fake.tuned_endpoint(), eyfs, roster))


def test_gemini_is_asked_as_its_tuning_data_taught_it(gemini, fake, eyfs, gcs_emulator):
    photo = f"gs://{gcs_emulator}/photos/cups.jpg"
    result = gemini.classify("Amara poured water into three cups.", photo, child_age_months=40, child_name="Amara")

    [request] = fake.requests(":generateContent")
    attribute = eyfs.attributes[0]
    label = (attribute.domain_id, attribute.id, attribute.label_levels[0].title)
    taught = orjson.loads(
        TrainingLineRenderer(eyfs).gemini("[CHILD] poured water into three cups.", 40, None, label, (), [photo])
    )
    # The user turn, redacted, with its photo; google-genai sends file data by its proto field names, which the
    # service reads as it reads the JSON names.
    [turn] = request["contents"]
    turn["parts"][1]["fileData"] = {to_camel(key): value for key, value in turn["parts"][1]["fileData"].items()}
    assert turn == taught["contents"][0]
    assert request["systemInstruction"]["parts"] == [{"text": system_instruction(eyfs)}]
    assert request["generationConfig"] == {"temperature": 0, "responseMimeType": "application/json"}
    endpoint = gemini.transport.endpoint
    assert [path for method, path, _ in fake.received if method == "POST"] == [f"/v1/{endpoint}:generateContent"]

    probability = round(math.exp(ANSWER_MEAN_LOGPROB * ANSWER_TOKENS), 4)
    expected = Suggestion.of(eyfs, attribute.id, probability)
    assert result == ClassificationResult(
        domain=expected.domain,
        domain_name=expected.domain_name,
        attribute=attribute.name,
        attribute_id=attribute.id,
        level=attribute.label_levels[0].title,
        confidence=probability,
        level_confidence=probability,
        top_k=[expected],
        tags=[attribute.id],
        model_version=endpoint,
    )


def test_gemini_answers_that_name_no_label_are_invalid_predictions(gemini, fake, eyfs):
    speaking = eyfs.attributes[1]
    fake.answers = [
        "I think this is about maths.",
        '{"domain": "mathematics", "attribute": "Juggling", "level": "Reception", "secondary": []}',
        '{"domain": "mathematics", "attribute": "Number", "level": "Reception", "secondary": '
        '[{"domain": "communication_and_language", "attribute": "Speaking", "level": "Reception"}]}',
        '{"domain": "mathematics", "attribute": "Numbr", "level": "Reception", "secondary": []}',
    ]
    results = gemini.classify_batch([{"notes": f"Observation {n}"} for n in range(4)])

    # Read as the local generative model's answers are: valid, repaired to the nearest label, or invalid.
    assert [r.status for r in results] == ["invalid", "invalid", "ok", "repaired"]
    assert "no label in answer" in results[0].problem and "'Juggling' is not in the label space" in results[1].problem
    assert results[3].attribute == "Number" and "'Numbr' → 'Number'" in results[3].problem
    for invalid in results[:2]:
        assert invalid.attribute == "" and invalid.confidence == 0 and invalid.top_k == []
    assert results[2].attribute == "Number" and results[2].level == "Reception"
    assert [s.attribute for s in results[2].top_k] == ["Number", "Speaking"]
    assert results[2].tags == [eyfs.domain_by_key("mathematics").attributes[0].id, speaking.id]
    assert results[2].top_k[1].probability == 0.0  # a secondary tag has no probability of its own


def test_gemini_errors_are_the_clients(gemini, fake, settings, eyfs):
    fake.unavailable = RETRIES
    assert gemini.classify("Sang a song.").status == "ok"
    fake.unavailable = RETRIES + 1
    with pytest.raises(EndpointUnavailable, match="503"):
        gemini.classify("Sang a song.")

    with pytest.raises(RequestRejected) as rejected:
        classifier(GeminiTransport(settings, f"{LOCATION}/endpoints/404", eyfs)).classify("Sang a song.")
    assert rejected.value.status == 404
    sent = len(fake.received)
    for bad in ([{"notes": "Sang a song."}, {"notes": "  "}], [{"notes": "Sang.", "photo": "x"}]):
        with pytest.raises(RequestRejected) as rejected:
            gemini.transport.predict(bad)
        assert rejected.value.status == 422
    assert len(fake.received) == sent  # a bad batch is refused before any (billed) request


def test_the_vertex_serving_modules_leave_the_sdks_unimported():
    """Dagster loads the definitions in every process: importing these must not import the SDKs."""
    code = (
        "import sys, obs_platform.cloud.endpoints, obs_platform.cloud.transports, obs_platform.cloud.model_batch; "
        "print([m for m in ('google.genai', 'google.cloud.aiplatform_v1', 'google.cloud.aiplatform', "
        "'google.api_core', 'google.protobuf') if m in sys.modules])"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"

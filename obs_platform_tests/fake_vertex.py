"""A fake of the Vertex AI REST API on loopback, for the real SDKs (google-genai, google-cloud-aiplatform) to talk
to over real HTTP.

It serves what the Vertex backends use: tuningJobs, customJobs and batchPredictionJobs, create, get and cancel, under
`/v1/projects/{project}/locations/{location}/` (both creates answer with the job itself: there is no long-running
operation to poll). It refuses, as the service does, a request without its required fields and a Gemini tuning
job whose files are not in the bucket (the GCS emulator) or whose first lines are not Gemini's format. A job
shows PENDING, RUNNING, then SUCCEEDED on successive GETs; a custom job runs "the trainer": it fails when its
`--train`/`--valid` files are missing, and on success leaves a manifest and an adapter in its `--output` folder; it
shows a start time once running and an end time once ended, 90 minutes apart (what its cost is reckoned from). A
batch prediction job (refused without its request file in the bucket, or with requests that are no conversation)
on success writes an answer line per request in Vertex's output layout, some malformed, some failed (`batch_answer`).
A batch prediction job of an uploaded model (the project's serving app in its container) is refused without its
instances file, JSON lines in and out, or the dedicated machines such a model runs on; it answers as the app on
those machines would: the instances (less the key field) go `batchSize` at a time through the app's own request
model, a request the app would refuse (422) fails every instance it carries, and the others are answered as an
endpoint's predict is (`prediction_for`). It shows its start time and half its instances done while running, then
writes `prediction.results-0000K-of-0000N` ({"key" or "instance", "prediction"}, numbers as doubles, in no promised
order) and `prediction.errors_stats-00000-of-00001` ({"key" or "instance", "error"}) under
`prediction-<model>-<time>`, with the completion stats.
Enums are names, or numbers for a client asking for `enum-encoding=int` (aiplatform does), as the service answers.

It also serves what serving on Vertex uses: models:upload (its files must be in the bucket) and GET of a model,
endpoints create, list (by display name), get, patch (of the traffic split only, among the models deployed there),
deployModel (of an uploaded model, on dedicated machines, each deploy created after the last) and undeployModel (of
a model without traffic). Upload, create, deploy and undeploy are long-running operations, done at their first
poll (the generated clients poll under `/ui/`) unless a test asks for ones that never finish (`unfinished`).
Predict on a deployed endpoint answers each instance with a prediction in the serving app's shape
(`prediction_for`); generateContent on a tuned Gemini model's endpoint answers with the next of the `answers` a
test scripted, else a valid label (`default_answer`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import pytest

from obs_platform.data.formats import answer_json
from obs_platform.predictions import Prediction, Suggestion
from obs_platform.taxonomy import Label

if TYPE_CHECKING:  # imported by the fixture: conftest imports this module for every test session
    from google.cloud import storage

    from obs_platform.cloud.vertex import VertexSettings
    from obs_platform.taxonomy import Taxonomy

PROJECT_NUMBER = "271828182845"  # Vertex names the resources it creates by project number, not id
JOB_STATE_NUMBERS = {  # google.cloud.aiplatform.v1.JobState
    "JOB_STATE_QUEUED": 1,
    "JOB_STATE_PENDING": 2,
    "JOB_STATE_RUNNING": 3,
    "JOB_STATE_SUCCEEDED": 4,
    "JOB_STATE_FAILED": 5,
    "JOB_STATE_CANCELLING": 6,
    "JOB_STATE_CANCELLED": 7,
    "JOB_STATE_PAUSED": 8,
    "JOB_STATE_EXPIRED": 9,
}
SUCCESS = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
FAILURE = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED")
FINISHED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
ADAPTER_SIZES = {
    "ADAPTER_SIZE_ONE",
    "ADAPTER_SIZE_TWO",
    "ADAPTER_SIZE_FOUR",
    "ADAPTER_SIZE_EIGHT",
    "ADAPTER_SIZE_SIXTEEN",
    "ADAPTER_SIZE_THIRTY_TWO",
}
DEPLOYMENT_RESOURCES_TYPES = {"DEDICATED_RESOURCES": 1, "AUTOMATIC_RESOURCES": 2, "SHARED_RESOURCES": 3}
ENUM_NUMBERS = {"state": JOB_STATE_NUMBERS, "supportedDeploymentResourcesTypes": DEPLOYMENT_RESOURCES_TYPES}
LINES_CHECKED = 10  # Vertex validates a tuning file's format from its first lines
CREATE_TIME = "2026-01-01T00:00:00Z"
CUSTOM_JOB_START, CUSTOM_JOB_END = "2026-01-01T00:05:00Z", "2026-01-01T01:35:00Z"  # 1.5 machine-hours
RESPONSE_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."  # an operation's response is an Any
ANSWER_MEAN_LOGPROB, ANSWER_TOKENS = -0.01, 20  # what every Gemini answer reports
BATCH_OUTPUT = "prediction-model-2026-01-01T00:30:00.000000Z"  # the folder a batch job writes its answers in
BATCH_MALFORMED_EVERY, BATCH_FAILED_EVERY = 5, 13  # every 5th batch answer is malformed; every 13th request fails
MODEL_BATCH_SIZE = 64  # Vertex's default batch size for a custom model's batch prediction job
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
DISPLAY_NAME_FILTER = re.compile(r'(?:display_name|displayName)\s*=\s*("(?:[^"\\]|\\.)*")')
CREATE = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+)/(tuningJobs|customJobs|batchPredictionJobs)")
JOB = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/(?:tuningJobs|customJobs|batchPredictionJobs)/[^/:]+)(:cancel)?")
UPLOAD = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+)/models:upload")
MODEL = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/models/[^/:@]+)(?:@[^/:]+)?")
ENDPOINTS = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+)/endpoints")
ENDPOINT = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)(?::(\w+))?")
OPERATION = re.compile(r"/(v1|ui)/(projects/[^/]+/locations/[^/]+/(?:models|endpoints)/[^/]+/operations/[^/]+)")


class Refused(Exception):
    """An error answer: its HTTP status, gRPC status name and message."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass
class FakeJob:
    resource: dict[str, Any]  # the job as GET shows it, enums as names, less its state
    course: list[str]  # the states successive GETs show; the last one stays
    error: dict[str, Any] | None = None  # the google.rpc.Status the job ends with if its course ends FAILED
    gets: int = 0
    lines: list[dict[str, Any]] | None = None  # a model batch job's output lines, in input order, once worked out

    @property
    def state(self) -> str:
        """The state the latest GET showed (the first of the course before any GET)."""
        return self.course[min(max(self.gets - 1, 0), len(self.course) - 1)]


@dataclass
class FakeVertex:
    """The fake's state, which tests read and script: the requests it received, the jobs it holds."""

    bucket_client: storage.Client
    url: str = ""
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # method, path, body
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    unavailable: int = 0  # the next N requests answer 503
    next_failure: str = ""  # the next job created fails with this message
    taxonomy: Taxonomy | None = None  # what predictions and Gemini answers name: a test sets it to use them
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # uploaded, by name, as GET shows them
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name, as GET shows them
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name, as their first poll shows them
    answers: list[str] = field(default_factory=list)  # the next Gemini answers, in order (then `default_answer`)
    unfinished: int = 0  # the next N long-running operations never finish
    trainer_output: Path | None = None  # what a succeeded custom job leaves (default: a manifest and a stub adapter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def created(self, collection: str) -> list[dict[str, Any]]:
        """The bodies of the jobs created in a collection (`tuningJobs`, `customJobs`), oldest first."""
        return [body for method, path, body in self.received if method == "POST" and path.endswith(collection)]

    def cancelled(self) -> list[str]:
        return [path.removeprefix("/v1/").removesuffix(":cancel") for m, path, _ in self.received if ":cancel" in path]

    def requests(self, verb: str) -> list[dict[str, Any]]:
        """The bodies of the requests of a custom method (`models:upload`, `:deployModel`, `:predict`, ...)."""
        return [body for method, path, body in self.received if method == "POST" and path.endswith(verb)]

    def tuned_endpoint(self, location: str = "europe-west2") -> str:
        """The endpoint of a tuned Gemini model, as a succeeded tuning job leaves one, for tests that need no job."""
        prefix, number = f"projects/{PROJECT_NUMBER}/locations/{location}", next(self._ids)
        return self._add_tuned_endpoint(f"{prefix}/endpoints/{number}", f"{prefix}/models/{number}@1")

    def prediction_for(self, notes: str) -> dict[str, Any]:
        """What the serving app on a deployed endpoint answers for an observation: a label picked by the length of
        the notes (so a batch's answers differ), in the app's shape."""
        taxonomy = self._taxonomy()
        attributes = taxonomy.attributes
        chosen, runner_up = (attributes[(len(notes) + offset) % len(attributes)] for offset in (0, 1))
        suggestions = [Suggestion.of(taxonomy, chosen.id, 0.75), Suggestion.of(taxonomy, runner_up.id, 0.2)]
        return asdict(Prediction.ranked(suggestions, chosen.label_levels[0].title, 0.9, tags=[chosen.id]))

    def default_answer(self) -> str:
        """What a tuned Gemini model answers when a test scripted nothing: the taxonomy's first attribute, at its
        first level, in the answer format the tuning data taught."""
        taxonomy = self._taxonomy()
        attribute = taxonomy.attributes[0]
        return answer_json(Label(attribute.domain_id, attribute.id, attribute.label_levels[0].title), [], taxonomy)

    # ----- the API -------------------------------------------------------------------------------------
    def answer(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        with self.lock:
            self.received.append((method, path, body))
            if self.unavailable:
                self.unavailable -= 1
                raise Refused(503, "UNAVAILABLE", "The service is currently unavailable.")
            if method == "POST" and (create := CREATE.fullmatch(path)):
                return self._create(create.group(1), create.group(2), body)
            if job := JOB.fullmatch(path):
                name, cancel = job.groups()
                # The service answers to a job's project id as to its number (google-genai's batches use the id).
                name = re.sub(r"^projects/[^/]+/", f"projects/{PROJECT_NUMBER}/", name)
                if name not in self.jobs:
                    raise Refused(404, "NOT_FOUND", f"Job {name} not found.")
                if method == "POST" and cancel:
                    return self._cancel(self.jobs[name])
                if method == "GET" and not cancel:
                    return self._get(name, self.jobs[name])
            return self._serving_answer(method, path, body, query or {})

    def _serving_answer(self, method: str, path: str, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        if method == "POST" and (upload := UPLOAD.fullmatch(path)):
            return self._upload(upload.group(1), body)
        if method == "GET" and (model := MODEL.fullmatch(path)):
            if model.group(1) not in self.models:
                raise Refused(404, "NOT_FOUND", f"Model {model.group(1)} not found.")
            return self.models[model.group(1)]
        if collection := ENDPOINTS.fullmatch(path):
            if method == "POST":
                return self._create_endpoint(collection.group(1), body)
            if method == "GET":
                return self._list_endpoints(collection.group(1), query.get("filter", ""))
        if found := ENDPOINT.fullmatch(path):
            name, verb = found.groups()
            if name not in self.endpoints:
                raise Refused(404, "NOT_FOUND", f"Endpoint {name} not found.")
            endpoint = self.endpoints[name]
            if method == "GET" and not verb:
                return endpoint
            if method == "PATCH" and not verb:
                return self._update_endpoint(endpoint, body, query.get("updateMask", ""))
            serve = {
                "deployModel": self._deploy,
                "undeployModel": self._undeploy,
                "predict": self._predict,
                "generateContent": self._generate,
            }
            if method == "POST" and verb in serve:
                return serve[verb](endpoint, body)
        if method == "GET" and (operation := OPERATION.fullmatch(path)):
            if operation.group(2) not in self.operations:
                raise Refused(404, "NOT_FOUND", f"Operation {operation.group(2)} not found.")
            return self.operations[operation.group(2)]
        raise Refused(404, "NOT_FOUND", f"no such method: {method} {path}")

    def _create(self, parent: str, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        location = parent.split("/")[3]
        name = f"projects/{PROJECT_NUMBER}/locations/{location}/{collection}/{next(self._ids)}"
        failure = self.next_failure
        if collection == "tuningJobs":
            self._check_tuning_job(body)
        elif collection == "batchPredictionJobs" and self._uploaded(body.get("model")):
            self._check_model_batch_job(body)
        elif collection == "batchPredictionJobs":
            self._check_batch_job(body)
        else:
            self._check_custom_job(body)
            failure = failure or self._trainer_failure(body)
        self.next_failure = ""
        # A model batch job is dated now: its progress and the name of its output folder go by its times.
        created = _now() if collection == "batchPredictionJobs" and self._uploaded(body.get("model")) else CREATE_TIME
        job = FakeJob({**body, "name": name, "createTime": created}, list(FAILURE if failure else SUCCESS))
        if failure:
            job.error = {"code": 13, "message": failure}
        self.jobs[name] = job
        return {**job.resource, "state": job.state}

    def _get(self, name: str, job: FakeJob) -> dict[str, Any]:
        job.gets += 1
        if "customJobs" in name and job.state == "JOB_STATE_RUNNING":
            job.resource.setdefault("startTime", CUSTOM_JOB_START)
        if "customJobs" in name and job.state in FINISHED:
            job.resource.setdefault("endTime", CUSTOM_JOB_END)
        if job.state == "JOB_STATE_SUCCEEDED" and "customJobs" in name and job.gets == len(job.course):
            self._write_trainer_output(job.resource)  # once, as the job ends: a test may then remove files
        shown = {**job.resource, "state": job.state}
        if job.state in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED") and job.error:
            shown["error"] = job.error
        if job.state == "JOB_STATE_SUCCEEDED" and "tuningJobs" in name:
            shown |= self._tuned_model(name)
        if "batchPredictionJobs" in name and self._uploaded(job.resource.get("model")):
            return shown | self._model_batch_progress(job)
        if job.state == "JOB_STATE_SUCCEEDED" and "batchPredictionJobs" in name:
            shown |= self._batch_output(job)
        return shown

    def _cancel(self, job: FakeJob) -> dict[str, Any]:
        if job.state in FINISHED:
            raise Refused(400, "FAILED_PRECONDITION", f"Cannot cancel a job in state {job.state}.")
        job.course, job.gets = ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"], 0
        job.error = {"code": 1, "message": "CANCELED"}
        return {}

    # ----- serving: models, endpoints, predictions ---------------------------------------------------------
    def _upload(self, parent: str, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model") or {}
        _require(model.get("displayName"), "model.displayName is required")
        _require((model.get("containerSpec") or {}).get("imageUri"), "model.containerSpec.imageUri is required")
        artifacts = str(model.get("artifactUri", ""))
        _require(artifacts.startswith("gs://"), "model.artifactUri must be a gs:// URI")
        for key, value in (model.get("labels") or {}).items():
            _require(LABEL_KEY.fullmatch(key) and LABEL_VALUE.fullmatch(value), f"invalid label {key}={value!r}")
        name = f"{_named_by_number(parent)}/models/{next(self._ids)}"
        if not self._folder_exists(artifacts):  # found while the operation runs, not when it is requested
            return self._operation(name, error={"code": 3, "message": f"No model files found in {artifacts}."})
        self.models[name] = {
            **model,
            "name": name,
            "versionId": "1",
            "versionAliases": ["default"],
            "createTime": CREATE_TIME,
            "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],  # what a custom container serves on
        }
        return self._operation(
            name, response={"@type": f"{RESPONSE_TYPE}UploadModelResponse", "model": name, "modelVersionId": "1"}
        )

    def _create_endpoint(self, parent: str, body: dict[str, Any]) -> dict[str, Any]:
        _require(body.get("displayName"), "endpoint.displayName is required")
        name = f"{_named_by_number(parent)}/endpoints/{next(self._ids)}"
        self.endpoints[name] = {**body, "name": name, "createTime": CREATE_TIME}
        return self._operation(name, response={"@type": f"{RESPONSE_TYPE}Endpoint", **self.endpoints[name]})

    def _list_endpoints(self, parent: str, filter_: str) -> dict[str, Any]:
        wanted = DISPLAY_NAME_FILTER.fullmatch(filter_.strip())
        _require(not filter_ or wanted, f"unsupported filter {filter_!r}")
        display_name = json.loads(wanted.group(1)) if wanted else None
        found = [
            endpoint
            for name, endpoint in self.endpoints.items()
            if name.startswith(f"{_named_by_number(parent)}/") and display_name in (None, endpoint["displayName"])
        ]
        return {"endpoints": found} if found else {}

    def _deploy(self, endpoint: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        deployed = body.get("deployedModel") or {}
        model_name = str(deployed.get("model", "")).partition("@")[0]
        _require(model_name in self.models, f"deployedModel.model {deployed.get('model')!r} does not exist")
        resources = deployed.get("dedicatedResources")
        _require(resources, "the model supports DEDICATED_RESOURCES only: deployedModel needs dedicatedResources")
        _require(
            (resources.get("machineSpec") or {}).get("machineType"),
            "dedicatedResources.machineSpec.machineType is required",
        )
        minimum = int(resources.get("minReplicaCount", 0))
        _require(minimum >= 1, "dedicatedResources.minReplicaCount must be at least 1")
        _require(
            int(resources.get("maxReplicaCount", minimum)) >= minimum,
            "dedicatedResources.maxReplicaCount must be at least minReplicaCount",
        )
        split = body.get("trafficSplit") or {}
        known = {"0"} | {model["id"] for model in endpoint.get("deployedModels", [])}
        _require(
            set(split) <= known and sum(int(share) for share in split.values()) == 100,
            'trafficSplit must give 100 percent to deployed models ("0": the one deployed now)',
        )
        number = next(self._ids)
        shown = {
            **deployed,
            "id": str(number),
            "model": model_name,
            "modelVersionId": "1",
            "createTime": _seconds_after_create_time(number),
        }
        endpoint.setdefault("deployedModels", []).append(shown)
        endpoint["trafficSplit"] = {(shown["id"] if key == "0" else key): int(share) for key, share in split.items()}
        return self._operation(
            endpoint["name"], response={"@type": f"{RESPONSE_TYPE}DeployModelResponse", "deployedModel": shown}
        )

    def _update_endpoint(self, endpoint: dict[str, Any], body: dict[str, Any], update_mask: str) -> dict[str, Any]:
        """Update the fields the mask names (comma-separated, in JSON or proto spelling): here only the traffic
        split, which must give 100 percent to models deployed on the endpoint; answers the endpoint as GET does."""
        paths = {path.strip() for path in update_mask.split(",") if path.strip()}
        _require(paths, "updateMask is required")
        _require(paths <= {"trafficSplit", "traffic_split"}, f"the fake updates trafficSplit only, not {update_mask!r}")
        split = {key: int(share) for key, share in (body.get("trafficSplit") or {}).items()}
        deployed = {model["id"] for model in endpoint.get("deployedModels", [])}
        _require(
            set(split) <= deployed and sum(split.values()) == 100,
            "trafficSplit must give 100 percent to models deployed on the endpoint",
        )
        endpoint["trafficSplit"] = split
        return endpoint

    def _undeploy(self, endpoint: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Undeploy a model, which Vertex does only for one without traffic: the request's trafficSplit, when it has
        one, replaces the endpoint's first and so may move the model's traffic away."""
        deployed_id = str(body.get("deployedModelId", ""))
        deployed = endpoint.get("deployedModels", [])
        if deployed_id not in {model["id"] for model in deployed}:
            raise Refused(404, "NOT_FOUND", f"Deployed model {deployed_id!r} not found on endpoint {endpoint['name']}.")
        requested = {key: int(share) for key, share in (body.get("trafficSplit") or {}).items()}
        _require(
            not requested or (set(requested) <= {model["id"] for model in deployed} and sum(requested.values()) == 100),
            "trafficSplit must give 100 percent to deployed models",
        )
        split = requested or endpoint.get("trafficSplit") or {}
        if share := split.get(deployed_id):
            raise Refused(400, "FAILED_PRECONDITION", f"Deployed model {deployed_id} has {share}% of the traffic.")
        endpoint["deployedModels"] = [model for model in deployed if model["id"] != deployed_id]
        endpoint["trafficSplit"] = {key: share for key, share in split.items() if key != deployed_id}
        return self._operation(endpoint["name"], response={"@type": f"{RESPONSE_TYPE}UndeployModelResponse"})

    def _predict(self, endpoint: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        instances = body.get("instances")
        _require(isinstance(instances, list) and instances, "instances must not be empty")
        for instance in instances:  # the serving app refuses an instance without notes
            _require(
                isinstance(instance, dict) and isinstance(instance.get("notes"), str),
                f"every instance needs notes: {instance!r}",
            )
        traffic = endpoint.get("trafficSplit") or {}
        serving = [model for model in endpoint.get("deployedModels", []) if traffic.get(model["id"])]
        if not serving:
            raise Refused(400, "FAILED_PRECONDITION", f"Endpoint {endpoint['name']} has no deployed model.")
        deployed = max(serving, key=lambda model: traffic[model["id"]])
        return {
            "predictions": [self.prediction_for(instance["notes"]) for instance in instances],
            "deployedModelId": deployed["id"],
            "model": deployed["model"],
            "modelDisplayName": self.models[deployed["model"]]["displayName"],
            "modelVersionId": "1",
        }

    def _generate(self, endpoint: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if not endpoint.get("deployedModels"):
            raise Refused(400, "FAILED_PRECONDITION", f"Endpoint {endpoint['name']} has no deployed model.")
        problem = _contents_problem(body.get("contents"))
        _require(not problem, f"the request {problem}")
        answer = self.answers.pop(0) if self.answers else self.default_answer()
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": answer}]},
                    "finishReason": "STOP",
                    "avgLogprobs": ANSWER_MEAN_LOGPROB,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 80,
                "candidatesTokenCount": ANSWER_TOKENS,
                "totalTokenCount": 80 + ANSWER_TOKENS,
            },
            "modelVersion": endpoint["deployedModels"][0]["model"],
            "createTime": CREATE_TIME,
        }

    def _operation(self, resource: str, **outcome: dict[str, Any]) -> dict[str, Any]:
        """A long-running operation on a resource, not done when it starts and done (with its `response` or
        `error`) from its first poll on, unless a test asked for operations that never finish."""
        name = f"{resource}/operations/{next(self._ids)}"
        if self.unfinished:
            self.unfinished -= 1
            self.operations[name] = {"name": name, "done": False}
        else:
            self.operations[name] = {"name": name, "done": True, **outcome}
        return {"name": name, "done": False}

    def _add_tuned_endpoint(self, endpoint: str, model: str) -> str:
        self.endpoints.setdefault(
            endpoint, {"name": endpoint, "displayName": "tuned-gemini", "deployedModels": [{"id": "1", "model": model}]}
        )
        return endpoint

    def _uploaded(self, model: Any) -> bool:
        """Whether a job's model is one uploaded here (a Gemini's is not)."""
        return str(model or "").partition("@")[0] in self.models

    def _taxonomy(self) -> Taxonomy:
        if self.taxonomy is None:
            raise Refused(500, "INTERNAL", "the fake needs a taxonomy (FakeVertex.taxonomy) to predict")
        return self.taxonomy

    def _folder_exists(self, uri: str) -> bool:
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        prefix = f"{key.rstrip('/')}/" if key else ""
        return any(self.bucket_client.list_blobs(bucket, prefix=prefix, max_results=1))

    # ----- what the service checks ---------------------------------------------------------------------
    def _check_tuning_job(self, body: dict[str, Any]) -> None:
        tuning = body.get("supervisedTuningSpec") or {}
        _require(body.get("baseModel"), "baseModel is required")
        _require(
            str(tuning.get("trainingDatasetUri", "")).startswith("gs://"),
            "supervisedTuningSpec.trainingDatasetUri must be a gs:// URI",
        )
        hyper = tuning.get("hyperParameters") or {}
        _require(int(hyper.get("epochCount", 1)) > 0, "hyperParameters.epochCount must be positive")
        _require(hyper.get("adapterSize", "ADAPTER_SIZE_FOUR") in ADAPTER_SIZES, "unknown adapterSize")
        for key in ("trainingDatasetUri", "validationDatasetUri"):
            if key in tuning:
                problem = self._gemini_file_problem(tuning[key])
                _require(not problem, f"supervisedTuningSpec.{key}: {problem}")

    def _check_custom_job(self, body: dict[str, Any]) -> None:
        _require(body.get("displayName"), "displayName is required")
        pools = (body.get("jobSpec") or {}).get("workerPoolSpecs") or []
        _require(pools, "jobSpec.workerPoolSpecs needs at least one worker pool")
        for pool in pools:
            machine, container = pool.get("machineSpec") or {}, pool.get("containerSpec") or {}
            _require(machine.get("machineType"), "workerPoolSpecs.machineSpec.machineType is required")
            _require(int(pool.get("replicaCount", 0)) > 0, "workerPoolSpecs.replicaCount must be positive")
            _require(container.get("imageUri"), "workerPoolSpecs.containerSpec.imageUri is required")
            _require(
                bool(machine.get("acceleratorType")) == bool(machine.get("acceleratorCount")),
                "machineSpec.acceleratorType and acceleratorCount go together",
            )

    def _check_batch_job(self, body: dict[str, Any]) -> None:
        _require(body.get("model"), "model is required")
        source = (body.get("inputConfig") or {}).get("gcsSource") or {}
        _require(source.get("uris"), "inputConfig.gcsSource.uris is required")
        prefix = ((body.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix", "")
        _require(str(prefix).startswith("gs://"), "outputConfig.gcsDestination.outputUriPrefix must be a gs:// URI")
        for uri in source["uris"]:
            blob = self._blob(uri)
            _require(blob.exists(), f"inputConfig.gcsSource: {uri} does not exist")
            for number, line in enumerate(blob.download_as_text().splitlines()[:LINES_CHECKED], start=1):
                try:
                    contents = (json.loads(line).get("request") or {}).get("contents")
                except (json.JSONDecodeError, AttributeError):
                    contents = None
                problem = _contents_problem(contents)
                _require(not problem, f"{uri}: line {number}: the request {problem}")

    def _check_model_batch_job(self, body: dict[str, Any]) -> None:
        """A batch prediction job of an uploaded model: JSON lines in and out (what a custom container takes), on the
        dedicated machines the model supports, its instances in the bucket, each a JSON object with the key field."""
        _require(body.get("displayName"), "displayName is required")
        inputs, outputs = body.get("inputConfig") or {}, body.get("outputConfig") or {}
        _require(inputs.get("instancesFormat") == "jsonl", "inputConfig.instancesFormat must be jsonl for this model")
        _require(outputs.get("predictionsFormat") == "jsonl", "outputConfig.predictionsFormat must be jsonl")
        prefix = (outputs.get("gcsDestination") or {}).get("outputUriPrefix", "")
        _require(str(prefix).startswith("gs://"), "outputConfig.gcsDestination.outputUriPrefix must be a gs:// URI")
        resources = body.get("dedicatedResources") or {}
        _require(
            (resources.get("machineSpec") or {}).get("machineType"),
            "the model supports DEDICATED_RESOURCES only: dedicatedResources.machineSpec.machineType is required",
        )
        starting = int(resources.get("startingReplicaCount", 1))
        _require(0 < starting <= int(resources.get("maxReplicaCount", 10)), "startingReplicaCount must be 1 to max")
        for key, value in (body.get("labels") or {}).items():
            _require(LABEL_KEY.fullmatch(key) and LABEL_VALUE.fullmatch(value), f"invalid label {key}={value!r}")
        key_field = (body.get("instanceConfig") or {}).get("keyField")
        uris = (inputs.get("gcsSource") or {}).get("uris")
        _require(uris, "inputConfig.gcsSource.uris is required")
        for uri in uris:
            blob = self._blob(uri)
            _require(blob.exists(), f"inputConfig.gcsSource: {uri} does not exist")
            for number, line in enumerate(blob.download_as_text().splitlines(), start=1):
                try:
                    instance = json.loads(line)
                except json.JSONDecodeError:
                    instance = None
                _require(isinstance(instance, dict), f"{uri}: line {number} is not a JSON object")
                _require(not key_field or key_field in instance, f"{uri}: line {number} has no key field {key_field}")

    def _gemini_file_problem(self, uri: str) -> str:
        blob = self._blob(uri)
        if not blob.exists():
            return f"{uri} does not exist"
        for number, line in enumerate(blob.download_as_text().splitlines()[:LINES_CHECKED], start=1):
            try:
                contents = json.loads(line).get("contents")
            except (json.JSONDecodeError, AttributeError):
                return f"line {number} is not a JSON object"
            if problem := _contents_problem(contents):
                return f"line {number} {problem}"
        return ""

    def _trainer_failure(self, body: dict[str, Any]) -> str:
        """Why the trainer container would exit with an error at once (no inputs), or ""."""
        args = _args(body)
        for flag in ("--train", "--valid", "--output"):
            if not args.get(flag, "").startswith("gs://"):
                return f"The replica workerpool0-0 exited with a non-zero status of 2: {flag} needs a gs:// URI"
        for flag in ("--train", "--valid"):
            if not self._blob(args[flag]).exists():
                return f"The replica workerpool0-0 exited with a non-zero status of 1: {args[flag]} not found"
        return ""

    # ----- what a job leaves behind ---------------------------------------------------------------------
    def _write_trainer_output(self, resource: dict[str, Any]) -> None:
        args = _args(resource)
        if self.trainer_output is not None:  # a real trained model stands for the trainer's output
            for file in sorted(p for p in self.trainer_output.rglob("*") if p.is_file()):
                relative = file.relative_to(self.trainer_output).as_posix()
                self._blob(f"{args['--output'].rstrip('/')}/{relative}").upload_from_string(file.read_bytes())
            return
        manifest = {
            "mode": args.get("--mode", "classifier"),
            "base_model": args.get("--base-model", ""),
            "metrics": {"attribute_accuracy": 0.61, "level_accuracy": 0.9, "eval_loss": 1.25},
        }
        output = args["--output"].rstrip("/")
        self._blob(f"{output}/manifest.json").upload_from_string(json.dumps(manifest))
        self._blob(f"{output}/adapter/adapter_model.safetensors").upload_from_string(b"adapter weights")

    def _batch_output(self, job: FakeJob) -> dict[str, Any]:
        """A succeeded batch job's answers, written once in Vertex's layout: one line per request with the request
        and its response; some answers deliberately malformed (`batch_answer`), some requests failed."""
        folder = f"{job.resource['outputConfig']['gcsDestination']['outputUriPrefix'].rstrip('/')}/{BATCH_OUTPUT}"
        requests = [
            json.loads(line)["request"]
            for uri in job.resource["inputConfig"]["gcsSource"]["uris"]
            for line in self._blob(uri).download_as_text().splitlines()
            if line.strip()
        ]
        lines = [self._batch_line(number, request) for number, request in enumerate(requests)]
        failed = sum(1 for line in lines if line["status"])
        predictions = self._blob(f"{folder}/predictions.jsonl")
        if not predictions.exists():
            predictions.upload_from_string("\n".join(json.dumps(line) for line in lines) + "\n")
        return {
            "outputInfo": {"gcsOutputDirectory": folder},
            "completionStats": {"successfulCount": str(len(lines) - failed), "failedCount": str(failed)},
            "startTime": CREATE_TIME,
            "endTime": "2026-01-01T00:30:00Z",
        }

    def _model_batch_progress(self, job: FakeJob) -> dict[str, Any]:
        """A model batch job as GET shows it beyond its state: its start time once running (when it was first shown
        running) with half its instances done, and once it succeeded its output (written once) and end time."""
        if job.state == "JOB_STATE_RUNNING":
            job.resource.setdefault("startTime", _now())
            lines = self._model_batch_lines(job)
            return {
                "startTime": job.resource["startTime"],
                "completionStats": _completion_stats(lines[: len(lines) // 2]),
            }
        if job.state in FINISHED:
            job.resource.setdefault("endTime", _now())
        if job.state != "JOB_STATE_SUCCEEDED":
            return {key: job.resource[key] for key in ("startTime", "endTime") if key in job.resource}
        lines = self._model_batch_lines(job)
        prefix = job.resource["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        model = self.models[str(job.resource["model"]).partition("@")[0]]
        created = job.resource["createTime"][:23] + "Z"  # to the millisecond, as Vertex names the folder
        folder = f"{prefix}/prediction-{re.sub(r'[^A-Za-z0-9_-]', '_', model['displayName'])}-{created}"
        answered = [line for line in lines if "prediction" in line]
        failed = [line for line in lines if "error" in line]
        shards = 2 if len(answered) > 1 else 1
        if not self._blob(f"{folder}/prediction.results-00000-of-{shards:05d}").exists():
            for shard in range(shards):  # interleaved: the output's order is no promise
                self._blob(f"{folder}/prediction.results-{shard:05d}-of-{shards:05d}").upload_from_string(
                    "".join(json.dumps(line) + "\n" for line in answered[shard::shards])
                )
            if failed:
                self._blob(f"{folder}/prediction.errors_stats-00000-of-00001").upload_from_string(
                    "".join(json.dumps(line) + "\n" for line in failed)
                )
        return {
            "startTime": job.resource["startTime"],
            "endTime": job.resource["endTime"],
            "outputInfo": {"gcsOutputDirectory": folder},
            "completionStats": {**_completion_stats(lines), "incompleteCount": "0"},
        }

    def _model_batch_lines(self, job: FakeJob) -> list[dict[str, Any]]:
        """What the serving app on the job's machines answers, one output line per instance in input order: the
        instances less the key field, `batchSize` at a time through the app's request model; a request it would
        refuse fails every instance it carries, the others are answered as the endpoint answers (`prediction_for`)."""
        if job.lines is None:
            key_field = (job.resource.get("instanceConfig") or {}).get("keyField")
            size = int((job.resource.get("manualBatchTuningParameters") or {}).get("batchSize") or MODEL_BATCH_SIZE)
            records = [
                json.loads(line)
                for uri in job.resource["inputConfig"]["gcsSource"]["uris"]
                for line in self._blob(uri).download_as_text().splitlines()
                if line.strip()
            ]
            job.lines = []
            for start in range(0, len(records), size):
                batch = records[start : start + size]
                sent = [{key: value for key, value in record.items() if key != key_field} for record in batch]
                refusal = _app_refusal(sent)
                for record, instance in zip(batch, sent):
                    line: dict[str, Any] = {"key": str(record[key_field])} if key_field else {"instance": instance}
                    if refusal:
                        line["error"] = {"status": "INVALID_ARGUMENT", "message": refusal}
                    else:
                        line["prediction"] = _as_doubles(self.prediction_for(instance["notes"]))
                    job.lines.append(line)
        return job.lines

    def _batch_line(self, number: int, request: dict[str, Any]) -> dict[str, Any]:
        line: dict[str, Any] = {"status": "", "processed_time": CREATE_TIME, "request": request}
        if number % BATCH_FAILED_EVERY == BATCH_FAILED_EVERY - 1:
            return {**line, "status": "Internal error occurred. Failed to get generateContentResponse."}
        prompt = "".join(part.get("text", "") for part in request["contents"][-1]["parts"])
        answer = self.batch_answer(number, prompt)
        line["response"] = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": answer}]},
                    "finishReason": "STOP",
                    "avgLogprobs": ANSWER_MEAN_LOGPROB,
                }
            ],
            "usageMetadata": {"promptTokenCount": len(prompt) // 4, "candidatesTokenCount": len(answer) // 4},
        }
        return line

    def batch_answer(self, number: int, prompt: str) -> str:
        """The tuned model's answer to the `number`-th request of a batch: a label picked by the prompt's length,
        except every `BATCH_MALFORMED_EVERY`-th, which is malformed in turn: cut off before its attribute (invalid),
        its attribute misspelt (repaired to the nearest), or prose naming no label (invalid)."""
        taxonomy = self._taxonomy()
        attribute = taxonomy.attributes[len(prompt) % len(taxonomy.attributes)]
        answer = answer_json(Label(attribute.domain_id, attribute.id, attribute.label_levels[0].title), [], taxonomy)
        if number % BATCH_MALFORMED_EVERY != BATCH_MALFORMED_EVERY - 1:
            return answer
        kind = (number // BATCH_MALFORMED_EVERY) % 3
        if kind == 0:
            return answer[: answer.index('"attribute"')]
        if kind == 1:
            return answer.replace(f'"{attribute.name}"', f'"{attribute.name[:-1]}"')
        return "This child is making good progress across the curriculum."

    def _tuned_model(self, name: str) -> dict[str, Any]:
        prefix, number = name.split("/tuningJobs/")
        model = f"{prefix}/models/{number}@1"
        return {
            "tunedModel": {"model": model, "endpoint": self._add_tuned_endpoint(f"{prefix}/endpoints/{number}", model)},
            "tuningDataStats": {  # int64 fields travel as strings
                "supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": "2",
                    "tuningStepCount": "8",
                    "totalBillableTokenCount": "1234",
                },
            },
            "endTime": "2026-01-01T01:00:00Z",
        }

    def _blob(self, uri: str) -> storage.Blob:
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        return self.bucket_client.bucket(bucket).blob(key)


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise Refused(400, "INVALID_ARGUMENT", message)


def _contents_problem(contents: Any) -> str:
    """What is wrong with a Gemini conversation (a tuning line's or a request's `contents`), or ""."""
    if not isinstance(contents, list) or not contents:
        return "has no contents"
    for turn in contents:
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "model"):
            return "has a content without the role user or model"
        parts = turn.get("parts")
        if not parts or not all(isinstance(p, dict) and ("text" in p or "fileData" in p) for p in parts):
            return "has a content without parts of text or fileData"
    return ""


def _app_refusal(instances: list[dict[str, Any]]) -> str:
    """Why the serving app would refuse a predict request of these instances (its 422), or "": its own request
    model decides (imported here, not at the top: it brings the model stack, which only these tests need)."""
    from pydantic import ValidationError

    from obs_platform.serving.app import PredictRequest

    try:
        PredictRequest.model_validate({"instances": instances})
    except ValidationError as refused:
        first = refused.errors()[0]
        return f"the model server answered 422: {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return ""


def _as_doubles(value: Any) -> Any:
    """A JSON value as Vertex writes a prediction it holds as a protobuf Value: every number a double."""
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _completion_stats(lines: list[dict[str, Any]]) -> dict[str, str]:
    """A batch job's completion stats over these output lines (int64 fields travel as strings)."""
    failed = sum(1 for line in lines if "error" in line)
    return {"successfulCount": str(len(lines) - failed), "failedCount": str(failed)}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds_after_create_time(seconds: int) -> str:
    """A create time `seconds` after CREATE_TIME: given a counter, what is created later is newer, as at Vertex."""
    return (datetime.fromisoformat(CREATE_TIME) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _named_by_number(parent: str) -> str:
    """`projects/{id}/locations/{location}` as Vertex names what it creates there: by project number."""
    return f"projects/{PROJECT_NUMBER}/locations/{parent.split('/')[3]}"


def _args(resource: dict[str, Any]) -> dict[str, str]:
    """The first worker pool's container args as flag → value (each trainer flag takes one value here)."""
    args = resource["jobSpec"]["workerPoolSpecs"][0]["containerSpec"].get("args", [])
    return dict(zip(args[::2], args[1::2]))


def _with_int_enums(value: Any) -> Any:
    """A response as `enum-encoding=int` asks for it: enums (job states, deployment resource types) as numbers."""
    if isinstance(value, dict):
        return {
            key: _enum_number(ENUM_NUMBERS[key], item) if key in ENUM_NUMBERS else _with_int_enums(item)
            for key, item in value.items()
        }
    return [_with_int_enums(item) for item in value] if isinstance(value, list) else value


def _enum_number(numbers: dict[str, int], value: Any) -> Any:
    return [numbers[item] for item in value] if isinstance(value, list) else numbers[value]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        parameters = {key: values[0] for key, values in parse_qs(query).items()}
        try:
            code, answer = 200, self.server.fake.answer(self.command, unquote(path), body, parameters)
            if "enum-encoding=int" in unquote(query):
                answer = _with_int_enums(answer)
        except Refused as refused:
            code, answer = (
                refused.code,
                {"error": {"code": refused.code, "message": refused.message, "status": refused.status}},
            )
        payload = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `received` instead
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, fake: FakeVertex):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@pytest.fixture
def fake_vertex(gcs_emulator: str) -> Iterator[FakeVertex]:
    """A fresh fake Vertex AI on a free loopback port, reading and writing the GCS emulator's bucket."""
    storage = pytest.importorskip("google.cloud.storage")
    fake = FakeVertex(storage.Client(project="fake-vertex"))
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


SERVING_IMAGE = "europe-west2-docker.pkg.dev/obs-proj/obs/obs-serving:test"
TRAINER_IMAGE = "europe-west2-docker.pkg.dev/obs-proj/obs/obs-trainer:test"


def fake_settings(fake: FakeVertex, gcs_emulator: str) -> VertexSettings:
    """Vertex settings for the project the fake serves, staging in the GCS emulator's bucket."""
    from obs_platform.cloud.vertex import VertexSettings

    return VertexSettings(
        project="obs-proj",
        region="europe-west2",
        staging_bucket=f"gs://{gcs_emulator}/vertex",
        trainer_image_uri=TRAINER_IMAGE,
        api_endpoint=fake.url,
        serving_image_uri=SERVING_IMAGE,
    )


def fake_environment(fake: FakeVertex, bucket: str) -> dict[str, str]:
    """The variables of a Vertex deployment on the fake, as `Settings.from_env` reads them (`bucket`: its staging)."""
    return {
        "OBS_PLATFORM_BACKEND": "vertex",
        "OBS_PLATFORM_VERTEX_PROJECT": "obs-proj",
        "OBS_PLATFORM_VERTEX_REGION": "europe-west2",
        "OBS_PLATFORM_VERTEX_BUCKET": bucket,
        "OBS_PLATFORM_VERTEX_TRAINER_IMAGE": TRAINER_IMAGE,
        "OBS_PLATFORM_VERTEX_SERVING_IMAGE": SERVING_IMAGE,
        "OBS_PLATFORM_VERTEX_API_ENDPOINT": fake.url,
    }

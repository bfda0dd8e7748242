"""A fake of the Vertex AI REST API on loopback, for the real SDKs (google-genai, google-cloud-aiplatform) to talk
to over real HTTP.

It serves what the Vertex backends use: tuningJobs and customJobs, create, get and cancel, under
`/v1/projects/{project}/locations/{location}/` (both creates answer with the job itself: there is no long-running
operation to poll). It refuses, as the service does, a request without its required fields and a Gemini tuning
job whose files are not in the bucket (the GCS emulator) or whose first lines are not Gemini's format. A job
shows PENDING, RUNNING, then SUCCEEDED on successive GETs; a custom job runs "the trainer": it fails when its
`--train`/`--valid` files are missing, and on success leaves a manifest and an adapter in its `--output` folder.
Enums are names, or numbers for a client asking for `enum-encoding=int` (aiplatform does), as the service answers.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest

if TYPE_CHECKING:  # imported by the fixture: conftest imports this module for every test session
    from google.cloud import storage

PROJECT_NUMBER = "271828182845"  # Vertex names the resources it creates by project number, not id
JOB_STATE_NUMBERS = {  # google.cloud.aiplatform.v1.JobState
    "JOB_STATE_QUEUED": 1, "JOB_STATE_PENDING": 2, "JOB_STATE_RUNNING": 3, "JOB_STATE_SUCCEEDED": 4,
    "JOB_STATE_FAILED": 5, "JOB_STATE_CANCELLING": 6, "JOB_STATE_CANCELLED": 7, "JOB_STATE_PAUSED": 8,
    "JOB_STATE_EXPIRED": 9,
}  # fmt: skip
SUCCESS = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
FAILURE = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED")
FINISHED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
ADAPTER_SIZES = {"ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO", "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT",
                 "ADAPTER_SIZE_SIXTEEN", "ADAPTER_SIZE_THIRTY_TWO"}  # fmt: skip
LINES_CHECKED = 10  # Vertex validates a tuning file's format from its first lines
CREATE = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+)/(tuningJobs|customJobs)")
JOB = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/(?:tuningJobs|customJobs)/[^/:]+)(:cancel)?")


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
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def created(self, collection: str) -> list[dict[str, Any]]:
        """The bodies of the jobs created in a collection (`tuningJobs`, `customJobs`), oldest first."""
        return [body for method, path, body in self.received if method == "POST" and path.endswith(collection)]

    def cancelled(self) -> list[str]:
        return [path.removeprefix("/v1/").removesuffix(":cancel") for m, path, _ in self.received if ":cancel" in path]

    # ----- the API -------------------------------------------------------------------------------------
    def answer(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.received.append((method, path, body))
            if self.unavailable:
                self.unavailable -= 1
                raise Refused(503, "UNAVAILABLE", "The service is currently unavailable.")
            if method == "POST" and (create := CREATE.fullmatch(path)):
                return self._create(create.group(1), create.group(2), body)
            if job := JOB.fullmatch(path):
                name, cancel = job.groups()
                if name not in self.jobs:
                    raise Refused(404, "NOT_FOUND", f"Job {name} not found.")
                if method == "POST" and cancel:
                    return self._cancel(self.jobs[name])
                if method == "GET" and not cancel:
                    return self._get(name, self.jobs[name])
            raise Refused(404, "NOT_FOUND", f"no such method: {method} {path}")

    def _create(self, parent: str, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        location = parent.split("/")[3]
        name = f"projects/{PROJECT_NUMBER}/locations/{location}/{collection}/{next(self._ids)}"
        failure = self.next_failure
        if collection == "tuningJobs":
            self._check_tuning_job(body)
        else:
            self._check_custom_job(body)
            failure = failure or self._trainer_failure(body)
        self.next_failure = ""
        job = FakeJob(
            {**body, "name": name, "createTime": "2026-01-01T00:00:00Z"}, list(FAILURE if failure else SUCCESS)
        )
        if failure:
            job.error = {"code": 13, "message": failure}
        self.jobs[name] = job
        return {**job.resource, "state": job.state}

    def _get(self, name: str, job: FakeJob) -> dict[str, Any]:
        job.gets += 1
        if job.state == "JOB_STATE_SUCCEEDED" and "customJobs" in name and job.gets == len(job.course):
            self._write_trainer_output(job.resource)  # once, as the job ends: a test may then remove files
        shown = {**job.resource, "state": job.state}
        if job.state in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED") and job.error:
            shown["error"] = job.error
        if job.state == "JOB_STATE_SUCCEEDED" and "tuningJobs" in name:
            shown |= self._tuned_model(name, job.resource)
        return shown

    def _cancel(self, job: FakeJob) -> dict[str, Any]:
        if job.state in FINISHED:
            raise Refused(400, "FAILED_PRECONDITION", f"Cannot cancel a job in state {job.state}.")
        job.course, job.gets = ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"], 0
        job.error = {"code": 1, "message": "CANCELED"}
        return {}

    # ----- what the service checks ---------------------------------------------------------------------
    def _check_tuning_job(self, body: dict[str, Any]) -> None:
        tuning = body.get("supervisedTuningSpec") or {}
        _require(body.get("baseModel"), "baseModel is required")
        _require(str(tuning.get("trainingDatasetUri", "")).startswith("gs://"),
                 "supervisedTuningSpec.trainingDatasetUri must be a gs:// URI")  # fmt: skip
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
            _require(bool(machine.get("acceleratorType")) == bool(machine.get("acceleratorCount")),
                     "machineSpec.acceleratorType and acceleratorCount go together")  # fmt: skip

    def _gemini_file_problem(self, uri: str) -> str:
        blob = self._blob(uri)
        if not blob.exists():
            return f"{uri} does not exist"
        for number, line in enumerate(blob.download_as_text().splitlines()[:LINES_CHECKED], start=1):
            try:
                contents = json.loads(line).get("contents")
            except (json.JSONDecodeError, AttributeError):
                return f"line {number} is not a JSON object"
            if not isinstance(contents, list) or not contents:
                return f"line {number} has no contents"
            for turn in contents:
                if not isinstance(turn, dict) or turn.get("role") not in ("user", "model"):
                    return f"line {number}: every content needs the role user or model"
                parts = turn.get("parts")
                if not parts or not all(isinstance(p, dict) and ("text" in p or "fileData" in p) for p in parts):
                    return f"line {number}: every content needs parts with text or fileData"
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
        manifest = {
            "mode": args.get("--mode", "classifier"),
            "base_model": args.get("--base-model", ""),
            "metrics": {"attribute_accuracy": 0.61, "level_accuracy": 0.9, "eval_loss": 1.25},
        }
        output = args["--output"].rstrip("/")
        self._blob(f"{output}/manifest.json").upload_from_string(json.dumps(manifest))
        self._blob(f"{output}/adapter/adapter_model.safetensors").upload_from_string(b"adapter weights")

    @staticmethod
    def _tuned_model(name: str, resource: dict[str, Any]) -> dict[str, Any]:
        prefix, number = name.split("/tuningJobs/")
        return {
            "tunedModel": {"model": f"{prefix}/models/{number}@1", "endpoint": f"{prefix}/endpoints/{number}"},
            "tuningDataStats": {  # int64 fields travel as strings
                "supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": "2",
                    "tuningStepCount": "8",
                    "totalBillableTokenCount": "1234",
                },
            },  # fmt: skip
            "endTime": "2026-01-01T01:00:00Z",
        }

    def _blob(self, uri: str) -> storage.Blob:
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        return self.bucket_client.bucket(bucket).blob(key)


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise Refused(400, "INVALID_ARGUMENT", message)


def _args(resource: dict[str, Any]) -> dict[str, str]:
    """The first worker pool's container args as flag → value (each trainer flag takes one value here)."""
    args = resource["jobSpec"]["workerPoolSpecs"][0]["containerSpec"].get("args", [])
    return dict(zip(args[::2], args[1::2]))


def _with_int_enums(value: Any) -> Any:
    """A response as `enum-encoding=int` asks for it: job states as their numbers."""
    if isinstance(value, dict):
        return {
            key: JOB_STATE_NUMBERS[item] if key == "state" else _with_int_enums(item) for key, item in value.items()
        }
    return [_with_int_enums(item) for item in value] if isinstance(value, list) else value


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        try:
            code, answer = 200, self.server.fake.answer(self.command, path, body)
            if "enum-encoding=int" in unquote(query):
                answer = _with_int_enums(answer)
        except Refused as refused:
            code, answer = refused.code, {"error": {"code": refused.code, "message": refused.message,
                                                    "status": refused.status}}  # fmt: skip
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

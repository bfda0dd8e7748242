"""A registered model asked many observations at once on Vertex AI: a batch prediction job of its uploaded Vertex
Model (the one its endpoint serves, `VertexModelHost.model`), through aiplatform's generated job client as custom
jobs are (vertex.py says why not `aiplatform.Model.batch_predict`).

A submission is a folder in the bucket holding `instances.jsonl`: one line per observation, the redacted note, the
child's age and the observation's date as the serving app's predict route takes them, and the observation's id in
`observation_id`, the job's key field (`instanceConfig.keyField`): Vertex leaves it out of what it sends the model
and writes it back beside the answer. Vertex starts the serving image on its own machines and sends it the instances
`batch_size` at a time in the predict route's shape (`{"instances": [...]}`, as an endpoint would; at most the app's
64 a request), then writes, under `<submission>/output/prediction-<model>-<time>/`:

- `prediction.results-0000K-of-0000N`: `{"key": <id>, "prediction": <the app's prediction>}`, one line per answer;
- `prediction.errors_stats-0000K-of-0000N`: `{"key": <id>, "error": {"status" or "code", "message"}}` for each
  instance that got none (a request the app refused fails every instance it carried).

Answers come back in no promised order: each is matched to its observation by the key. `read_batch_output` never
raises on a line; an observation with no line at all is reported as such by the caller. The job carries the number
of instances it was given as its `instances` label, so its progress (the completion stats: instances answered or
failed) reads as a share of the whole wherever the job is looked at.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from obs_platform.cloud.vertex import VertexSettings, job_status, require_job_name, require_succeeded, translated_errors
from obs_platform.predictions import Instance, KeptAnswer, Prediction
from obs_platform.storage import Storage
from obs_platform.training.backend import JobError, JobState, JobStatus, ModelArtifact, TrainingProgress

if TYPE_CHECKING:
    from google.cloud.aiplatform_v1 import BatchPredictionJob, JobServiceClient

COLLECTION = "batchPredictionJobs"
INSTANCES_FILE = "instances.jsonl"
OUTPUT_FOLDER = "output"
KEY_FIELD = "observation_id"
INSTANCES_LABEL = "instances"
OUTPUT_FILES = ("prediction.results-", "prediction.errors_stats-")  # what Vertex names the answers and the failures
MAX_BATCH_SIZE = 64  # the serving app's MAX_BATCH: a larger request is refused whole
PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
JOB_FAILED_ON_IT = "the batch job failed on it"


def instances_jsonl(observation_ids: Sequence[str], instances: Sequence[Instance]) -> bytes:
    """The instances file: each observation as the predict route takes it (the note, the age and the date; no name),
    keyed by its id."""
    if len(set(observation_ids)) != len(observation_ids):
        raise ValueError("observation ids must be unique: the batch job's answers are matched to them")
    lines = []
    for observation_id, instance in zip(observation_ids, instances, strict=True):
        line: dict[str, Any] = {KEY_FIELD: str(observation_id), "notes": instance.notes}
        if instance.child_age_months is not None:
            line["child_age_months"] = instance.child_age_months
        if instance.observation_date is not None:
            line["observation_date"] = instance.observation_date.isoformat()
        lines.append(json.dumps(line, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def submitted_instances(instances: bytes) -> dict[str, str]:
    """The observation ids of an instances file, in order, each with the fingerprint of the instance sent for it
    (`Instance.fingerprint`: an answer holds for the observation while it reads the same)."""
    sent = {}
    for line in instances.splitlines():
        if line.strip():
            record = json.loads(line)
            day = record.get("observation_date")
            instance = Instance(
                notes=record["notes"],
                child_age_months=record.get("child_age_months"),
                observation_date=dt.date.fromisoformat(day) if day else None,
            )
            sent[str(record[KEY_FIELD])] = instance.fingerprint
    return sent


@dataclass(frozen=True)
class BatchOutput:
    """What a job wrote: a prediction per answered id, why each id it failed on has none (the job's error, or an
    answer not in the app's shape), and how many lines named no observation (not JSON, no key)."""

    answers: dict[str, Prediction] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unreadable: int = 0


def read_batch_output(lines: Iterable[bytes | str]) -> BatchOutput:
    """The answers and failures in a job's output lines (its results and error files, in any order)."""
    answers: dict[str, Prediction] = {}
    failed: dict[str, str] = {}
    unreadable = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = str(record["key"])
        except (ValueError, KeyError, TypeError):
            unreadable += 1  # no key: no observation to name (its id then has no line, which is reported)
            continue
        if key in answers:
            continue
        if "prediction" not in record:
            failed[key] = _error_text(record.get("error", "neither a prediction nor an error"))
            continue
        try:
            answers[key] = Prediction.from_dict(record["prediction"])
            failed.pop(key, None)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            failed[key] = f"its answer is not a prediction of the serving app ({exc!r})"
    return BatchOutput(answers, failed, unreadable)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        status = error.get("status") or error.get("code")
        message = error.get("message") or "no message"
        return f"{status}: {message}" if status else str(message)
    return str(error)


@dataclass(frozen=True)
class ArchiveSubmission:
    """One submission's folder, the ids it sent and what its job answered."""

    folder: str
    submitted: dict[str, str]  # observation id → the fingerprint of the instance sent for it
    output: BatchOutput
    output_files: list[str]

    def reason(self, observation_id: str) -> str:
        """Why this job gave the observation it was sent no answer."""
        if observation_id in self.output.failed:
            return f"{JOB_FAILED_ON_IT}: {self.output.failed[observation_id]}"
        return "the batch job's output holds no answer for it"


def answered_submissions(storage: Storage, folder: str) -> list[ArchiveSubmission]:
    """Every submission under `folder` (one sub-folder each, named so that the newest sorts last) whose job wrote
    its output, read, oldest first."""
    outputs: dict[str, list[str]] = {}
    for path in storage.list_files(folder):
        parts = path.removeprefix(f"{folder.rstrip('/')}/").split("/")
        if len(parts) >= 3 and parts[1] == OUTPUT_FOLDER and parts[-1].startswith(OUTPUT_FILES):
            outputs.setdefault(parts[0], []).append(path)
    submissions = []
    for name in sorted(outputs):
        submission = f"{folder.rstrip('/')}/{name}"
        files = _newest_output(outputs[name])
        lines = [line for path in files for line in storage.read_bytes(path).splitlines()]
        submitted = submitted_instances(storage.read_bytes(f"{submission}/{INSTANCES_FILE}"))
        submissions.append(ArchiveSubmission(submission, submitted, read_batch_output(lines), files))
    return submissions


def held_answers(submissions: Sequence[ArchiveSubmission]) -> dict[str, KeptAnswer]:
    """Each observation's newest answer across the submissions (oldest first), with the fingerprint of the instance
    its job was sent: what a new submission need not send again."""
    held = {}
    for submission in submissions:
        for observation_id, prediction in submission.output.answers.items():
            if observation_id in submission.submitted:
                held[observation_id] = KeptAnswer(submission.submitted[observation_id], prediction)
    return held


def why_unanswered(submissions: Sequence[ArchiveSubmission], wanted: Mapping[str, str]) -> dict[str, str]:
    """Why each observation of `wanted` (its id → its instance's fingerprint now) has no answer for that instance:
    what the newest job sent it did (failed on it, or wrote no line for it), or that no job was sent it."""
    reasons = {}
    for observation_id, fingerprint in wanted.items():
        sent = [s for s in submissions if s.submitted.get(observation_id) == fingerprint]
        reasons[observation_id] = (
            sent[-1].reason(observation_id)
            if sent
            else "in no batch job's instances (new, or changed, since the last was submitted)"
        )
    return reasons


def _newest_output(paths: list[str]) -> list[str]:
    """The files of the newest `prediction-<model>-<time>` folder (a job run again on the same prefix adds one)."""
    newest = max(path.rsplit("/", 1)[0] for path in paths)
    return sorted(path for path in paths if path.rsplit("/", 1)[0] == newest)


@dataclass(frozen=True)
class BatchJobRequest:
    """A batch prediction job to submit: `model` (a Model's resource name) over the instances file at
    `instances_uri` (holding `instances` lines), answers under `output_uri`; checked before any (billed) request."""

    model: str
    instances_uri: str
    output_uri: str
    display_name: str
    labels: dict[str, str]
    instances: int
    batch_size: int = MAX_BATCH_SIZE
    replicas: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise JobError(f"batch_size must be 1 to {MAX_BATCH_SIZE} (the serving app's largest request)")
        if self.replicas < 1:
            raise JobError(f"replicas must be at least 1, not {self.replicas}")


class VertexModelBatchBackend:
    """Batch prediction jobs of an uploaded Vertex Model: submitted here, then polled by the job-status sensor through
    the backend protocol (status, result, cancel) like a tuning job. A job's result is its output folder, no model."""

    name = "vertex-model-batch"

    def __init__(self, settings: VertexSettings, client: JobServiceClient | None = None):
        self.settings = settings
        self._client = client

    @cached_property
    def client(self) -> JobServiceClient:
        return self._client or self.settings.job_service_client()

    def submit(self, request: BatchJobRequest) -> str:
        """Start the batch prediction job; returns its name at once."""
        from google.api_core.exceptions import GoogleAPICallError

        job = self._resource(request)
        with translated_errors(f"submit a batch prediction job on {request.instances_uri}", GoogleAPICallError):
            created = self.client.create_batch_prediction_job(
                parent=self.settings.parent, batch_prediction_job=job, timeout=self.settings.request_timeout_s
            )
        if not created.name:
            raise JobError("Vertex AI created a batch prediction job without a name")
        return created.name

    def _resource(self, request: BatchJobRequest) -> BatchPredictionJob:
        """The job to create: the Model's serving image on `replicas` serving machines of the configured type (an
        uploaded model's container runs on dedicated machines only), JSON lines in and out, keyed by observation."""
        from google.cloud.aiplatform_v1 import BatchPredictionJob

        job: dict[str, Any] = {
            "display_name": request.display_name,
            "model": request.model,
            "input_config": {"instances_format": "jsonl", "gcs_source": {"uris": [request.instances_uri]}},
            "instance_config": {"key_field": KEY_FIELD},
            "output_config": {
                "predictions_format": "jsonl",
                "gcs_destination": {"output_uri_prefix": request.output_uri},
            },
            "dedicated_resources": {
                "machine_spec": {"machine_type": self.settings.serving_machine_type},
                "starting_replica_count": request.replicas,
                "max_replica_count": request.replicas,
            },
            "manual_batch_tuning_parameters": {"batch_size": request.batch_size},
            "labels": {**request.labels, INSTANCES_LABEL: str(request.instances)},
        }
        if self.settings.service_account:
            job["service_account"] = self.settings.service_account
        return BatchPredictionJob(job)

    def status(self, job_id: str) -> JobStatus:
        return _status(self._job(job_id), datetime.now(UTC))

    def result(self, job_id: str) -> ModelArtifact:
        job = self._job(job_id)
        require_succeeded(job_id, _status(job, datetime.now(UTC)))
        folder = job.output_info.gcs_output_directory
        if not folder:
            raise JobError(f"batch prediction job {job_id} succeeded but names no output folder")
        stats = job.completion_stats
        metrics: dict[str, Any] = {
            "instances": _instances(job),
            "successful_count": stats.successful_count,
            "failed_count": stats.failed_count,
            "incomplete_count": stats.incomplete_count,
        }
        if job.resources_consumed.replica_hours:
            metrics["replica_hours"] = round(job.resources_consumed.replica_hours, 4)
        manifest = {"mode": "batch_prediction", "model": job.model, "output": folder, "metrics": metrics}
        return ModelArtifact(uri=folder, manifest=manifest, managed=True)

    def cancel(self, job_id: str) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"cancel batch prediction job {job_id}", GoogleAPICallError):
            self.client.cancel_batch_prediction_job(name=job_id, timeout=self.settings.request_timeout_s)

    def _job(self, job_id: str) -> BatchPredictionJob:
        from google.api_core.exceptions import GoogleAPICallError

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"read batch prediction job {job_id}", GoogleAPICallError):
            return self.client.get_batch_prediction_job(name=job_id, timeout=self.settings.request_timeout_s)


def _status(job: BatchPredictionJob, now: datetime) -> JobStatus:
    """The job's state (a job that answered only some instances is a success here: its answers are written, and the
    instances it failed on are named when the output is read), and its progress: the instances answered or failed
    of those it was given, from when it started running."""
    state = "JOB_STATE_SUCCEEDED" if job.state.name == PARTIALLY_SUCCEEDED else job.state.name
    status = job_status(state, job.error.message)
    stats, total = job.completion_stats, _instances(job)
    done = stats.successful_count + stats.failed_count
    started = job.start_time or job.create_time
    elapsed = max(((job.end_time or now) - started).total_seconds(), 0.0) if started else 0.0
    detail = TrainingProgress(elapsed=elapsed, step=done, total_steps=total, unit="instances")
    progress = 1.0 if status.state is JobState.SUCCEEDED else (min(done / total, 1.0) if total else 0.0)
    return JobStatus(status.state, progress, status.message, detail)


def _instances(job: BatchPredictionJob) -> int:
    """The number of instances the job was given (its label; 0 when it has none, a job not submitted here)."""
    try:
        return max(int(job.labels.get(INSTANCES_LABEL, "0")), 0)
    except ValueError:
        return 0

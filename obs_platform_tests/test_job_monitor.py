"""Watching tuning jobs through the backend protocol: outcomes reported once, an unreachable backend backed off
(never taken for a failure), expiry, and a watch that survives a restart as a cursor."""

import json
from pathlib import Path

import pytest

from obs_platform.storage import LocalStorage
from obs_platform.training.backend import (
    BackendUnavailable,
    JobError,
    JobState,
    JobStatus,
    ModelArtifact,
    TrainingSpec,
)
from obs_platform.training.monitor import Backoff, JobWatch, WatchedJob
from obs_platform.training.registry import ModelRegistry

SPEC = TrainingSpec(train_uri="t.jsonl", valid_uri="v.jsonl", dataset_version="data-1")


class ScriptedBackend:
    """The tuning-backend protocol over states a test sets; `unavailable` makes the next N questions fail."""

    name = "scripted"

    def __init__(self, outputs: Path):
        self.outputs = outputs
        self.states: dict[str, JobStatus] = {}
        self.unavailable = 0
        self.asked: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, spec: TrainingSpec) -> str:
        job_id = f"job-{len(self.states) + 1}"
        self.states[job_id] = JobStatus(JobState.RUNNING, 0.0)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        self.asked.append(job_id)
        if self.unavailable:
            self.unavailable -= 1
            raise BackendUnavailable("503 Service Unavailable")
        if job_id not in self.states:
            raise JobError(f"no job {job_id}")
        return self.states[job_id]

    def result(self, job_id: str) -> ModelArtifact:
        folder = self.outputs / job_id
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"metrics": {"attribute_accuracy": 0.5, "epoch": 2}, "mode": "classifier"}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "adapter.safetensors").write_bytes(b"weights")
        return ModelArtifact(uri=str(folder), manifest=manifest)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.states[job_id] = JobStatus(JobState.CANCELLED, 0.0, "cancelled")


@pytest.fixture
def backend(tmp_path) -> ScriptedBackend:
    return ScriptedBackend(tmp_path / "outputs")


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(LocalStorage(tmp_path / "home"))


def watch_of(backend: ScriptedBackend, *job_ids: str, submitted_at: float = 1000.0) -> JobWatch:
    watch = JobWatch()
    for job_id in job_ids:
        watch.add(WatchedJob(job_id, backend.name, "m", "tests", SPEC.to_dict(), submitted_at))
    return watch


def poll(watch, backend, registry, now=1010.0, timeout=3600.0):
    return watch.poll({backend.name: backend}, registry, timeout_seconds=timeout, backoff=Backoff(30, 600), now=now)


def test_a_success_is_registered_and_reported_once(backend, registry):
    job_id = backend.submit(SPEC)
    watch = watch_of(backend, job_id)
    assert poll(watch, backend, registry) == ([], [])  # still running: nothing to say, still watched
    assert job_id in watch.jobs
    backend.states[job_id] = JobStatus(JobState.SUCCEEDED, 1.0)
    [outcome], _ = poll(watch, backend, registry)
    assert outcome.state is JobState.SUCCEEDED and outcome.version.label == "m/v1"
    assert outcome.metrics == {"attribute_accuracy": 0.5, "epoch": 2}
    assert outcome.version.job_id == job_id and outcome.version.dataset_version == "data-1"
    assert not watch.jobs and poll(watch, backend, registry) == ([], [])
    # Watched again (a restart that lost the cursor's last move): the same version, not a second one.
    [again], _ = poll(watch_of(backend, job_id), backend, registry)
    assert again.version == outcome.version and len(registry.versions("m")) == 1


def test_an_unreachable_backend_is_backed_off_and_never_fails_the_job(backend, registry):
    job_id = backend.submit(SPEC)
    watch = watch_of(backend, job_id)
    backend.unavailable = 3
    waits = []
    now = 1010.0
    for _ in range(3):
        ended, unavailable = poll(watch, backend, registry, now=now)
        [job] = unavailable
        assert ended == [] and job.last_error == "503 Service Unavailable"
        waits.append(job.next_poll_at - now)
        assert poll(watch, backend, registry, now=job.next_poll_at - 1) == ([], [])  # not due: not asked
        now = job.next_poll_at
    assert waits == [30, 60, 120] and backend.asked.count(job_id) == 3
    backend.states[job_id] = JobStatus(JobState.SUCCEEDED, 1.0)
    [outcome], _ = poll(watch, backend, registry, now=now)
    assert outcome.state is JobState.SUCCEEDED
    assert Backoff(30, 600).delay(10) == 600  # capped


@pytest.mark.parametrize(
    "state, message",
    [(JobState.FAILED, "Traceback ...\nValueError: no such model"), (JobState.CANCELLED, "cancelled by a person")],
)
def test_failed_and_cancelled_jobs_are_reported_with_the_backend_message(backend, registry, state, message):
    job_id = backend.submit(SPEC)
    backend.states[job_id] = JobStatus(state, 0.3, message)
    [outcome], _ = poll(watch_of(backend, job_id), backend, registry)
    assert (outcome.state, outcome.message, outcome.version) == (state, message, None)
    assert registry.versions("m") == []


def test_a_job_the_backend_forgot_is_reported_failed(backend, registry):
    [outcome], _ = poll(watch_of(backend, "job-lost"), backend, registry)
    assert outcome.state is JobState.FAILED and "no record of the job" in outcome.message


def test_a_job_past_its_time_limit_is_cancelled_and_reported_expired(backend, registry):
    job_id = backend.submit(SPEC)
    watch = watch_of(backend, job_id, submitted_at=0.0)
    [outcome], _ = poll(watch, backend, registry, now=7200.0, timeout=3600.0)
    assert outcome.state is JobState.EXPIRED and "after 3600 s" in outcome.message
    assert backend.cancelled == [job_id] and not watch.jobs


def test_the_watch_round_trips_through_a_cursor_and_adds_a_job_once(backend, registry):
    job_id = backend.submit(SPEC)
    watch = watch_of(backend, job_id)
    watch.after = 42
    backend.unavailable = 1
    poll(watch, backend, registry)
    restored = JobWatch.from_cursor(watch.to_cursor())  # a restarted daemon
    assert restored == watch and restored.jobs[job_id].unavailable == 1
    assert not restored.add(WatchedJob(job_id, backend.name, "m", "tests", SPEC.to_dict(), 5000.0))
    assert restored.jobs[job_id].submitted_at == 1000.0
    assert JobWatch.from_cursor(None) == JobWatch()


def test_jobs_of_a_backend_not_given_stay_watched(backend, registry):
    watch = JobWatch()
    watch.add(WatchedJob("vertex-1", "vertex", "m", "tests", SPEC.to_dict(), 1000.0))
    assert poll(watch, backend, registry) == ([], []) and backend.asked == []
    assert "vertex-1" in watch.jobs

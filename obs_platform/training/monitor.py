"""Watching submitted tuning jobs until they end, through the backend protocol only.

A poller (the Dagster job-status sensor, or `obs-platform run` without a daemon) keeps a `JobWatch` of the jobs
it is waiting for and calls `poll` now and then. A finished job comes back once as a `JobOutcome` (a success is
registered in the model registry first; registering is idempotent by job id); a job still open goes, with the
status its backend just gave, to the poller's `on_open` (to show how far it has come: no second question). A
backend that cannot be asked (`BackendUnavailable`, a network error) only delays the next question, doubling the
wait each time; a job open longer than its time limit is cancelled and reported EXPIRED. The watch is plain data,
so a poller can keep it in a cursor and pick up exactly where it stopped after a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

from obs_platform.training.backend import (
    BackendUnavailable,
    JobError,
    JobState,
    JobStatus,
    ModelArtifact,
    TuningBackend,
)
from obs_platform.training.registry import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class WatchedJob:
    """A submitted job a poller waits for, and how its polling goes."""

    job_id: str
    backend: str  # the name of the backend that runs it
    model_name: str  # the registry name its model is registered under ("": its result is no model)
    requested_by: str  # what asked for it (the Dagster sensor: the tuning-job asset), reported back with it
    spec: dict
    submitted_at: float
    unavailable: int = 0  # consecutive times the backend could not be asked
    next_poll_at: float = 0.0
    last_error: str = ""

    @property
    def dataset_version(self) -> str:
        return str(self.spec.get("dataset_version", ""))


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: its state, the backend's message (a failed local job's is the trainer's last log
    lines) and, for a success, the model version it was registered as."""

    job: WatchedJob
    state: JobState
    message: str = ""
    version: ModelVersion | None = None
    metrics: dict = field(default_factory=dict)
    artifact: ModelArtifact | None = None  # a success's result (a model, or a batch job's predictions)


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before asking an unavailable backend again: `first`, doubled each time, at most `most`."""

    first: float = 30.0
    most: float = 30 * 60.0

    def delay(self, failures: int) -> float:
        return min(self.first * 2 ** max(failures - 1, 0), self.most)


@dataclass
class JobWatch:
    """The jobs a poller waits for, and the poll that moves them on; serialisable as a cursor."""

    jobs: dict[str, WatchedJob] = field(default_factory=dict)
    after: int = 0  # the poller's own bookmark (the Dagster sensor: the last event it read)

    def add(self, job: WatchedJob) -> bool:
        """Watch a job, once: a job already watched keeps its polling state."""
        if job.job_id in self.jobs:
            return False
        self.jobs[job.job_id] = job
        return True

    def poll(
        self,
        backends: Mapping[str, TuningBackend],
        registry: ModelRegistry,
        *,
        timeout_seconds: float,
        backoff: Backoff = Backoff(),
        now: float | None = None,
        on_open: Callable[[WatchedJob, JobStatus], None] | None = None,
    ) -> tuple[list[JobOutcome], list[WatchedJob]]:
        """Ask each job's backend about every job that is due; returns the jobs that ended (and are no longer
        watched) and those whose backend could not be asked this time; each job still open goes to `on_open` with
        its status. A job of a backend not given (the deployment was switched to another one) stays watched until
        its backend is given again."""
        now = time.time() if now is None else now
        ended, unavailable = [], []
        for job in list(self.jobs.values()):
            backend = backends.get(job.backend)
            if backend is None or job.next_poll_at > now:
                continue
            try:
                outcome = _ask(backend, registry, job, timeout_seconds, now)
            except (BackendUnavailable, OSError) as exc:
                failures = job.unavailable + 1
                self.jobs[job.job_id] = replace(
                    job, unavailable=failures, next_poll_at=now + backoff.delay(failures), last_error=str(exc)
                )
                unavailable.append(self.jobs[job.job_id])
                continue
            if isinstance(outcome, JobStatus):
                self.jobs[job.job_id] = replace(job, unavailable=0, next_poll_at=0.0, last_error="")
                if on_open is not None:
                    on_open(self.jobs[job.job_id], outcome)
            else:
                del self.jobs[job.job_id]
                ended.append(outcome)
        return ended, unavailable

    # ----- as a cursor -------------------------------------------------------------------------------
    def to_cursor(self) -> str:
        return json.dumps({"after": self.after, "jobs": [asdict(job) for job in self.jobs.values()]})

    @classmethod
    def from_cursor(cls, cursor: str | None) -> JobWatch:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(jobs={job["job_id"]: WatchedJob(**job) for job in data["jobs"]}, after=int(data["after"]))


def _ask(
    backend: TuningBackend, registry: ModelRegistry, job: WatchedJob, timeout_seconds: float, now: float
) -> JobOutcome | JobStatus:
    """The job's outcome if it ended (a success registered first), its status while it runs."""
    try:
        status = backend.status(job.job_id)
    except JobError as exc:  # the backend has no such job (its records were wiped): it will never end
        return JobOutcome(job, JobState.FAILED, f"the {backend.name} backend has no record of the job: {exc}")
    if not status.state.finished:
        if now - job.submitted_at <= timeout_seconds:
            return status
        backend.cancel(job.job_id)
        return JobOutcome(job, JobState.EXPIRED, f"still {status.state.value} after {timeout_seconds:.0f} s: cancelled")
    if status.state is not JobState.SUCCEEDED:
        return JobOutcome(job, status.state, status.message)
    artifact = backend.result(job.job_id)
    version = (
        registry.register(
            job.model_name, artifact, dataset_version=job.dataset_version, job_id=job.job_id, spec=job.spec
        )
        if job.model_name
        else None  # a job whose result is no model (a batch prediction job's output folder)
    )
    metrics = {k: v for k, v in artifact.manifest.get("metrics", {}).items() if isinstance(v, int | float)}
    return JobOutcome(job, JobState.SUCCEEDED, status.message, version=version, metrics=metrics, artifact=artifact)

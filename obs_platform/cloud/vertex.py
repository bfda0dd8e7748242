"""Vertex AI settings, SDK clients and what the two Vertex backends share: job names, states and errors.

The SDKs are imported inside functions: google-cloud-aiplatform alone takes seconds to import, and loading the
Dagster definitions must not pay that for a deployment that never talks to Vertex.

Neither client retries on its own: the poller backs off on `BackendUnavailable`, and a blindly retried create
could start a job twice. Custom jobs go through the generated `aiplatform_v1.JobServiceClient` rather than
`aiplatform.CustomJob`: `CustomJob.get` and `.state` retry a 503 or a refused connection for 120 s with no way to
turn that off (a sensor tick would hang), each property read is one more request, and `aiplatform.init` is
process-wide state that two settings in one process would fight over.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypeVar

from pydantic import NonNegativeInt, StringConstraints

from obs_platform.environment import SettingsError, environment_model
from obs_platform.training.backend import BackendUnavailable, JobError, JobState, JobStatus, TrainingSpec

if TYPE_CHECKING:
    from google import genai
    from google.auth.credentials import Credentials
    from google.cloud.aiplatform_v1 import (
        EndpointServiceClient,
        JobServiceClient,
        ModelServiceClient,
        PredictionServiceClient,
    )
    from google.genai import types as genai_types

ENV_VARIABLES = {
    "project": "OBS_PLATFORM_VERTEX_PROJECT",
    "region": "OBS_PLATFORM_VERTEX_REGION",
    "staging_bucket": "OBS_PLATFORM_VERTEX_BUCKET",
    "trainer_image_uri": "OBS_PLATFORM_VERTEX_TRAINER_IMAGE",
    "service_account": "OBS_PLATFORM_VERTEX_SERVICE_ACCOUNT",
    "machine_type": "OBS_PLATFORM_VERTEX_MACHINE_TYPE",
    "accelerator_type": "OBS_PLATFORM_VERTEX_ACCELERATOR_TYPE",
    "accelerator_count": "OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT",
    "gemini_base_model": "OBS_PLATFORM_GEMINI_BASE_MODEL",
    "api_endpoint": "OBS_PLATFORM_VERTEX_API_ENDPOINT",
    "serving_image_uri": "OBS_PLATFORM_VERTEX_SERVING_IMAGE",
    "serving_machine_type": "OBS_PLATFORM_VERTEX_SERVING_MACHINE_TYPE",
    "keep_deployed": "OBS_PLATFORM_VERTEX_KEEP_DEPLOYED",
}
REQUIRED = ("project", "region", "staging_bucket", "trainer_image_uri")
GapicClient = TypeVar("GapicClient")

# Vertex's job states (the same names in google-genai and aiplatform) as the protocol's. A state this table does
# not know is taken for RUNNING: the poller keeps asking, and the time limit ends a job that never finishes.
STATES = {
    "JOB_STATE_QUEUED": JobState.PENDING,
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_CANCELLING": JobState.RUNNING,
    "JOB_STATE_UPDATING": JobState.RUNNING,
    "JOB_STATE_PAUSED": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobState.FAILED,  # finished with results missing: no whole model
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
    "JOB_STATE_EXPIRED": JobState.EXPIRED,
}
# HTTP statuses worth asking again for: timeout, quota, server errors (not 501, which stays unimplemented).
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
LABEL_VALUE_LENGTH = 63


class VertexConfigError(SettingsError):
    """The Vertex settings are incomplete or malformed."""


@dataclass(frozen=True)
class VertexSettings:
    """Where and how tuning jobs run on Vertex AI."""

    project: str
    region: str
    staging_bucket: str  # gs://bucket[/prefix]: custom jobs write their output under <bucket>/jobs/
    trainer_image_uri: str  # the trainer_container image, pushed to Artifact Registry
    service_account: str = ""  # "": the project's default Vertex AI service agent
    machine_type: str = "n1-standard-8"
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1  # 0: a CPU-only machine
    gemini_base_model: str = "gemini-2.5-flash"
    api_endpoint: str = ""  # "": Google's regional endpoint; tests point this at a loopback fake
    serving_image_uri: str = ""  # the image Vertex serves an uploaded model in ("": each upload names one)
    serving_machine_type: str = "n1-standard-2"  # an endpoint's machines
    keep_deployed: int = 0  # models a new champion replaces that stay deployed (at 0 % traffic) for rollback

    def __post_init__(self) -> None:
        if not self.staging_bucket.startswith("gs://"):
            raise VertexConfigError(f"the staging bucket must be a gs:// URI, not {self.staging_bucket!r}")
        if self.api_endpoint and not self.api_endpoint.startswith(("http://", "https://")):
            # Without a scheme the SDKs assume https, which a loopback fake does not speak.
            raise VertexConfigError(f"the API endpoint needs its scheme (http:// or https://): {self.api_endpoint!r}")
        if self.accelerator_count < 0:
            raise VertexConfigError(f"the accelerator count cannot be negative: {self.accelerator_count}")
        if self.keep_deployed < 0:
            raise VertexConfigError(f"the models kept deployed cannot be negative: {self.keep_deployed}")

    @classmethod
    def from_env(cls) -> VertexSettings:
        """The settings from `OBS_PLATFORM_VERTEX_*` variables (and `OBS_PLATFORM_GEMINI_BASE_MODEL`), in the
        environment or `.env`; the error names every required variable that is missing and every malformed value,
        so one attempt shows all there is to set. An unset or empty variable leaves the field's default."""
        given = _VertexVariables.read(_vertex_config_error).model_dump(exclude_none=True)
        return cls(**given)

    @property
    def parent(self) -> str:
        """The resource name jobs are created under."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def loopback(self) -> bool:
        """A plain-http endpoint is a local fake: Google's APIs answer on https only."""
        return self.api_endpoint.startswith("http://")

    @property
    def request_timeout_s(self) -> float:
        """How long one API call may take; a fake answers at once, so a hang fails a test in seconds."""
        return 10.0 if self.loopback else 60.0

    def genai_client(self) -> genai.Client:
        """A google-genai client for Vertex AI (the tunings API), on the v1 API."""
        from google import genai
        from google.genai import types

        options = types.HttpOptions(api_version="v1", timeout=int(self.request_timeout_s * 1000))
        if self.api_endpoint:
            options.base_url = self.api_endpoint.rstrip("/") + "/"
        return genai.Client(
            vertexai=True,
            project=self.project,
            location=self.region,
            credentials=self._credentials(),
            http_options=options,
        )

    def job_service_client(self) -> JobServiceClient:
        """Vertex AI's job service (custom jobs) over REST, on the region's endpoint."""
        from google.cloud.aiplatform_v1 import JobServiceClient

        return self._rest_client(JobServiceClient)

    def model_service_client(self) -> ModelServiceClient:
        """Vertex AI's model registry (uploads) over REST."""
        from google.cloud.aiplatform_v1 import ModelServiceClient

        return self._rest_client(ModelServiceClient)

    def endpoint_service_client(self) -> EndpointServiceClient:
        """Vertex AI's endpoints (creating them, deploying models to them) over REST."""
        from google.cloud.aiplatform_v1 import EndpointServiceClient

        return self._rest_client(EndpointServiceClient)

    def prediction_service_client(self) -> PredictionServiceClient:
        """Vertex AI's online predictions over REST."""
        from google.cloud.aiplatform_v1 import PredictionServiceClient

        return self._rest_client(PredictionServiceClient)

    def _rest_client(self, client_class: type[GapicClient]) -> GapicClient:
        """A generated aiplatform client over REST on the region's endpoint (or the configured one)."""
        endpoint = self.api_endpoint or f"{self.region}-aiplatform.googleapis.com"
        return client_class(
            credentials=self._credentials(), transport="rest", client_options={"api_endpoint": endpoint}
        )

    def _credentials(self) -> Credentials | None:
        """None (Application Default Credentials), or a placeholder token for a loopback fake: google-genai
        insists on a token, and anonymous credentials have none."""
        if not self.loopback:
            return None
        from google.oauth2.credentials import Credentials

        return Credentials(token="loopback-fake")


# The reader of ENV_VARIABLES: the required ones must be set; the others are None where unset (VertexSettings's
# default then applies), and the counts whole numbers from 0.
_VertexVariables = environment_model(
    "VertexVariables",
    ENV_VARIABLES,
    {
        **dict.fromkeys(ENV_VARIABLES, str),
        **dict.fromkeys(REQUIRED, Annotated[str, StringConstraints(min_length=1)]),
        "accelerator_count": NonNegativeInt,
        "keep_deployed": NonNegativeInt,
    },
    required=REQUIRED,
)


def _vertex_config_error(problems: str) -> VertexConfigError:
    return VertexConfigError(f"Vertex AI settings: {problems}")


def job_status(state_name: str, message: str) -> JobStatus:
    """The protocol's status of a Vertex job, from its state's name and its error message."""
    state = STATES.get(state_name, JobState.RUNNING)
    return JobStatus(state, 1.0 if state is JobState.SUCCEEDED else 0.0, message)


def genai_job_status(job: genai_types.TuningJob | genai_types.BatchJob) -> JobStatus:
    """The protocol's status of a job google-genai returns (a tuning or a batch prediction job)."""
    return job_status(job.state.value if job.state else "", (job.error.message or "") if job.error else "")


def require_succeeded(job_id: str, status: JobStatus) -> None:
    """JobError unless the job succeeded: only a finished job has a result."""
    if status.state is not JobState.SUCCEEDED:
        raise JobError(f"job {job_id} is {status.state.value}: {status.message or 'no result yet'}")


def require_job_name(job_id: str, collection: str) -> None:
    """JobError for an id that is no Vertex job name of this kind (the SDKs would fail with a ValueError)."""
    if not re.fullmatch(rf"projects/[^/]+/locations/[^/]+/{collection}/[^/]+", job_id):
        raise JobError(f"{job_id!r} is not a Vertex AI {collection} name (projects/…/locations/…/{collection}/…)")


def job_labels(spec: TrainingSpec) -> dict[str, str]:
    """Labels that find a job (and its bill) by the dataset version it trained on."""
    return {"dataset_version": label_value(spec.dataset_version)}


def label_value(text: str) -> str:
    """`text` as a Vertex label value, which allows lowercase letters, digits, `-` and `_`, at most 63 of them."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:LABEL_VALUE_LENGTH]


def unreachable_errors() -> tuple[type[Exception], ...]:
    """What the SDKs raise when Vertex cannot be reached or does not answer in time: google-genai goes through
    httpx, the generated clients through requests, and either may fail fetching a token through google-auth."""
    import httpx
    import requests
    from google.auth.exceptions import TransportError

    return (httpx.TransportError, requests.ConnectionError, requests.Timeout, TransportError)


@contextmanager
def translated_errors(action: str, api_error: type[Exception]) -> Iterator[None]:
    """Vertex's errors as the protocol's: unreachable, overloaded or a server error → BackendUnavailable, for the
    poller to ask again later; any other API error (404 an unknown job, 400 a refused request) → JobError.
    `api_error` is the SDK's error class; google-genai and google-api-core both keep the HTTP status in `code`."""
    try:
        yield
    except unreachable_errors() as exc:
        raise BackendUnavailable(f"cannot {action}: Vertex AI is unreachable: {exc}") from exc
    except api_error as exc:
        transient = getattr(exc, "code", None) in TRANSIENT_HTTP_STATUSES
        raise (BackendUnavailable if transient else JobError)(f"cannot {action}: {exc}") from exc

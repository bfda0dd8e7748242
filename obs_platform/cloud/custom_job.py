"""The project's trainer container as a Vertex AI custom job: the same `python -m trainer` a local job runs as a
subprocess, on a GPU machine, reading and writing `gs://` URIs.

A job writes under `<staging bucket>/jobs/<display name>-<id>/`; the trainer's output is the `model/` folder
there (what Vertex also hands the container as AIP_MODEL_DIR), and its `manifest.json` is the result's manifest,
with the job's cost added: its machine-hours (start to end time × replicas), priced when an hourly price is
configured.
"""

from __future__ import annotations

import json
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from obs_platform.cloud.costs import Prices, machine_hours, priced
from obs_platform.cloud.vertex import (
    VertexSettings,
    job_labels,
    job_status,
    require_job_name,
    require_succeeded,
    translated_errors,
)
from obs_platform.storage import storage_from_uri
from obs_platform.training.backend import JobError, JobStatus, ModelArtifact, TrainingSpec

if TYPE_CHECKING:
    from google.cloud.aiplatform_v1 import CustomJob, JobServiceClient

COLLECTION = "customJobs"
MODEL_FOLDER = "model"


class VertexCustomJobBackend:
    name = "vertex-custom-job"

    def __init__(self, settings: VertexSettings, client: JobServiceClient | None = None, prices: Prices | None = None):
        self.settings = settings
        self._client = client
        self.prices = prices or Prices()  # none configured: a job's cost is its machine-hours, without dollars

    @cached_property
    def client(self) -> JobServiceClient:
        return self._client or self.settings.job_service_client()

    def submit(self, spec: TrainingSpec) -> str:
        from google.api_core.exceptions import GoogleAPICallError

        with translated_errors(f"submit a custom job on {spec.train_uri}", GoogleAPICallError):
            job = self.client.create_custom_job(
                parent=self.settings.parent, custom_job=self.custom_job(spec), timeout=self.settings.request_timeout_s
            )
        return job.name

    def status(self, job_id: str) -> JobStatus:
        return _status(self._job(job_id))

    def result(self, job_id: str) -> ModelArtifact:
        from google.api_core.exceptions import GoogleAPICallError

        job = self._job(job_id)
        require_succeeded(job_id, _status(job))
        output = f"{job.job_spec.base_output_directory.output_uri_prefix.rstrip('/')}/{MODEL_FOLDER}"
        folder = storage_from_uri(output)
        with translated_errors(f"read the manifest of custom job {job_id}", GoogleAPICallError):
            if not folder.exists("manifest.json"):
                raise JobError(f"custom job {job_id} succeeded but its trainer wrote no {output}/manifest.json")
            manifest = json.loads(folder.read_bytes("manifest.json"))
        return ModelArtifact(uri=output, manifest={**manifest, "cost": self._cost(job)})

    def cancel(self, job_id: str) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"cancel custom job {job_id}", GoogleAPICallError):
            self.client.cancel_custom_job(name=job_id, timeout=self.settings.request_timeout_s)

    def custom_job(self, spec: TrainingSpec) -> CustomJob:
        """The job to create: one machine running the trainer image on the spec's files."""
        from google.cloud.aiplatform_v1 import CustomJob

        run = f"{spec.display_name}-{uuid.uuid4().hex[:8]}"
        base_output = f"{self.settings.staging_bucket.rstrip('/')}/jobs/{run}"
        machine: dict[str, Any] = {"machine_type": self.settings.machine_type}
        if self.settings.accelerator_count:
            machine |= {
                "accelerator_type": self.settings.accelerator_type,
                "accelerator_count": self.settings.accelerator_count,
            }
        worker_pool = {
            "machine_spec": machine,
            "replica_count": 1,
            "container_spec": {
                "image_uri": self.settings.trainer_image_uri,
                "args": spec.trainer_args(f"{base_output}/{MODEL_FOLDER}"),
            },
        }
        job_spec: dict[str, Any] = {
            "worker_pool_specs": [worker_pool],
            "base_output_directory": {"output_uri_prefix": base_output},
        }
        if self.settings.service_account:
            job_spec["service_account"] = self.settings.service_account
        return CustomJob(display_name=run, job_spec=job_spec, labels=job_labels(spec))

    def _cost(self, job: CustomJob) -> dict[str, Any]:
        """What Vertex bills the job for: its machine's hours from start to end, times the replicas (of the one
        worker pool `custom_job` gives it), and their price when one is configured."""
        pool = job.job_spec.worker_pool_specs[0]
        machine = pool.machine_spec
        hours = machine_hours(job.start_time, job.end_time, pool.replica_count)
        price = self.prices.training_usd_per_machine_hour
        return {
            "machine_hours": hours,
            "machine_type": machine.machine_type,
            "accelerator_type": machine.accelerator_type.name if machine.accelerator_count else None,
            "accelerator_count": machine.accelerator_count,
            "replica_count": pool.replica_count,
            "usd_per_machine_hour": price,
            "usd": None if hours is None else priced(hours, price),
        }

    def _job(self, job_id: str) -> CustomJob:
        from google.api_core.exceptions import GoogleAPICallError

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"read custom job {job_id}", GoogleAPICallError):
            return self.client.get_custom_job(name=job_id, timeout=self.settings.request_timeout_s)


def _status(job: CustomJob) -> JobStatus:
    return job_status(job.state.name, job.error.message)

"""Supervised tuning of a Gemini model on Vertex AI, through google-genai's tunings API.

The job trains on the `gemini_sft_jsonl` files (already in a bucket) and ends as a tuned model deployed to an
endpoint of Vertex's own: the result's URI is that endpoint, and nothing is downloaded.
(`vertexai.tuning.sft` would do the same, but it is deprecated and goes in June 2026.)
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from obs_platform.cloud.vertex import (
    VertexSettings,
    genai_job_status,
    job_labels,
    require_job_name,
    require_succeeded,
    translated_errors,
)
from obs_platform.training.backend import JobError, JobStatus, ModelArtifact, TrainingSpec

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

COLLECTION = "tuningJobs"
# Gemini's LoRA adapter sizes by rank: a spec's `lora_rank` picks one (4 when it names none).
ADAPTER_SIZES = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}


class GeminiTuningBackend:
    name = "vertex-gemini"

    def __init__(self, settings: VertexSettings, client: genai.Client | None = None):
        self.settings = settings
        self._client = client

    @cached_property
    def client(self) -> genai.Client:
        return self._client or self.settings.genai_client()

    def submit(self, spec: TrainingSpec) -> str:
        from google.genai import errors, types

        with translated_errors(f"submit a Gemini tuning job on {spec.train_uri}", errors.APIError):
            job = self.client.tunings.tune(
                base_model=self.base_model(spec),
                training_dataset=types.TuningDataset(gcs_uri=spec.train_uri),
                config=self._config(spec),
            )
        if not job.name:
            raise JobError("Vertex AI created a tuning job without a name")
        return job.name

    def status(self, job_id: str) -> JobStatus:
        return genai_job_status(self._job(job_id))

    def result(self, job_id: str) -> ModelArtifact:
        job = self._job(job_id)
        require_succeeded(job_id, genai_job_status(job))
        tuned = job.tuned_model
        if tuned is None or not tuned.endpoint:
            raise JobError(f"tuning job {job_id} succeeded but names no endpoint of its tuned model")
        manifest = {
            "mode": "gemini",
            "base_model": job.base_model,
            "tuned_model": tuned.model,
            "endpoint": tuned.endpoint,
            "tuning_job": job_id,
            "metrics": _data_stats(job),
        }
        return ModelArtifact(uri=tuned.endpoint, manifest=manifest, managed=True)

    def cancel(self, job_id: str) -> None:
        from google.genai import errors

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"cancel tuning job {job_id}", errors.APIError):
            self.client.tunings.cancel(name=job_id)

    def base_model(self, spec: TrainingSpec) -> str:
        """The spec's model when it names a Gemini model, else the configured one (a spec built for the
        open-source trainer names an encoder)."""
        return spec.base_model if spec.base_model.startswith("gemini-") else self.settings.gemini_base_model

    def _config(self, spec: TrainingSpec) -> types.CreateTuningJobConfig:
        from google.genai import types

        rank = int(spec.hyperparameters.get("lora_rank", 4))
        if rank not in ADAPTER_SIZES:
            raise JobError(f"Gemini has no adapter of rank {rank}: one of {sorted(ADAPTER_SIZES)}")
        return types.CreateTuningJobConfig(
            validation_dataset=types.TuningValidationDataset(gcs_uri=spec.valid_uri),
            epoch_count=int(spec.hyperparameters.get("epochs", 4)),
            learning_rate_multiplier=float(spec.hyperparameters.get("learning_rate_multiplier", 1.0)),
            adapter_size=types.AdapterSize(ADAPTER_SIZES[rank]),
            tuned_model_display_name=spec.display_name,
            labels=job_labels(spec),
            # The config has no service account field; the REST resource has, so it goes in the body as is.
            http_options=(
                types.HttpOptions(extra_body={"serviceAccount": self.settings.service_account})
                if self.settings.service_account
                else None
            ),
        )

    def _job(self, job_id: str) -> types.TuningJob:
        from google.genai import errors

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"read tuning job {job_id}", errors.APIError):
            return self.client.tunings.get(name=job_id)


def _data_stats(job: types.TuningJob) -> dict[str, Any]:
    """The numbers Vertex reports about the tuning data (examples, tokens, steps): a tuning job exposes no
    evaluation metrics of its own."""
    stats = job.tuning_data_stats.supervised_tuning_data_stats if job.tuning_data_stats else None
    if stats is None:
        return {}
    return {name: value for name, value in stats.model_dump().items() if isinstance(value, int | float)}

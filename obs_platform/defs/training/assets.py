"""The model assets: the tuning job (submitted, never waited for) and the tuned model it produces, which the
job-status sensor reports."""

import dagster as dg

from obs_platform.cloud.costs import estimate_tuning_cost
from obs_platform.cloud.vertex import VertexConfigError
from obs_platform.data.artifacts import TrainingFiles
from obs_platform.data.prepare import TAXONOMY_TEXTS_FILE, recorded_split_bundle
from obs_platform.defs.data.resources import FrameSummary, StorageResource, TaxonomyResource
from obs_platform.defs.event_log import own_previous_metadata
from obs_platform.defs.metadata import submitted_job
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.storage import storage_from_uri
from obs_platform.storage.base import MANIFEST
from obs_platform.training.backend import BackendUnavailable, JobError, TrainingSpec, TuningBackend
from obs_platform.training.registry import GEMINI_MODEL, ModelRegistry, ModelVersion

GROUP = "model"


def training_spec(
    splits: FrameSummary,
    chat_files: TrainingFiles,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    tuning: TuningBackendResource,
) -> TrainingSpec:
    """What the next job trains: the split files of these splits (or the chat files in `sft` mode) with the configured
    recipe."""
    if tuning.mode == "sft":
        folder, dataset_version = chat_files.folder_uri, chat_files.version
        return tuning.spec(f"{folder}/train.jsonl", f"{folder}/valid.jsonl", dataset_version)
    client = storage.client()
    bundle = recorded_split_bundle(splits.attrs, taxonomy.load())
    if bundle is None or not client.exists(f"{bundle}/{MANIFEST}"):
        raise dg.Failure(
            f"the split files of these splits are not under {client.uri(bundle)} (removed by a failed check, or the "
            "taxonomy changed since): materialise `training_splits` again"
        )
    folder, dataset_version = client.uri(bundle), bundle.rsplit("/", 1)[-1]
    return tuning.spec(
        f"{folder}/train.jsonl", f"{folder}/valid.jsonl", dataset_version, f"{folder}/{TAXONOMY_TEXTS_FILE}"
    )


@dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"})
def oss_tuning_job(
    context: dg.AssetExecutionContext,
    training_splits: FrameSummary,  # where its split files are: no row is read
    oss_sft_jsonl: TrainingFiles,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    tuning: TuningBackendResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """A LoRA tuning job for the open-source model on the newest data: the MiniLM classifier on the splits (the
    default, CPU) or, in `sft` mode, a causal LM on the chat files (GPU); a local subprocess, or a Vertex AI custom
    job running the trainer image. Submitted and returned at once: jobs run for minutes locally and hours on
    Vertex, and no run should sit blocked on one. `tuning_job_sensor` polls the job and reports
    `tuned_oss_model` when it ends. Nothing is submitted when a version was already trained on this dataset
    version with this recipe (that version is reported instead), nor while the same job still runs. Not
    automated: on Vertex a job costs money, so it starts from the landing sensor, the weekly schedule or the UI."""
    spec = training_spec(training_splits, oss_sft_jsonl, storage, taxonomy, tuning)
    return _submit_once(context, tuning.backend(storage), registry.registry(), tuning.model_name, spec, {})


@dg.asset(group_name=GROUP, kinds={"gemini", "googlecloud"})
def gemini_tuning_job(
    context: dg.AssetExecutionContext,
    gemini_sft_jsonl: TrainingFiles,
    tuning: TuningBackendResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """A managed supervised-tuning job of Gemini on Vertex AI, on the newest Gemini JSONL files (which must be in
    the deployment's bucket), with a cost estimate (training tokens × epochs × the configured price) in its
    metadata. Submitted and returned at once, like `oss_tuning_job`; `tuning_job_sensor` reports
    `tuned_gemini_model`. Vertex AI only: locally it fails and names what to set."""
    folder, dataset_version = gemini_sft_jsonl.folder_uri, gemini_sft_jsonl.version
    try:
        backend = tuning.gemini_backend()
    except VertexConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    spec = tuning.gemini_spec(f"{folder}/train.jsonl", f"{folder}/valid.jsonl", dataset_version)
    estimate = estimate_tuning_cost(
        storage_from_uri(folder).read_bytes("train.jsonl"),
        spec.hyperparameters["epochs"],
        tuning.vertex.tuning_usd_per_million_tokens,
    )
    cost = {
        "estimated_training_tokens": estimate.training_tokens,
        "estimated_usd": estimate.usd,
        "cost_estimate": dg.MetadataValue.json(estimate.to_dict()),
    }
    return _submit_once(context, backend, registry.registry(), GEMINI_MODEL, spec, cost)


def _submit_once(
    context: dg.AssetExecutionContext,
    backend: TuningBackend,
    models: ModelRegistry,
    model_name: str,
    spec: TrainingSpec,
    extra: dict,
) -> dg.MaterializeResult:
    """Submit the spec unless its model exists (reused) or its job still runs; the metadata is what the job-status
    sensor reads: outcome, job id, backend, registry name, spec, submission time."""
    facts = {
        "dataset_version": spec.dataset_version,
        "model_name": model_name,
        "spec": dg.MetadataValue.json(spec.to_dict()),
        **extra,
    }
    trained = models.find(model_name, dataset_version=spec.dataset_version, spec=spec.to_dict())
    if trained is not None:  # same data, same recipe: training again would only spend minutes (or money)
        context.log.info(f"{trained.label} was trained on dataset {spec.dataset_version} with this recipe: reused")
        return dg.MaterializeResult(metadata={"outcome": "reused", "model_version": trained.label, **facts})
    running = _running_job(context, backend, spec)
    if running is not None:
        context.log.info(f"job {running['job_id']} is already training this data with this recipe: not submitted again")
        return dg.MaterializeResult(metadata={**running, "outcome": "running", **facts})
    job_id = backend.submit(spec)
    context.log.info(f"submitted {backend.name} tuning job {job_id} on dataset {spec.dataset_version}")
    return dg.MaterializeResult(metadata=submitted_job(job_id, backend.name, base_model=spec.base_model, **facts))


def _running_job(context: dg.AssetExecutionContext, backend: TuningBackend, spec: TrainingSpec) -> dict | None:
    """The job this asset's previous materialisation submitted (id, backend, submission time), when it trains the
    same spec and has not ended: the asset's own state, kept in the event log where the job-status sensor finds
    every submission."""
    previous = own_previous_metadata(context) or {}
    if "job_id" not in previous or previous.get("backend") != backend.name or previous.get("spec") != spec.to_dict():
        return None
    try:
        state = backend.status(str(previous["job_id"])).state
    except (JobError, BackendUnavailable):
        return None
    return None if state.finished else {k: previous[k] for k in ("job_id", "backend", "submitted_at", "base_model")}


tuned_oss_model = dg.AssetSpec(
    "tuned_oss_model",
    deps=[oss_tuning_job],
    group_name=GROUP,
    kinds={"pytorch", "huggingface"},
    description="The registered model version a tuning job produced (or the version reused for the same data and "
    "recipe). Never executed by Dagster: `tuning_job_sensor` records its materialisation, with the job's "
    "metrics, when the job succeeds; evaluation and serving follow it by declarative automation.",
)

tuned_gemini_model = dg.AssetSpec(
    "tuned_gemini_model",
    deps=[gemini_tuning_job],
    group_name=GROUP,
    kinds={"gemini", "googlecloud"},
    description="A tuned Gemini, registered by reference to the Vertex endpoint its tuning job deployed it to. "
    "Never executed by Dagster: `tuning_job_sensor` records it when the Gemini tuning job succeeds.",
)


def version_metadata(models: ModelRegistry, version: ModelVersion) -> dict:
    manifest = version.manifest
    return {
        "model_version": version.label,
        "model_uri": dg.MetadataValue.path(version.uri),
        "aliases": dg.MetadataValue.json(models.aliases(version.name)),
        "mode": manifest.get("mode", "classifier"),
        "job_id": version.job_id,
        "dataset_version": version.dataset_version,
        "base_model": manifest.get("base_model"),
        "hyperparameters": dg.MetadataValue.json(version.spec.get("hyperparameters", {})),
        "epochs_run": manifest.get("epochs_run"),
        "best_epoch": manifest.get("best_epoch"),
        **{
            f"valid_{name}": value
            for name, value in manifest.get("metrics", {}).items()
            if isinstance(value, int | float) and name not in ("epoch", "step")
        },
    }

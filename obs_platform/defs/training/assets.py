"""The model assets: a tuned open-source model, trained by the tuning backend and registered."""

import time
from pathlib import Path

import dagster as dg

from obs_platform.defs.data.assets import training_splits
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.training.backend import JobState

GROUP = "model"
MODEL_NAME = "oss-classifier"


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialised yet")
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


@dg.asset(group_name=GROUP, deps=[training_splits], kinds={"pytorch", "huggingface"})
def tuned_oss_model(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    tuning: TuningBackendResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """LoRA-tuned MiniLM classifier on the current splits: submitted to the tuning backend, waited for,
    registered as the next version of `oss-classifier` (the first version becomes the champion)."""
    splits = _latest_metadata(context, training_splits.key)
    folder = str(splits["splits_uri"])
    spec = tuning.spec(f"{folder}/train.jsonl", f"{folder}/valid.jsonl", str(splits["dataset_version"]))
    backend = tuning.backend(storage)
    job_id = backend.submit(spec)
    context.log.info(f"submitted {backend.name} tuning job {job_id} on dataset {spec.dataset_version}")
    started = time.monotonic()
    reported, pause = -1.0, 0.5
    while not (status := backend.status(job_id)).state.finished:
        if time.monotonic() - started > tuning.timeout_seconds:
            backend.cancel(job_id)
            raise dg.Failure(f"tuning job {job_id} ran past {tuning.timeout_seconds:.0f} s and was cancelled")
        if status.progress - reported >= 0.25:
            context.log.info(f"job {job_id}: {status.state.value}, {status.progress:.0%}")
            reported = status.progress
        time.sleep(pause)
        pause = min(pause * 2, tuning.poll_seconds)
    if status.state is not JobState.SUCCEEDED:
        raise dg.Failure(
            f"tuning job {job_id} {status.state.value}",
            metadata={"job_id": job_id, "log_tail": dg.MetadataValue.md(f"```\n{status.message}\n```")},
        )
    artifact = backend.result(job_id)
    models = registry.registry()
    version = models.register(
        MODEL_NAME, Path(artifact.uri), manifest=artifact.manifest, dataset_version=spec.dataset_version, job_id=job_id
    )
    if "champion" not in models.aliases(MODEL_NAME):
        models.set_alias(MODEL_NAME, "champion", version.version)
    metrics = artifact.manifest.get("metrics", {})
    return dg.MaterializeResult(
        metadata={
            "model_version": version.label,
            "model_uri": dg.MetadataValue.path(version.uri),
            "aliases": dg.MetadataValue.json(models.aliases(MODEL_NAME)),
            "job_id": job_id,
            "backend": backend.name,
            "dataset_version": spec.dataset_version,
            "base_model": spec.base_model,
            "hyperparameters": dg.MetadataValue.json(spec.hyperparameters),
            "training_seconds": round(time.monotonic() - started, 1),
            "epochs_run": artifact.manifest.get("epochs_run"),
            "best_epoch": artifact.manifest.get("best_epoch"),
            **{f"valid_{name}": value for name, value in metrics.items() if isinstance(value, int | float)},
        }
    )

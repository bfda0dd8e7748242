"""The model assets: a tuned open-source model, trained by the tuning backend and registered."""

import time
from pathlib import Path

import dagster as dg

from obs_platform.defs.data.assets import oss_sft_jsonl, training_splits
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.training.backend import JobState
from obs_platform.training.registry import ModelRegistry, ModelVersion

GROUP = "model"


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialised yet")
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


@dg.asset(group_name=GROUP, deps=[training_splits, oss_sft_jsonl], kinds={"pytorch", "huggingface"})
def tuned_oss_model(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    tuning: TuningBackendResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """A LoRA-tuned open-source model: the MiniLM classifier on the splits (the default, CPU) or, in `sft`
    mode, a causal LM on the chat files (GPU). Submitted to the tuning backend, waited for, registered as the
    next version of `oss-classifier` (or `oss-sft`); evaluation decides whether it becomes the champion. A
    version already trained on the same dataset version with the same recipe is reused instead."""
    if tuning.mode == "sft":
        files = latest_metadata(context, oss_sft_jsonl.key)
        folder, dataset_version = str(files["folder_uri"]), str(files["dataset_version"])
    else:
        splits = latest_metadata(context, training_splits.key)
        folder, dataset_version = str(splits["splits_uri"]), str(splits["dataset_version"])
    spec = tuning.spec(f"{folder}/train.jsonl", f"{folder}/valid.jsonl", dataset_version)
    name = tuning.model_name
    models = registry.registry()
    trained = models.find(name, dataset_version=spec.dataset_version, spec=spec.to_dict())
    if trained is not None:  # same data, same recipe: training again would only spend minutes
        context.log.info(f"{trained.label} was trained on dataset {spec.dataset_version} with this recipe: reused")
        return dg.MaterializeResult(metadata={**_version_metadata(models, trained), "reused": True})
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
    version = models.register(
        name, Path(artifact.uri), manifest=artifact.manifest, dataset_version=spec.dataset_version,
        job_id=job_id, spec=spec.to_dict(),
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **_version_metadata(models, version),
            "reused": False,
            "backend": backend.name,
            "training_seconds": round(time.monotonic() - started, 1),
        }
    )


def _version_metadata(models: ModelRegistry, version: ModelVersion) -> dict:
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

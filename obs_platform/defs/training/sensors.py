"""The job-status sensor: polls every open tuning job through the backend protocol and reports how it ended.

Why a sensor returning `SensorResult(asset_events=...)` rather than a run request: `tuned_oss_model` is produced
by the tuning job, outside Dagster, so it is declared as an `AssetSpec` Dagster never executes, and the sensor
records its materialisation the moment the job's result is registered; no run is launched only to copy metadata.
Evaluation and serving follow it by declarative automation (`obs_platform/defs/automation.py`), and find the version
in the model registry (its `tuned` alias, which the sensor moves), not in the materialisation's metadata.

What is waited for comes from the event log, read through `obs_platform.defs.event_log` (each tuning-job
materialisation names its job); the cursor holds the last event read and the open jobs with their back-off state,
so a restarted daemon neither loses a job nor starts again from the beginning. A tick that crashed after its
events were stored but before its cursor was (Dagster stores the cursor last) finds the job's outcome already on
the tuning-job asset and does not report it twice.
"""

import time

import dagster as dg

from obs_platform.defs.analytics.assets import ARCHIVE_BATCH_JOB, ARCHIVE_PREDICTIONS
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.evaluation.gemini import gemini_batch_job, gemini_predictions
from obs_platform.defs.event_log import latest_materialization_metadata, materializations_after, recent_observations
from obs_platform.defs.training.assets import (
    gemini_tuning_job,
    oss_tuning_job,
    tuned_gemini_model,
    tuned_oss_model,
    version_metadata,
)
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.settings import Settings
from obs_platform.training.backend import JobState, JobStatus
from obs_platform.training.monitor import Backoff, JobOutcome, JobWatch, WatchedJob
from obs_platform.training.progress import status_line
from obs_platform.training.registry import TUNED, ModelRegistry

SENSOR_NAME = "tuning_job_sensor"
# Each tuning-job asset and the model asset its jobs produce.
TRACKS = {
    oss_tuning_job.key: tuned_oss_model.key,
    gemini_tuning_job.key: tuned_gemini_model.key,
    gemini_batch_job.key: gemini_predictions.key,  # a batch job's result is answers, not a model
    ARCHIVE_BATCH_JOB: ARCHIVE_PREDICTIONS,
}
READ_PER_TICK = 100  # new tuning-job events read per tick; more wait for the next one
OUTCOMES_REMEMBERED = 500  # how far back a tick looks for outcomes it already reported


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=Settings.from_env().sensor_interval_seconds,
    # On everywhere: it only reads job states, and without it a job submitted from the UI is never reported.
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def tuning_job_sensor(
    context: dg.SensorEvaluationContext,
    storage: StorageResource,
    tuning: TuningBackendResource,
    registry: ModelRegistryResource,
) -> dg.SensorResult:
    """Polls the open tuning jobs of every backend, and the batch prediction jobs (the Gemini evaluation's, the
    archive's); logs how far each open job has come (a bar with an ETA where its backend counts steps or
    instances); reports a success as a materialisation of what the job produced (`tuned_oss_model`,
    `tuned_gemini_model`, `gemini_predictions`, `archive_predictions`) with the job's metrics, and every ending
    (succeeded, failed with the trainer's last log lines, cancelled, expired) as an observation of the job's asset.
    An unreachable backend is asked again later, waiting twice as long each time."""
    watch = JobWatch.from_cursor(context.cursor)
    models = registry.registry()
    events: list[dg.AssetMaterialization | dg.AssetObservation] = []
    for job_key, requested in _new_requests(context.instance, watch):
        if requested.get("outcome") == "reused":
            events += _reused(context.instance, models, TRACKS[job_key], requested)
        elif "job_id" in requested:
            watch.add(_watched(job_key, requested))

    def progress(job: WatchedJob, status: JobStatus) -> None:
        context.log.info(f"{job.backend} job {job.job_id}: {status_line(status, time.time() - job.submitted_at)}")

    ended, unavailable = watch.poll(
        tuning.backends(storage),
        models,
        timeout_seconds=tuning.timeout_seconds,
        backoff=Backoff(),
        on_open=progress,
    )
    for job in unavailable:
        context.log.warning(
            f"{job.backend} backend unavailable for job {job.job_id} ({job.unavailable} times in a row): "
            f"{job.last_error}; asking again in {job.next_poll_at - time.time():.0f} s"
        )
    already = _reported_jobs(context.instance)
    for outcome in ended:
        if outcome.job.job_id in already:
            continue
        log = context.log.info if outcome.state is JobState.SUCCEEDED else context.log.error
        log(
            f"tuning job {outcome.job.job_id} {outcome.state.value}"
            + (f": {outcome.version.label}" if outcome.version else f"\n{outcome.message}")
        )
        events += _ended(models, outcome)
    if not events:
        return dg.SensorResult(
            skip_reason=f"{len(watch.jobs)} tuning job(s) open, none ended", cursor=watch.to_cursor()
        )
    return dg.SensorResult(asset_events=events, cursor=watch.to_cursor())


def _new_requests(instance: dg.DagsterInstance, watch: JobWatch) -> list[tuple[dg.AssetKey, dict]]:
    """The tuning-job materialisations after the cursor's bookmark, oldest first, with their metadata; the bookmark
    moves past them. Storage ids are shared by all assets, so one bookmark serves every tuning-job asset; when one
    asset has more new events than a tick reads, the others wait at the same point."""
    batches = {key: materializations_after(instance, key, watch.after, READ_PER_TICK) for key in TRACKS}
    full = [records[-1][0] for records in batches.values() if len(records) == READ_PER_TICK]
    horizon = min(full) if full else None
    found = sorted(
        ((storage_id, key, metadata) for key, records in batches.items() for storage_id, metadata in records),
        key=lambda item: item[0],
    )
    requests = []
    for storage_id, key, metadata in found:
        if horizon is not None and storage_id > horizon:
            break
        watch.after = max(watch.after, storage_id)
        requests.append((key, metadata))
    return requests


def _watched(job_key: dg.AssetKey, requested: dict) -> WatchedJob:
    return WatchedJob(
        job_id=str(requested["job_id"]),
        backend=str(requested["backend"]),
        model_name=str(requested["model_name"]),
        requested_by=job_key.to_user_string(),
        spec=dict(requested["spec"]),
        submitted_at=float(requested["submitted_at"]),
    )


def _reported_jobs(instance: dg.DagsterInstance) -> set[str]:
    return {
        str(metadata["job_id"])
        for key in TRACKS
        for metadata in recent_observations(instance, key, OUTCOMES_REMEMBERED)
        if "job_id" in metadata
    }


def _reused(
    instance: dg.DagsterInstance, models: ModelRegistry, model_key: dg.AssetKey, requested: dict
) -> list[dg.AssetMaterialization]:
    """A reused version becomes the tuned model again (the registry's `tuned` alias moves back to it), unless it
    already is (then nothing downstream re-runs)."""
    version = models.by_label(str(requested["model_version"]))
    models.set_alias(version.name, TUNED, version.version)
    current = latest_materialization_metadata(instance, model_key) or {}
    if current.get("model_version") == version.label:
        return []
    return [dg.AssetMaterialization(model_key, metadata={**version_metadata(models, version), "reused": True})]


def _ended(models: ModelRegistry, outcome: JobOutcome) -> list[dg.AssetMaterialization | dg.AssetObservation]:
    job = outcome.job
    seconds = round(time.time() - job.submitted_at, 1)
    facts = {
        "job_id": job.job_id,
        "state": outcome.state.value,
        "backend": job.backend,
        "dataset_version": job.dataset_version,
        "seconds_since_submission": seconds,
    }
    job_key = dg.AssetKey.from_user_string(job.requested_by)
    if outcome.state is JobState.SUCCEEDED and outcome.version is None and outcome.artifact is not None:
        answers = {
            "output_uri": dg.MetadataValue.path(outcome.artifact.uri),
            **_spec_facts(job.spec),
            "job_metrics": dg.MetadataValue.json(outcome.metrics),
        }
        return [
            dg.AssetObservation(job_key, metadata=facts),
            dg.AssetMaterialization(TRACKS[job_key], metadata={**facts, "job_seconds": seconds, **answers}),
        ]
    if outcome.version is None:
        message = dg.MetadataValue.md(f"```\n{outcome.message or '(no message)'}\n```")
        return [dg.AssetObservation(job_key, metadata={**facts, "message": message})]
    models.set_alias(outcome.version.name, TUNED, outcome.version.version)  # what evaluation and serving follow
    return [
        dg.AssetObservation(job_key, metadata={**facts, "model_version": outcome.version.label}),
        dg.AssetMaterialization(
            TRACKS[job_key],
            metadata={
                **version_metadata(models, outcome.version),
                "reused": False,
                "backend": job.backend,
                "job_seconds": seconds,
                "job_metrics": dg.MetadataValue.json(outcome.metrics),
                **_cost_metadata(outcome.version.manifest.get("cost", {})),
            },
        ),
    ]


def _spec_facts(spec: dict) -> dict:
    """What a batch job answered for (the model version, and the evaluation data or the number of instances it was
    submitted with)."""
    return {key: str(spec[key]) for key in ("model_version", "data_key", "instances") if key in spec}


def _cost_metadata(cost: dict) -> dict:
    """What the job cost, where its backend reckoned it (a custom job: machine-hours, priced when a price is
    configured): `obs-platform jobs` and the UI show it beside the model it paid for."""
    if not cost:
        return {}
    hours = {"machine_hours": cost["machine_hours"]} if "machine_hours" in cost else {}
    return {"estimated_usd": cost.get("usd"), **hours, "cost": dg.MetadataValue.json(cost)}

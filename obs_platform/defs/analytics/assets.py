"""The analytics assets: the archive scored by the champion and every version's evaluation history, as tables in
the warehouse analysts query with SQL (locally DuckDB, `<OBS_PLATFORM_HOME>/warehouse.duckdb`, schema `analytics`;
or BigQuery, `OBS_PLATFORM_WAREHOUSE=bigquery`, the default for a bucket).

Both follow the champion: their automation sensor (`analytics_automation`) requests them after `champion_model`
materialises, in a run of their own, so the deploy run does not wait for ~1,600 notes to be scored.

One graph for both deployments; what follows what differs (`deployment_assets`). Locally `scored_observations`
runs the champion itself, through the endpoint's predictor in batches. On a bucket the archive is scored on Vertex
AI, submit then sense as the Gemini evaluation is: `archive_batch_job` submits a batch prediction job of the
champion's Vertex Model (the one its endpoint serves) over the redacted notes and returns; `tuning_job_sensor`
polls it, logging a progress bar with an ETA, and reports `archive_predictions` when it succeeds; the same table is
then built from the job's answers (the table follows the predictions there, not the champion), and every
observation left without an answer is counted and named.
"""

import functools
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from obs_platform.cloud.endpoints import VertexModelHost
from obs_platform.cloud.model_batch import (
    INSTANCES_FILE,
    JOB_FAILED_ON_IT,
    OUTPUT_FOLDER,
    BatchJobRequest,
    VertexModelBatchBackend,
    answered_submissions,
    held_answers,
    instances_jsonl,
    why_unanswered,
)
from obs_platform.cloud.vertex import VertexConfigError, label_value
from obs_platform.data.reports import markdown_preview
from obs_platform.defs.analytics.resources import AnalyticsResource
from obs_platform.defs.automation import AFTER_NEW_MODELS
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model, evaluation_workspace
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.metadata import submitted_job
from obs_platform.defs.serving.resources import ServingResource
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation.archive import (
    answer_archive,
    archive_instances,
    kept_answers_jsonl,
    read_kept_answers,
    score_answers,
)
from obs_platform.evaluation.archive import evaluation_history as history_table
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage, Storage
from obs_platform.training.backend import TrainingProgress
from obs_platform.training.progress import progress_bar
from obs_platform.training.registry import GEMINI_MODEL, OSS_MODEL, OSS_SFT_MODEL, ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from obs_platform.serving.predictor import Predictor

GROUP = "analytics"
WAREHOUSE = "warehouse_io_manager"
DISAGREEMENT_COLUMNS = ["observation_id", "given_elg", "top1_elg", "confidence"]
ARCHIVE_BACKEND = VertexModelBatchBackend.name
ARCHIVE_FOLDER = "archive"  # under the champion's version folder: one sub-folder per batch job submitted
KEPT_ANSWERS_FILE = "answers.jsonl"  # beside them, locally: the champion's answers scored in process
UNSCORED_SHOWN = 20  # observations without a row listed in the metadata (all are counted)
# Other definition modules name these assets by key: a module without a `@dg.definitions` function hands Dagster
# every definition it holds, and a bucket's copies of the assets (`deployment_assets`) are other objects.
ARCHIVE_BATCH_JOB = dg.AssetKey("archive_batch_job")
ARCHIVE_PREDICTIONS = dg.AssetKey("archive_predictions")


class ProgressLog:
    """Scoring progress as a bar with an ETA in the run's log, at most every `every` seconds, and at the end."""

    def __init__(self, log: dg.DagsterLogManager, every: float):
        self.log, self.every, self.last = log, every, time.monotonic()

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if done < total and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = progress_bar(TrainingProgress(elapsed=elapsed, step=done, total_steps=total, unit="observations"))
        self.log.info(f"scoring {bar} ({rate:.1f} observations/s)")


def _champion(models: ModelRegistry, tuning: TuningBackendResource) -> ModelVersion:
    champion = models.champion(tuning.model_name)
    if champion is None:
        raise dg.Failure(f"{tuning.model_name} has no champion yet: `champion_model` promotes one")
    return champion


def archive_folder(version: ModelVersion) -> str:
    """Where a version's batch jobs over the archive keep their instances and answers (a folder per submission)."""
    return f"{version.folder}/{ARCHIVE_FOLDER}"


@dg.asset(group_name=GROUP, deps=[champion_model], kinds={"googlecloud"})
def archive_batch_job(
    context: dg.AssetExecutionContext,
    redacted_observations: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    tuning: TuningBackendResource,
    serving: ServingResource,
    analytics: AnalyticsResource,
) -> dg.MaterializeResult:
    """A Vertex AI batch prediction job of the champion over the redacted observations it has no answer for yet (a
    bucket deployment's way of scoring the archive): the instances (the redacted note, the age and the date, keyed by
    observation id; no name) are written to the bucket, the job is submitted on the champion's Vertex Model (uploaded
    once per revision, as its endpoint serves it) and this returns at once. `tuning_job_sensor` polls it and reports
    `archive_predictions`. An observation the champion's earlier jobs answered, reading as it does now, is not sent
    again; when none is left, no (billed) job is submitted."""
    home, models = storage.client(), registry.registry()
    if isinstance(home, LocalStorage):
        raise dg.Failure(
            f"a local OBS_PLATFORM_HOME ({home.root_uri}) has no batch job to submit: `scored_observations` scores "
            "the archive in process there"
        )
    champion = _champion(models, tuning)
    ids = redacted_observations["observation_id"].astype(str).tolist()
    instances = archive_instances(redacted_observations)
    held = held_answers(answered_submissions(home, archive_folder(champion)))
    todo = [k for k, i in enumerate(ids) if (a := held.get(i)) is None or a.fingerprint != instances[k].fingerprint]
    facts = {"model_version": champion.label, "observations": len(ids), "answers_held": len(ids) - len(todo)}
    if not todo:
        context.log.info(f"{champion.label} has answered every one of the {len(ids)} observations: no job submitted")
        return dg.MaterializeResult(metadata={"outcome": "answered", "instances": 0, **facts})
    host = serving.host(storage, taxonomy, models)
    if not isinstance(host, VertexModelHost):
        raise dg.Failure("scoring the archive on Vertex AI needs OBS_PLATFORM_BACKEND=vertex")
    try:
        model, uploaded = host.model(champion)
        backend = tuning.archive_backend()
    except VertexConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    submission = f"{archive_folder(champion)}/{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"  # the newest sorts last
    sent = instances_jsonl([ids[k] for k in todo], [instances[k] for k in todo])
    home.write_bytes(f"{submission}/{INSTANCES_FILE}", sent)
    job_id = backend.submit(
        BatchJobRequest(
            model=model,
            instances_uri=home.uri(f"{submission}/{INSTANCES_FILE}"),
            output_uri=home.uri(f"{submission}/{OUTPUT_FOLDER}"),
            display_name=f"obs-platform-archive-{champion.name}-v{champion.version}",
            labels={"model_version": label_value(champion.label)},
            instances=len(todo),
            batch_size=analytics.batch_size,
        )
    )
    context.log.info(f"submitted batch prediction job {job_id}: {len(todo)} observations to {champion.label}")
    return dg.MaterializeResult(
        metadata={
            **submitted_job(job_id, ARCHIVE_BACKEND),
            "model_name": "",  # the sensor registers no model for this job: its result is answers
            "dataset_version": champion.dataset_version,
            "instances": len(todo),
            **facts,
            "spec": dg.MetadataValue.json(
                {"model_version": champion.label, "dataset_version": champion.dataset_version, "instances": len(todo)}
            ),
            "vertex_model": model,
            "uploaded": uploaded,
            "instances_uri": dg.MetadataValue.path(home.uri(f"{submission}/{INSTANCES_FILE}")),
        }
    )


archive_predictions = dg.AssetSpec(
    ARCHIVE_PREDICTIONS,
    deps=[archive_batch_job],
    group_name=GROUP,
    kinds={"googlecloud"},
    description="The champion's answers for the archive, from a batch prediction job, in the bucket in Vertex's "
    "output layout. Never executed by Dagster: `tuning_job_sensor` records it when the batch job succeeds.",
)

# Locally the table follows the champion (the batch job's predictions never come); on a bucket it follows the
# predictions alone (scored on the champion's change, it would read the previous champion's answers).
SCORED_LOCALLY = AFTER_NEW_MODELS.ignore(dg.AssetSelection.assets(ARCHIVE_PREDICTIONS))
SCORED_FROM_PREDICTIONS = AFTER_NEW_MODELS.ignore(dg.AssetSelection.assets(champion_model))


@dg.asset(
    group_name=GROUP,
    deps=[champion_model, archive_predictions],
    kinds={"duckdb", "pytorch"},
    io_manager_key=WAREHOUSE,
    automation_condition=SCORED_LOCALLY,  # a bucket's: SCORED_FROM_PREDICTIONS (`deployment_assets`)
)
def scored_observations(
    context: dg.AssetExecutionContext,
    redacted_observations: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    tuning: TuningBackendResource,
    evaluation: EvaluationResource,
    analytics: AnalyticsResource,
) -> dg.Output[pd.DataFrame]:
    """The champion's suggestions for every canonical observation (redacted notes and ages; no names): the
    educator's primary tag beside the model's top three ELGs, its level and confidence, and whether the two agree.
    Locally scored through the endpoint's predictor, in batches; on a bucket read from the champion's batch
    prediction job (`archive_predictions`), each observation the job gave no answer named with why."""
    models, home = registry.registry(), storage.client()
    champion = _champion(models, tuning)
    if isinstance(home, LocalStorage):
        scored, facts = _scored_in_process(
            context, redacted_observations, storage, taxonomy, evaluation, analytics, models, champion
        )
    else:
        scored, facts = _scored_from_predictions(context, redacted_observations, home, taxonomy, champion)
    disagreements = scored[~scored["agrees"]].sort_values("confidence", ascending=False)
    return dg.Output(
        scored,
        metadata={
            "dagster/row_count": len(scored),
            "model_version": champion.label,
            **facts,
            "agreement": round(float(scored["agrees"].mean()), 4) if len(scored) else None,
            "top3_agreement": round(float(scored["given_in_top3"].mean()), 4) if len(scored) else None,
            "confident_disagreements": dg.MetadataValue.md(
                markdown_preview(disagreements, DISAGREEMENT_COLUMNS, rows=10, width=60)
            ),
        },
    )


def _scored_in_process(
    context: dg.AssetExecutionContext,
    observations: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    evaluation: EvaluationResource,
    analytics: AnalyticsResource,
    models: ModelRegistry,
    champion: ModelVersion,
) -> tuple[pd.DataFrame, dict]:
    from obs_platform.serving.predictor import load_predictor  # torch: only when the asset runs

    @functools.cache
    def predictor() -> "Predictor":  # loaded only when some observation has no kept answer
        model_dir = models.local_files(champion, evaluation_workspace(storage, evaluation) / "models")
        return load_predictor(model_dir, taxonomy.load(), runtime=analytics.runtime)  # type: ignore[arg-type]

    home = storage.client()
    kept_path = f"{archive_folder(champion)}/{KEPT_ANSWERS_FILE}"
    kept = read_kept_answers(home.read_bytes(kept_path)) if home.exists(kept_path) else {}
    started = time.monotonic()
    answered = answer_archive(
        observations,
        lambda batch: predictor().predict(batch),
        batch_size=analytics.batch_size,
        progress=ProgressLog(context.log, analytics.progress_every_seconds),
        kept=kept,
    )
    seconds = time.monotonic() - started
    home.write_bytes(kept_path, kept_answers_jsonl(answered.answers))
    answers = {observation_id: answer.prediction for observation_id, answer in answered.answers.items()}
    scored, _ = score_answers(observations, answers, taxonomy.load(), model_version=champion.label)
    asked = len(scored) - answered.reused
    return scored, {
        "runtime": analytics.runtime,
        "answers_reused": answered.reused,
        "observations_scored": asked,
        "seconds": round(seconds, 1),
        "observations_per_second": round(asked / seconds, 1) if asked and seconds > 0 else None,
    }


def _scored_from_predictions(
    context: dg.AssetExecutionContext,
    observations: pd.DataFrame,
    home: Storage,
    taxonomy: TaxonomyResource,
    champion: ModelVersion,
) -> tuple[pd.DataFrame, dict]:
    folder = archive_folder(champion)
    submissions = answered_submissions(home, folder)
    if not submissions:
        raise dg.Failure(
            f"no batch prediction job of {champion.label} has answered the archive yet (nothing under "
            f"{home.uri(folder)}): `archive_batch_job` submits one after each new champion, `tuning_job_sensor` "
            "reports `archive_predictions` when it succeeds, and this table follows"
        )
    ids = observations["observation_id"].astype(str).tolist()
    wanted = dict(zip(ids, (instance.fingerprint for instance in archive_instances(observations))))
    held = held_answers(submissions)
    answers = {i: a.prediction for i, a in held.items() if i in wanted and a.fingerprint == wanted[i]}
    reasons = why_unanswered(submissions, {i: f for i, f in wanted.items() if i not in answers})
    scored, unscored = score_answers(
        observations, answers, taxonomy.load(), model_version=champion.label, reasons=reasons
    )
    if scored.empty:
        raise dg.Failure(
            f"the batch jobs under {home.uri(folder)} answered none of the {len(ids)} observations: "
            + "; ".join(list(dict.fromkeys(unscored.values()))[:3])
        )
    if unscored:
        context.log.warning(
            f"{len(unscored)} of {len(ids)} observations have no row (no answer from the batch jobs): "
            + ", ".join(list(unscored)[:UNSCORED_SHOWN])
            + (" …" if len(unscored) > UNSCORED_SHOWN else "")
        )
    shown = pd.DataFrame({"observation_id": list(unscored), "reason": list(unscored.values())})
    newest = submissions[-1]
    return scored, {
        "scored_by": "Vertex AI batch prediction job",
        "batch_output": dg.MetadataValue.path(home.uri(newest.output_files[0].rsplit("/", 1)[0])),
        "batch_jobs_read": len(submissions),
        "submitted": len(newest.submitted),
        "failed_instances": sum(reason.startswith(JOB_FAILED_ON_IT) for reason in unscored.values()),
        "unreadable_lines": sum(s.output.unreadable for s in submissions),
        "unscored": len(unscored),
        "unscored_observations": dg.MetadataValue.md(
            markdown_preview(shown, ["observation_id", "reason"], rows=UNSCORED_SHOWN, width=120)
            if unscored
            else "every observation scored"
        ),
    }


@dg.asset(
    group_name=GROUP,
    deps=[champion_model],
    kinds={"duckdb"},
    io_manager_key=WAREHOUSE,
    automation_condition=AFTER_NEW_MODELS,  # refreshed when the champion changes, not for new data alone
)
def evaluation_history(registry: ModelRegistryResource) -> dg.Output[pd.DataFrame]:
    """Every stored evaluation report of every model version: one row per version, data, set evaluated on (test,
    external), system (the version itself, `is_model`, or what it was compared with), level and metric."""
    history = history_table(registry.registry(), (OSS_MODEL, OSS_SFT_MODEL, GEMINI_MODEL))
    return dg.Output(
        history,
        metadata={
            "dagster/row_count": len(history),
            "versions": int(history["model_version"].nunique()),
            "reports": int(history.groupby(["model_version", "data_key", "calibration"]).ngroups),
        },
    )


def deployment_assets(bucket: bool) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """The analytics assets as a deployment runs them. Locally the batch job is never requested (the table is scored
    in process after the champion changes); on a bucket the job is submitted after the champion changes and the
    table follows its predictions."""
    if not bucket:
        return [archive_batch_job, archive_predictions, scored_observations, evaluation_history]
    return [
        archive_batch_job.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=AFTER_NEW_MODELS)),
        archive_predictions,
        scored_observations.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=SCORED_FROM_PREDICTIONS)
        ),
        evaluation_history,
    ]


@dg.definitions
def analytics_assets() -> dg.Definitions:
    return dg.Definitions(assets=deployment_assets(Settings.from_env().home.startswith("gs://")))

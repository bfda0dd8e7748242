"""The analytics assets: the archive scored by the champion and every version's evaluation history, as tables in
the warehouse analysts query with SQL (locally DuckDB, `<OBS_PLATFORM_HOME>/warehouse.duckdb`, schema `analytics`;
or BigQuery, `OBS_PLATFORM_WAREHOUSE=bigquery`, the default for a bucket).

Both follow the champion: its automation sensor (`analytics_automation`) requests them after `champion_model`
materialises, in a run of their own, so the deploy run does not wait for ~1,600 notes to be scored."""

import time

import dagster as dg
import pandas as pd

from obs_platform.data.reports import markdown_preview
from obs_platform.defs.analytics.resources import AnalyticsResource
from obs_platform.defs.automation import AFTER_NEW_MODELS
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model, evaluation_workspace
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation.archive import evaluation_history as history_table
from obs_platform.evaluation.archive import score_archive
from obs_platform.storage import LocalStorage
from obs_platform.training.backend import TrainingProgress
from obs_platform.training.progress import progress_bar
from obs_platform.training.registry import GEMINI_MODEL, OSS_MODEL, OSS_SFT_MODEL

GROUP = "analytics"
WAREHOUSE = "warehouse_io_manager"
DISAGREEMENT_COLUMNS = ["observation_id", "given_elg", "top1_elg", "confidence"]


class ProgressLog:
    """Scoring progress as a bar with an ETA in the run's log, at most every `every` seconds, and at the end."""

    def __init__(self, log: dg.DagsterLogManager, every: float):
        self.log, self.every, self.last = log, every, time.monotonic()

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if done < total and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = progress_bar(TrainingProgress(elapsed=elapsed, step=done, total_steps=total))
        self.log.info(f"scoring {bar.replace('step ', 'observations ')} ({rate:.1f} observations/s)")


@dg.asset(
    group_name=GROUP,
    deps=[champion_model],
    kinds={"duckdb", "pytorch"},
    io_manager_key=WAREHOUSE,
    automation_condition=AFTER_NEW_MODELS,  # refreshed when the champion changes, not for new data alone
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
    Scored locally through the endpoint's predictor, in batches."""
    if not isinstance(storage.client(), LocalStorage):
        raise dg.Failure(
            f"scoring the archive needs a local OBS_PLATFORM_HOME, not {storage.root_uri}: a bucket deployment "
            "would score it with a Vertex batch prediction job, which is not built yet"
        )
    from obs_platform.serving.predictor import load_predictor  # torch: only when the asset runs

    models = registry.registry()
    champion = models.champion(tuning.model_name)
    if champion is None:
        raise dg.Failure(f"{tuning.model_name} has no champion yet: `champion_model` promotes one")
    model_dir = models.local_files(champion, evaluation_workspace(storage, evaluation) / "models")
    predictor = load_predictor(model_dir, taxonomy.load(), runtime=analytics.runtime)  # type: ignore[arg-type]
    started = time.monotonic()
    scored = score_archive(
        redacted_observations,
        predictor.predict,
        taxonomy.load(),
        batch_size=analytics.batch_size,
        progress=ProgressLog(context.log, analytics.progress_every_seconds),
        model_version=champion.label,
    )
    seconds = time.monotonic() - started
    disagreements = scored[~scored["agrees"]].sort_values("confidence", ascending=False)
    return dg.Output(
        scored,
        metadata={
            "dagster/row_count": len(scored),
            "model_version": champion.label,
            "runtime": analytics.runtime,
            "seconds": round(seconds, 1),
            "observations_per_second": round(len(scored) / seconds, 1) if seconds > 0 else None,
            "agreement": round(float(scored["agrees"].mean()), 4) if len(scored) else None,
            "top3_agreement": round(float(scored["given_in_top3"].mean()), 4) if len(scored) else None,
            "confident_disagreements": dg.MetadataValue.md(
                markdown_preview(disagreements, DISAGREEMENT_COLUMNS, rows=10, width=60)
            ),
        },
    )


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

"""Jobs over the asset graph. Training is split at the tuning job: `train` ends when the job is submitted; the
job-status sensor reports the tuned model; what follows (`deploy`) runs by declarative automation, or by hand."""

import dagster as dg

from obs_platform.settings import Settings

TRAIN_JOB = "train"
DEPLOY_JOB = "deploy"
DATA_JOB = "data"
REFRESH_JOB = "refresh"
EVALUATE_JOB = "evaluate"
MONITOR_JOB = "monitor"
ANALYTICS_JOB = "analytics"
# The warehouse tables: their own run, after the champion (with what the job-status sensor reports for them).
ANALYTICS = dg.AssetSelection.groups("analytics", include_sources=True)
SERVING_MONITOR = dg.AssetKey("serving_monitor")

TUNED_MODEL = dg.AssetKey("tuned_oss_model")
TUNED_GEMINI_MODEL = dg.AssetKey("tuned_gemini_model")


def analytics_run(bucket: bool) -> dg.AssetSelection:
    """What the `analytics` run builds: locally both tables (the archive scored in process); on a bucket the archive's
    batch job submitted and the evaluation history (the scored table follows the job's predictions, once the
    job-status sensor reports them)."""
    left_out = "scored_observations" if bucket else "archive_batch_job"
    return ANALYTICS - dg.AssetSelection.assets(left_out, "archive_predictions")  # the sensor reports those


@dg.definitions
def jobs() -> dg.Definitions:
    settings = Settings.from_env()
    # On Vertex AI the managed Gemini tuning job is submitted beside the open-source one; locally it cannot run.
    tuning_jobs = ["oss_tuning_job", "gemini_tuning_job"] if settings.backend == "vertex" else ["oss_tuning_job"]
    return dg.Definitions(
        jobs=[
            dg.define_asset_job(
                TRAIN_JOB,
                selection=dg.AssetSelection.groups("data") | dg.AssetSelection.assets("baselines", *tuning_jobs),
                description="Landing area → canonical → splits → training files → baselines → tuning jobs submitted "
                "(not waited for). Started by the landing sensor, the weekly schedule or the UI.",
            ),
            dg.define_asset_job(
                DEPLOY_JOB,
                selection=dg.AssetSelection.assets(TUNED_MODEL).downstream(include_self=False)
                - dg.AssetSelection.assets(SERVING_MONITOR)
                - ANALYTICS,
                description="Everything after the tuned model: calibration, evaluation report, promotion gate, "
                "champion and endpoint. Automation runs it when a model lands; run it by hand to re-deploy.",
            ),
            dg.define_asset_job(
                ANALYTICS_JOB,
                selection=analytics_run(settings.home.startswith("gs://")),
                description="The warehouse tables analysts query with SQL: every observation scored by the champion "
                "(locally in process; on a bucket its Vertex batch job submitted, the table following the job's "
                "predictions) and every version's evaluation history. Automation runs it after the champion changes.",
            ),
            dg.define_asset_job(
                EVALUATE_JOB,
                selection=dg.AssetSelection.assets("model_calibration", "baselines", "evaluation_report"),
                description="The newest model evaluated again (calibration, baselines, report and the promotion "
                "gate's verdict), moving no alias: `obs-platform evaluate`.",
            ),
            dg.define_asset_job(
                REFRESH_JOB,
                # Not the Gemini batch evaluation: new data alone starts no billed job.
                selection=dg.AssetSelection.groups("data", "evaluation")
                - dg.AssetSelection.assets("gemini_batch_job", "gemini_evaluation_report"),
                description="The data assets and the evaluation of the newest open-source model (no training, no "
                "billed job): keeps reports current.",
            ),
            dg.define_asset_job(
                MONITOR_JOB,
                selection=dg.AssetSelection.assets(SERVING_MONITOR),
                description="The served model watched: volume, latency, drift against the training split and "
                "educators' acceptance, from the endpoint's prediction and feedback logs.",
            ),
            dg.define_asset_job(
                DATA_JOB,
                selection=dg.AssetSelection.groups("data"),
                description="The data assets only: landing area to training files (no training).",
            ),
        ]
    )

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
ANALYTICS = dg.AssetSelection.groups("analytics")  # the warehouse tables: their own run, after the champion
SERVING_MONITOR = dg.AssetKey("serving_monitor")

TUNED_MODEL = dg.AssetKey("tuned_oss_model")
TUNED_GEMINI_MODEL = dg.AssetKey("tuned_gemini_model")


@dg.definitions
def jobs() -> dg.Definitions:
    # On Vertex AI the managed Gemini tuning job is submitted beside the open-source one; locally it cannot run.
    tuning_jobs = (
        ["oss_tuning_job", "gemini_tuning_job"] if Settings.from_env().backend == "vertex" else ["oss_tuning_job"]
    )
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
                selection=ANALYTICS,
                description="The warehouse tables analysts query with SQL: every observation scored by the champion "
                "and every version's evaluation history. Automation runs it after the champion changes.",
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

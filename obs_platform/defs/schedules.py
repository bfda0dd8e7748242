"""Schedules: a nightly refresh of the data and the evaluation, a weekly retrain, a daily serving monitor. Times,
time zone and on/off come from the environment (`OBS_PLATFORM_AUTOMATION=on` in a production deployment; off
locally)."""

import dagster as dg

from obs_platform.defs.jobs import MONITOR_JOB, REFRESH_JOB, TRAIN_JOB
from obs_platform.settings import Settings


@dg.definitions
def schedules() -> dg.Definitions:
    settings = Settings.from_env()
    status = dg.DefaultScheduleStatus.RUNNING if settings.automation else dg.DefaultScheduleStatus.STOPPED
    return dg.Definitions(
        schedules=[
            dg.ScheduleDefinition(
                name="nightly_refresh",
                job_name=REFRESH_JOB,
                cron_schedule=settings.nightly_refresh_cron,
                execution_timezone=settings.timezone,
                default_status=status,
                description="Re-read the landing area and re-evaluate the newest model, so reports stay current.",
            ),
            dg.ScheduleDefinition(
                name="weekly_retrain",
                job_name=TRAIN_JOB,
                cron_schedule=settings.weekly_retrain_cron,
                execution_timezone=settings.timezone,
                default_status=status,
                description="Submits a tuning job when the data or the recipe changed since the last model; the "
                "job-status sensor and automation take it from there.",
            ),
            dg.ScheduleDefinition(
                name="daily_serving_monitor",
                job_name=MONITOR_JOB,
                cron_schedule=settings.monitor_cron,
                execution_timezone=settings.timezone,
                default_status=status,
                description="Yesterday's and the window's predictions and feedback: volume, latency, drift and "
                "acceptance, with warnings as asset checks.",
            ),
        ]
    )

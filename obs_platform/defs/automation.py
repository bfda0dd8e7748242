"""Declarative automation: when the job-status sensor reports a tuned model, calibration, evaluation, the
promotion gate, the champion and the endpoint follow on their own (and a tuned Gemini's endpoint is recorded).

Chosen over a sensor requesting a `deploy` run because the rule belongs to the assets ("evaluate every new model;
serve every new champion"), shows on each asset in the UI with the reason it ran or waited, and needs no code
that knows the graph. The tuning job itself is left out: on Vertex it costs money, so it starts only from the
landing sensor, the weekly schedule or a person. The analytics warehouse's tables follow a changed champion through
a second sensor, in a run of their own (on a bucket: the archive's batch job after the champion, the scored table
after the job's predictions), wherever the warehouse is configured.
"""

import dagster as dg

from obs_platform.defs.analytics.resources import WarehouseRefused, warehouse_io_manager
from obs_platform.defs.jobs import ANALYTICS, TUNED_GEMINI_MODEL, TUNED_MODEL
from obs_platform.settings import Settings

SENSOR_NAME = "model_automation"
# What follows a model reacts to a newly reported model or champion, never to new data alone (a new data version
# reaches the model through training, and a billed or slow step must not run for it).
AFTER_NEW_MODELS = dg.AutomationCondition.eager().ignore(dg.AssetSelection.groups("data"))
ANALYTICS_SENSOR_NAME = "analytics_automation"


@dg.definitions
def automation_sensors() -> dg.Definitions:
    settings = Settings.from_env()
    # Dagster's own automation sensor starts STOPPED; this one runs by default, so a reported model is evaluated
    # and, when the gate lets it, served, with no one switching anything on. It only ever acts on a new model.
    model_automation = dg.AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=dg.AssetSelection.assets(TUNED_MODEL, TUNED_GEMINI_MODEL).downstream(include_self=False) - ANALYTICS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Runs calibration → evaluation → champion → endpoint when a new tuned model is reported (and "
        "records a tuned Gemini's endpoint).",
    )
    if isinstance(warehouse_io_manager(settings), WarehouseRefused):
        # No warehouse (a bucket without its BigQuery project): a sensor would request runs bound to fail, and on a
        # bucket submit a billed batch job, after every champion.
        return dg.Definitions(sensors=[model_automation])
    # The warehouse tables follow the champion in a run of their own: scoring the archive takes a minute or more,
    # which the deploy run (and the endpoint it starts) should not wait for, and a failure there must not fail a
    # deployment.
    analytics_automation = dg.AutomationConditionSensorDefinition(
        ANALYTICS_SENSOR_NAME,
        target=ANALYTICS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Scores the archive with the champion and rebuilds the evaluation history (the analytics "
        "warehouse's tables) after the champion changes.",
    )
    return dg.Definitions(sensors=[model_automation, analytics_automation])

"""The landing sensor: new or changed data requests a `train` run (data assets → baselines → tuning job), which
submits a job only when the dataset version changed: a version trained on the same data with the same recipe is
reused. One run per drop, keyed by the content of the whole landing area.

Why not one dynamic partition per drop: every drop is re-read together with the earlier ones (the canonical set is
the union of all exports, de-duplicated across files), so the data assets are not partitioned by drop; the run key
already makes each drop visible (a run tagged with its fingerprint) and run once."""

import dagster as dg

from obs_platform.data.landing import LandingSnapshot
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.jobs import TRAIN_JOB
from obs_platform.settings import LANDING_PREFIX, Settings


@dg.sensor(
    name="landing_sensor",
    job_name=TRAIN_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING if Settings.from_env().automation else dg.DefaultSensorStatus.STOPPED,
)
def landing_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult | dg.SkipReason:
    """Fingerprints every export in the landing area by content; any addition, change or removal since the
    last tick requests one run, keyed by the fingerprint of the whole area (a restart never runs it twice)."""
    previous = LandingSnapshot.from_cursor(context.cursor)
    current = LandingSnapshot.take(storage.client(), LANDING_PREFIX)
    changes = current.changes_since(previous)
    if not any(changes.values()):
        return dg.SkipReason(f"{len(current.files)} landed files, none new or changed")
    if not current.files:
        return dg.SensorResult(skip_reason="the landing area is empty", cursor=current.to_cursor())
    summary = ", ".join(f"{len(paths)} {kind}" for kind, paths in changes.items() if paths)
    context.log.info(f"landing area changed ({summary}): requesting a run for data {current.digest}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"landing-{current.digest}",
                tags={"obs-platform/landing": current.digest, "obs-platform/changes": summary},
            )
        ],
        cursor=current.to_cursor(),
    )

"""The whole asset graph in one process, with no Dagster daemon: what `obs-platform run` does.

It plays the daemon's part with the project's own definitions: the `train` job (data → baselines → a tuning job
submitted); then ticks of the job-status sensor until the job ends, their events recorded exactly as the daemon
records a sensor's; then the `deploy` job the automation sensor would request (calibration → evaluation → gate →
champion → endpoint). Under `dagster dev` the same steps happen on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from obs_platform.defs.jobs import DEPLOY_JOB, TRAIN_JOB
from obs_platform.defs.training.sensors import SENSOR_NAME
from obs_platform.training.backend import JobState
from obs_platform.training.monitor import JobWatch

TUNING_JOB = dg.AssetKey("oss_tuning_job")


@dataclass
class GraphRun:
    """The runs that made one pass through the graph, and why it stopped early if it did."""

    run_ids: list[str] = field(default_factory=list)
    failure: str = ""

    @property
    def success(self) -> bool:
        return not self.failure


def run_whole_graph(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    echo: Callable[[str], None] = print,
    run_config: dict | None = None,
) -> GraphRun:
    graph = GraphRun()

    def run(job_name: str) -> bool:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False
        )
        graph.run_ids.append(result.run_id)
        if not result.success:
            graph.failure = f"the {job_name} run {result.run_id} failed"
        return result.success

    if run(TRAIN_JOB):
        graph.failure = wait_for_tuning_job(defs, instance, echo)
        if graph.success:
            run(DEPLOY_JOB)
    return graph


def tick_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None) -> dg.SensorResult:
    """One tick of a sensor as the daemon runs it: its resources from the definitions, its asset events recorded."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        result = defs.resolve_sensor_def(name)(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def wait_for_tuning_job(defs: dg.Definitions, instance: dg.DagsterInstance, echo: Callable[[str], None]) -> str:
    """Ticks the job-status sensor, from the latest tuning-job request on, until the job it names has ended and
    been reported; returns why it did not succeed ("" when it did)."""
    [latest] = instance.fetch_materializations(TUNING_JOB, limit=1).records
    cursor = JobWatch(after=latest.storage_id - 1).to_cursor()
    tuning = defs.resources["tuning"]
    failure, next_report = "", 0.0
    while True:
        result = tick_sensor(defs, instance, SENSOR_NAME, cursor)
        for event in result.asset_events:
            if isinstance(event, dg.AssetObservation) and event.metadata["state"].value != JobState.SUCCEEDED:
                failure = f"tuning job {event.metadata['job_id'].value} {event.metadata['state'].value}"
                echo(f"{failure}:\n{event.metadata['message'].value}")
        cursor = result.cursor
        watch = JobWatch.from_cursor(cursor)
        if not watch.jobs:
            return failure
        if time.monotonic() >= next_report:  # a line a minute while the job trains
            for job in watch.jobs.values():
                unavailable = f" (backend unavailable: {job.last_error})" if job.last_error else ""
                echo(f"waiting for tuning job {job.job_id}: {time.time() - job.submitted_at:.0f} s{unavailable}")
            next_report = time.monotonic() + 60
        time.sleep(tuning.poll_seconds)

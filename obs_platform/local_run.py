"""The whole asset graph in one process, with no Dagster daemon: what `obs-platform run` does.

It plays the daemon's part with the project's own definitions: the `train` job (data → baselines → a tuning job
submitted); then ticks of the job-status sensor until the job ends, their events recorded exactly as the daemon
records a sensor's; then the `deploy` job the automation sensor would request (calibration → evaluation → gate →
champion → endpoint), and the `analytics` job after it (the archive scored by the champion, the evaluation history,
in the DuckDB warehouse). Under `dagster dev` the same steps happen on their own. While the tuning job trains, a
progress line shows how far it has come (redrawn in place on a terminal, a line every 30 s elsewhere).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from obs_platform.defs.jobs import ANALYTICS_JOB, DEPLOY_JOB, TRAIN_JOB
from obs_platform.defs.training.sensors import SENSOR_NAME
from obs_platform.training.backend import JobState, TrainingProgress, TuningBackend
from obs_platform.training.monitor import JobWatch
from obs_platform.training.progress import ProgressDisplay, progress_bar, status_line

TUNING_JOB = dg.AssetKey("oss_tuning_job")
SUBMITTED = "SUBMITTED"  # the state of a job no backend has told about yet (the event log's name for it)


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
    display: ProgressDisplay | None = None,
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
        graph.failure = wait_for_tuning_job(defs, instance, echo, display)
        if graph.success and run(DEPLOY_JOB):
            run(ANALYTICS_JOB)  # what `analytics_automation` requests after the champion
    return graph


def tick_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None) -> dg.SensorResult:
    """One tick of a sensor as the daemon runs it: its resources from the definitions, its asset events recorded."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        result = defs.resolve_sensor_def(name)(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def wait_for_tuning_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    echo: Callable[[str], None],
    display: ProgressDisplay | None = None,
) -> str:
    """Ticks the job-status sensor, from the latest tuning-job request on, until the job it names has ended and
    been reported, showing its progress on `display` (by default a line through `echo` every 30 s); returns why it
    did not succeed ("" when it did)."""
    display = display or ProgressDisplay(echo)
    [latest] = instance.fetch_materializations(TUNING_JOB, limit=1).records
    cursor = JobWatch(after=latest.storage_id - 1).to_cursor()
    with tuning_resources(defs) as resources:
        return _wait(defs, instance, echo, display, cursor, resources.tuning, job_backends(resources))


@contextlib.contextmanager
def tuning_resources(defs: dg.Definitions) -> Iterator[Any]:
    """The tuning and storage resources resolved as a run resolves them: a field configured with `dg.EnvVar` is
    read now (used as they are, outside a run, such a field is an unresolved `EnvVar`)."""
    with dg.build_resources({"tuning": defs.resources["tuning"], "storage": defs.resources["storage"]}) as resources:
        yield resources


def _wait(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    echo: Callable[[str], None],
    display: ProgressDisplay,
    cursor: str,
    tuning: Any,
    backends: dict[str, TuningBackend],
) -> str:
    failure, announced = "", set()
    while True:
        result = tick_sensor(defs, instance, SENSOR_NAME, cursor)
        for event in result.asset_events:
            if isinstance(event, dg.AssetObservation) and event.metadata["state"].value != JobState.SUCCEEDED:
                failure = f"tuning job {event.metadata['job_id'].value} {event.metadata['state'].value}"
                display.end()
                echo(f"{failure}:\n{event.metadata['message'].value}")
        cursor = result.cursor
        watch = JobWatch.from_cursor(cursor)
        if not watch.jobs:
            display.end()
            return failure
        for job in watch.jobs.values():
            if job.job_id not in announced:
                display.end()
                echo(f"waiting for tuning job {job.job_id} ({job.backend})")
                announced.add(job.job_id)
        if display.due():
            lines = [
                progress_line(backends.get(job.backend), job.job_id, job.submitted_at, job.last_error)
                for job in watch.jobs.values()
            ]
            display.show(" | ".join(lines))
        time.sleep(tuning.poll_seconds)


def job_backends(resources: Any) -> dict[str, TuningBackend]:
    """The backends the job-status sensor polls, by name, to ask them how far their jobs have come; none where they
    cannot be made (the sensor's tick says why)."""
    try:
        return resources.tuning.backends(resources.storage)
    except Exception:  # a progress line is no reason to stop waiting
        return {}


def progress_line(backend: TuningBackend | None, job_id: str, submitted_at: float, unavailable: str = "") -> str:
    """A job's progress line: what its backend tells now (a local job's steps, a Vertex job's state), or, when its
    backend cannot be asked (`unavailable`: why), the time since the job was submitted."""
    elapsed = time.time() - submitted_at
    if backend is not None and not unavailable:
        with contextlib.suppress(Exception):  # the sensor asks again at its next tick, and reports what it finds
            return status_line(backend.status(job_id), elapsed)
    why = f" (backend unavailable: {unavailable})" if unavailable else ""
    return progress_bar(TrainingProgress(elapsed=elapsed), SUBMITTED) + why

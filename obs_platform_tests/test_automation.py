"""Automation: the landing sensor (content, not mtime; one run per drop; restarts lose and repeat nothing),
the schedules' configuration, and the `jobs` CLI."""

import dagster as dg
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.data.landing import LandingSnapshot
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.data.sensors import landing_sensor

from .conftest import jsonl, record
from .test_data_assets import load_defs


def tick(storage, cursor):
    context = dg.build_sensor_context(cursor=cursor, resources={"storage": StorageResource(root_uri=str(storage.root))})
    return landing_sensor(context)


def test_snapshots_compare_content_not_modification_times(storage):
    storage.write_bytes("landing/a.jsonl", jsonl(record(observation_id="1")))
    first = LandingSnapshot.take(storage, "landing")
    storage.write_bytes("landing/a.jsonl", jsonl(record(observation_id="1")))  # rewritten, same bytes
    storage.write_bytes("landing/notes.txt", b"not an export")  # ignored: not a supported export
    assert LandingSnapshot.take(storage, "landing") == first
    storage.write_bytes("landing/a.jsonl", jsonl(record(observation_id="2")))
    storage.write_bytes("landing/b.csv", b"observation_id\n")
    later = LandingSnapshot.take(storage, "landing")
    assert later.changes_since(first) == {"added": ["landing/b.csv"], "changed": ["landing/a.jsonl"], "removed": []}
    assert later.digest != first.digest and LandingSnapshot.from_cursor(later.to_cursor()) == later


def test_the_landing_sensor_requests_one_run_per_drop_and_survives_restarts(landed_storage):
    first = tick(landed_storage, None)
    [request] = first.run_requests
    assert request.run_key.startswith("landing-") and "3 added" in request.tags["obs-platform/changes"]

    # Nothing new: skipped. A "restarted daemon" is a new context with the stored cursor.
    assert isinstance(tick(landed_storage, first.cursor), dg.SkipReason)

    # Two files landing together make one run.
    landed_storage.write_bytes("landing/drop_1.jsonl", jsonl(record(observation_id="drop-1")))
    landed_storage.write_bytes("landing/drop_2.jsonl", jsonl(record(observation_id="drop-2")))
    second = tick(landed_storage, first.cursor)
    [again] = second.run_requests
    assert again.run_key != request.run_key and again.tags["obs-platform/changes"] == "2 added"
    # Re-evaluated from the same cursor (a crash before the cursor was stored), the run key is the same:
    # Dagster launches a run key once, so the drop is neither lost nor run twice.
    assert tick(landed_storage, first.cursor).run_requests[0].run_key == again.run_key


def test_schedules_are_off_locally_and_configurable(monkeypatch, tmp_path):
    repository = load_defs(monkeypatch, tmp_path).get_repository_def()
    nightly = repository.get_schedule_def("nightly_refresh")
    assert nightly.default_status == dg.DefaultScheduleStatus.STOPPED and nightly.job_name == "refresh"
    assert repository.get_sensor_def("landing_sensor").default_status == dg.DefaultSensorStatus.STOPPED

    monkeypatch.setenv("OBS_PLATFORM_AUTOMATION", "on")
    monkeypatch.setenv("OBS_PLATFORM_WEEKLY_RETRAIN_CRON", "30 4 * * 1")
    monkeypatch.setenv("OBS_PLATFORM_TIMEZONE", "UTC")
    production = load_defs(monkeypatch, tmp_path).get_repository_def()
    weekly = production.get_schedule_def("weekly_retrain")
    assert weekly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly.cron_schedule == "30 4 * * 1" and weekly.execution_timezone == "UTC" and weekly.job_name == "main"
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(instance=instance)
        request = production.get_schedule_def("nightly_refresh").evaluate_tick(context).run_requests
        assert len(request) == 1


def test_the_jobs_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    runner = CliRunner()
    assert "no tuning jobs yet" in runner.invoke(app, ["jobs"]).output
    missing = runner.invoke(app, ["jobs", "--status", "local-nope"])
    assert missing.exit_code == 1 and "no local job 'local-nope'" in missing.output

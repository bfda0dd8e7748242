"""Automation: the landing sensor (content, not mtime; one run per drop; restarts lose and repeat nothing), the
job-status sensor and declarative automation around a real tuning job, the schedules' configuration, and the
`jobs` CLI."""

import dagster as dg
import pytest
from typer.testing import CliRunner

from obs_platform.cli import app, sample_data_files
from obs_platform.data.landing import LandingSnapshot
from obs_platform.defs.data.resources import StorageResource
from obs_platform.defs.data.sensors import landing_sensor
from obs_platform.defs.training.job_log import job_records
from obs_platform.local_run import tick_sensor, wait_for_tuning_job
from obs_platform.serving import endpoint
from obs_platform.storage import LocalStorage
from obs_platform.training.local import LocalSubprocessBackend
from obs_platform.training.registry import ModelRegistry

from .conftest import jsonl, record
from .test_data_assets import load_defs, metadata
from .test_training_backend import wait

AFTER_THE_MODEL = {"model_calibration", "evaluation_report", "champion_model", "oss_endpoint", "served_model"}
ANALYTICS = {"scored_observations", "evaluation_history"}  # the warehouse's tables: their own sensor, their own run


def landing_tick(storage, cursor):
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
    first = landing_tick(landed_storage, None)
    [request] = first.run_requests
    landed = f"{len(sample_data_files())} added"
    assert request.run_key.startswith("landing-") and landed in request.tags["obs-platform/changes"]

    # Nothing new: skipped. A "restarted daemon" is a new context with the stored cursor.
    assert isinstance(landing_tick(landed_storage, first.cursor), dg.SkipReason)

    # Two files landing together make one run.
    landed_storage.write_bytes("landing/drop_1.jsonl", jsonl(record(observation_id="drop-1")))
    landed_storage.write_bytes("landing/drop_2.jsonl", jsonl(record(observation_id="drop-2")))
    second = landing_tick(landed_storage, first.cursor)
    [again] = second.run_requests
    assert again.run_key != request.run_key and again.tags["obs-platform/changes"] == "2 added"
    # Re-evaluated from the same cursor (a crash before the cursor was stored), the run key is the same:
    # Dagster launches a run key once, so the drop is neither lost nor run twice.
    assert landing_tick(landed_storage, first.cursor).run_requests[0].run_key == again.run_key


def test_schedules_are_off_locally_and_configurable(monkeypatch, tmp_path):
    repository = load_defs(monkeypatch, tmp_path).get_repository_def()
    nightly = repository.get_schedule_def("nightly_refresh")
    assert nightly.default_status == dg.DefaultScheduleStatus.STOPPED and nightly.job_name == "refresh"
    assert repository.get_sensor_def("landing_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    # Reporting jobs and following a new model cost nothing: on everywhere, or a job started in the UI is lost.
    for always_on in ("tuning_job_sensor", "model_automation"):
        assert repository.get_sensor_def(always_on).default_status == dg.DefaultSensorStatus.RUNNING

    monkeypatch.setenv("OBS_PLATFORM_AUTOMATION", "on")
    monkeypatch.setenv("OBS_PLATFORM_WEEKLY_RETRAIN_CRON", "30 4 * * 1")
    monkeypatch.setenv("OBS_PLATFORM_TIMEZONE", "UTC")
    production = load_defs(monkeypatch, tmp_path).get_repository_def()
    weekly = production.get_schedule_def("weekly_retrain")
    assert weekly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly.cron_schedule == "30 4 * * 1" and weekly.execution_timezone == "UTC" and weekly.job_name == "train"
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(instance=instance)
        request = production.get_schedule_def("nightly_refresh").evaluate_tick(context).run_requests
        assert len(request) == 1


def test_the_jobs_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    runner = CliRunner()
    assert "no tuning jobs yet" in runner.invoke(app, ["jobs"]).output
    assert "no tuning jobs yet" in runner.invoke(app, ["jobs", "--list"]).output
    assert runner.invoke(app, ["jobs", "--list", "--status", "x"]).exit_code == 1
    missing = runner.invoke(app, ["jobs", "--status", "local-nope"])
    assert missing.exit_code == 1 and "no local job 'local-nope'" in missing.output


def tick(defs, instance, name, cursor=None):
    """One sensor tick as the daemon runs it (events recorded); a restarted daemon is a new context with the
    stored cursor."""
    return tick_sensor(defs, instance, name, cursor)


def requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if result.get_num_requested(r.key)}


def tiny_training(monkeypatch, tiny_bert):
    monkeypatch.setenv("OBS_PLATFORM_BASE_MODEL", str(tiny_bert))
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "1")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_BATCH_SIZE", "64")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_MAX_LENGTH", "64")
    monkeypatch.setenv("OBS_PLATFORM_BASELINES", "majority,tfidf_logistic")
    monkeypatch.setenv("OBS_PLATFORM_EXTERNAL_EVAL", "")


@pytest.mark.slow  # a whole-graph run (about 45 s): `make test` runs it, `make test-fast` does not
def test_the_loop_from_a_landed_file_to_the_promotion_gate_and_a_failed_job(monkeypatch, storage, tiny_bert):
    tiny_training(monkeypatch, tiny_bert)
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_FLOOR", "none")
    defs = load_defs(monkeypatch, storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        try:
            # The daemon is up before anything exists: automation evaluates, nothing is requested.
            idle = dg.evaluate_automation_conditions(defs=defs, instance=instance)
            assert requested(idle) == set()

            # A file lands; the landing sensor requests one `train` run, which the daemon launches.
            from obs_platform.cli import sample_data_files

            for file in sample_data_files():
                storage.write_bytes(f"landing/{file.name}", file.read_bytes())
            [request] = tick(defs, instance, "landing_sensor").run_requests
            assert defs.resolve_sensor_def("landing_sensor").job_name == "train"
            train = defs.resolve_job_def("train").execute_in_process(
                instance=instance, tags=request.tags, raise_on_error=False
            )
            assert train.success
            submitted = metadata(instance, "oss_tuning_job")
            assert submitted["outcome"] == "submitted" and submitted["backend"] == "local"
            assert submitted["dataset_version"] == metadata(instance, "training_splits")["dataset_version"]
            assert instance.get_latest_materialization_event(dg.AssetKey("tuned_oss_model")) is None
            # Asked again while that job trains (the trainer takes seconds just to import): not submitted twice.
            again = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("oss_tuning_job")]
            )
            assert again.success and metadata(instance, "oss_tuning_job")["outcome"] == "running"
            assert metadata(instance, "oss_tuning_job")["job_id"] == submitted["job_id"]
            assert len(LocalSubprocessBackend(storage.root).jobs()) == 1

            # The job-status sensor picks the job up; the run did not wait for it.
            first = tick(defs, instance, "tuning_job_sensor")
            assert first.asset_events == [] and "1 tuning job(s) open" in first.skip_reason.skip_message
            automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=idle.cursor)
            assert requested(automation) == set()  # no model yet: nothing to evaluate

            # The daemon restarts while the job trains: a new context with the stored cursor finds it.
            wait(LocalSubprocessBackend(storage.root), submitted["job_id"])
            ended = tick(defs, instance, "tuning_job_sensor", cursor=first.cursor)
            observation, materialization = ended.asset_events
            assert observation.metadata["state"].value == "SUCCEEDED"
            assert materialization.asset_key == dg.AssetKey("tuned_oss_model")
            assert materialization.metadata["model_version"].value == "oss-classifier/v1"
            assert materialization.metadata["job_id"].value == submitted["job_id"]
            assert 0 <= materialization.metadata["valid_attribute_accuracy"].value <= 1
            # A crash after the events were stored but before the cursor was: the same tick again adds nothing.
            assert tick(defs, instance, "tuning_job_sensor", cursor=first.cursor).asset_events == []
            assert tick(defs, instance, "tuning_job_sensor", cursor=ended.cursor).asset_events == []
            assert len(ModelRegistry(LocalStorage(storage.root)).versions("oss-classifier")) == 1

            # Declarative automation requests everything after the model, in one tick, and the daemon runs it (the
            # analytics tables in a second run, from their own sensor).
            automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
            assert requested(automation) == AFTER_THE_MODEL | ANALYTICS
            deploy = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance,
                asset_selection=[dg.AssetKey(k) for k in AFTER_THE_MODEL | ANALYTICS],
                raise_on_error=False,
            )
            assert deploy.success
            after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
            assert requested(after) == set()  # nothing new since

            # A job that fails (a base model that does not exist) is reported with the trainer's last lines, and
            # nothing downstream moves; `obs-platform run` (which ticks the same sensor) says why it stopped.
            monkeypatch.setenv("OBS_PLATFORM_BASE_MODEL", str(storage.root / "no-such-model"))
            broken = load_defs(monkeypatch, storage.root)
            broken.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("oss_tuning_job")]
            )
            lines = []
            failure = wait_for_tuning_job(broken, instance, echo=lines.append)
            assert failure.startswith("tuning job local-") and failure.endswith("FAILED")
            event = instance.fetch_observations(dg.AssetKey("oss_tuning_job"), limit=1).records[0].asset_observation
            message = event.metadata["message"].value
            assert event.metadata["state"].value == "FAILED"
            assert "no-such-model" in message and "exited with code" in message
            assert any("no-such-model" in line for line in lines)
            assert metadata(instance, "tuned_oss_model")["model_version"] == "oss-classifier/v1"
            after_failure = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
            assert requested(after_failure) == set()
        finally:
            endpoint.stop(storage.root)
        report = metadata(instance, "evaluation_report")
        assert report["model_version"] == "oss-classifier/v1" and report["promotion"] == "promote"
        assert metadata(instance, "champion_model")["champion"] == "oss-classifier/v1"
        assert metadata(instance, "oss_endpoint")["model_version"] == "oss-classifier/v1"
        succeeded, failed = job_records(instance)  # what `obs-platform jobs` prints, oldest first
        assert succeeded.job_id == submitted["job_id"] and succeeded.model_version == "oss-classifier/v1"
        assert succeeded.state == "SUCCEEDED" and failed.state == "FAILED" and failed.model_version is None

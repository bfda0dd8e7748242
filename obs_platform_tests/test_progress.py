"""A tuning job's progress line: the bar itself, the local backend reading the trainer's progress file, how
`obs-platform run` shows it, and `obs-platform jobs --status`."""

import io
import json
import re
import time

import dagster as dg
import pytest
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.local_run import progress_line
from obs_platform.training.backend import BackendUnavailable, JobState, JobStatus, TrainingProgress, TrainingSpec
from obs_platform.training.local import PROGRESS_FILE, LocalSubprocessBackend
from obs_platform.training.progress import ProgressDisplay, duration, metric_label, progress_bar

from .test_cli import submission

SPEC = TrainingSpec(train_uri="train.jsonl", valid_uri="valid.jsonl", dataset_version="data-1")


def test_the_bar_estimates_the_time_left_from_the_rate_so_far():
    progress = TrainingProgress(
        elapsed=82, step=270, total_steps=600, epoch=2, epochs=3, metric="attribute_accuracy", value=0.8123
    )
    # 270 steps in 82 s: the 330 left take about 100 s.
    assert (
        progress_bar(progress)
        == "[#########-----------] 45% epoch 2/3 step 270/600 valid attribute acc 0.812 ETA 1m40s"
    )
    # The trainer's own pace (its model loading left out) wins over elapsed / step.
    assert progress_bar(TrainingProgress(elapsed=500, step=300, total_steps=600, seconds_per_step=0.5)).endswith(
        "step 300/600 ETA 2m30s"
    )


def test_no_time_left_before_the_first_step():
    line = progress_bar(TrainingProgress(elapsed=12, step=0, total_steps=600, epoch=1, epochs=3))
    assert line == "[--------------------] 0% epoch 1/3 step 0/600 elapsed 12s"
    assert "ETA" not in line


def test_the_bar_is_full_at_the_end():
    end = TrainingProgress(elapsed=300, step=600, total_steps=600, epoch=3, epochs=3, metric="valid_loss", value=1.25)
    # The last step done, the trainer still evaluates and saves: no time left to estimate.
    assert progress_bar(end) == "[####################] 100% epoch 3/3 step 600/600 valid loss 1.250 elapsed 5m00s"
    assert progress_bar(end, JobState.SUCCEEDED).endswith(
        "100% epoch 3/3 step 600/600 valid loss 1.250 SUCCEEDED after 5m00s"
    )
    # Never more than full, nor 100% before the last step.
    assert progress_bar(TrainingProgress(step=700, total_steps=600)).startswith("[####################] 100%")
    assert progress_bar(TrainingProgress(elapsed=10, step=599, total_steps=600)).startswith(
        "[###################-] 99%"
    )


def test_a_job_without_steps_shows_its_state_and_the_time_since_it_started():
    """A Vertex job tells only its state: no bar, no time left."""
    assert progress_bar(TrainingProgress(elapsed=723), JobState.RUNNING) == "RUNNING for 12m03s"
    assert progress_bar(TrainingProgress(elapsed=40), JobState.PENDING) == "PENDING for 40s"
    assert progress_bar(TrainingProgress(elapsed=7500), JobState.FAILED) == "FAILED after 2h05m"
    assert progress_bar(TrainingProgress(elapsed=5), "SUBMITTED") == "SUBMITTED for 5s"


def test_metric_names_and_durations_as_the_bar_shows_them():
    assert metric_label("attribute_accuracy") == "attribute acc"
    assert metric_label("attribute_top3_accuracy") == "attribute top3 acc"
    assert metric_label("eval_loss") == "loss"
    assert [duration(s) for s in (0, 59.6, 100, 3599, 3600, -3)] == ["0s", "1m00s", "1m40s", "59m59s", "1h00m", "0s"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_redrawn_in_place_on_a_terminal_and_printed_every_30_s_elsewhere(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    terminal = Terminal()
    display = ProgressDisplay(terminal=terminal)
    display.show("[#---] 25%")
    display.show("[##--] 50%")
    # Wider than the terminal (a wrapped line cannot be redrawn): the bar goes first, then the end of the line.
    display.show("[####################] 100% epoch 3/3 step 600/600 valid attribute acc 0.812 elapsed 5m00s")
    display.end()
    display.end()  # a second end adds no empty line
    assert terminal.getvalue().split("\r") == [
        "",
        "[#---] 25%\x1b[K",
        "[##--] 50%\x1b[K",
        "100% epoch 3/3 step 600/600 valid attri\x1b[K\n",
    ]

    now, lines = [1000.0], []
    logged = ProgressDisplay(lines.append, terminal=io.StringIO(), clock=lambda: now[0])  # not a terminal
    for step in range(7):  # every 10 s for a minute
        assert logged.due() == (step % 3 == 0)
        logged.show(f"step {step}")
        now[0] += 10
    logged.end()
    assert lines == ["step 0", "step 3", "step 6"]


class FakeBackend:
    name = "vertex-custom-job"

    def __init__(self, status: JobStatus | Exception):
        self.answer = status

    def status(self, job_id: str) -> JobStatus:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_obs_platform_runs_line_for_a_job_comes_from_its_backend_or_says_why_not():
    started = time.time() - 125
    running = FakeBackend(JobStatus(JobState.RUNNING, 0.0))
    assert progress_line(running, "projects/p/locations/l/customJobs/1", started) == "RUNNING for 2m05s"
    local = FakeBackend(JobStatus(JobState.RUNNING, 0.5, detail=TrainingProgress(elapsed=60, step=5, total_steps=10)))
    assert progress_line(local, "local-1", started) == "[##########----------] 50% step 5/10 ETA 1m00s"
    unreachable = FakeBackend(BackendUnavailable("timed out"))
    assert progress_line(unreachable, "projects/p/locations/l/customJobs/1", started) == "SUBMITTED for 2m05s"
    assert (
        progress_line(running, "x", started, unavailable="quota") == "SUBMITTED for 2m05s (backend unavailable: quota)"
    )
    assert progress_line(None, "x", started) == "SUBMITTED for 2m05s"


@pytest.fixture
def sleeping_job(tmp_path):
    """A local job whose trainer sleeps (the progress file is the test's to write), cancelled at the end."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nsleep 60\n")
    python.chmod(0o755)
    backend = LocalSubprocessBackend(tmp_path / "home", python=str(python))
    job_id = backend.submit(SPEC)
    yield backend, job_id
    backend.cancel(job_id)


def write_progress(backend: LocalSubprocessBackend, job_id: str, *lines: dict) -> None:
    output = backend.jobs()[0]["output_dir"]
    with open(f"{output}/{PROGRESS_FILE}", "a") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)


def test_the_local_backend_reads_the_trainers_progress_file(sleeping_job):
    backend, job_id = sleeping_job
    before = backend.status(job_id)
    assert before.state is JobState.RUNNING and before.progress == 0.0
    assert before.detail.total_steps == 0 and before.detail.elapsed >= 0  # nothing written yet: the time only
    now = time.time()
    write_progress(
        backend,
        job_id,
        {"time": now - 100, "step": 0, "total_steps": 600, "epoch": 1, "epochs": 3, "start": True},
        {"time": now - 60, "step": 200, "total_steps": 600, "epoch": 1, "epochs": 3},
        {"time": now - 50, "step": 200, "total_steps": 600, "epoch": 1, "epochs": 3, "metric": "attribute_accuracy"}
        | {"value": 0.75},
        {"time": now - 10, "step": 270, "total_steps": 600, "epoch": 2, "epochs": 3},
    )
    with open(f"{backend.jobs()[0]['output_dir']}/{PROGRESS_FILE}", "a") as handle:
        handle.write('{"time": 17')  # a line the trainer is still writing
    status = backend.status(job_id)
    assert status.state is JobState.RUNNING and status.progress == pytest.approx(0.45)
    detail = status.detail
    assert (detail.step, detail.total_steps, detail.epoch, detail.epochs) == (270, 600, 2, 3)
    assert (detail.metric, detail.value) == ("attribute_accuracy", 0.75)
    assert detail.seconds_per_step == pytest.approx(90 / 270)  # from the start line to the last one
    assert (
        progress_bar(detail) == "[#########-----------] 45% epoch 2/3 step 270/600 valid attribute acc 0.750 ETA 1m50s"
    )


def test_jobs_status_prints_the_progress_bar(monkeypatch, tmp_path, sleeping_job):
    backend, job_id = sleeping_job
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(backend.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    write_progress(
        backend,
        job_id,
        {"time": time.time() - 30, "step": 0, "total_steps": 40, "epoch": 1, "epochs": 2, "start": True},
        {"time": time.time(), "step": 10, "total_steps": 40, "epoch": 1, "epochs": 2},
    )
    result = CliRunner().invoke(app, ["jobs", "--status", job_id])
    assert result.exit_code == 0, result.output
    assert result.output == f"{job_id}: RUNNING\n[#####---------------] 25% epoch 1/2 step 10/40 ETA 1m30s\n"

    # A Vertex job is not local: the event log names it, and while it is open its backend's state shows (no
    # Vertex backend in this deployment: the time since it was submitted).
    custom_job = "projects/271828182845/locations/europe-west2/customJobs/7"
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            submission("oss_tuning_job", custom_job, "vertex-custom-job", time.time() - 183)
        )
    vertex = CliRunner().invoke(app, ["jobs", "--status", custom_job])
    assert vertex.exit_code == 0, vertex.output
    header, line = vertex.output.splitlines()
    assert header == f"{custom_job}: SUBMITTED (vertex-custom-job)" and re.fullmatch(r"SUBMITTED for 3m0\ds", line)

    missing = CliRunner().invoke(app, ["jobs", "--status", "local-nope"])
    assert missing.exit_code == 1 and "no local job 'local-nope'" in missing.output


def test_the_waiting_command_asks_the_backends_of_the_loaded_definitions(monkeypatch, tmp_path):
    """`obs-platform run` uses the definitions' resources outside a run: fields configured with `dg.EnvVar` (the
    storage root here) must be resolved first, or no backend can be asked and the bar never shows."""
    from obs_platform.local_run import job_backends, tuning_resources

    from .test_data_assets import load_defs

    defs = load_defs(monkeypatch, tmp_path)  # OBS_PLATFORM_HOME set: the storage resource holds an EnvVar
    with tuning_resources(defs) as resources:
        backends = job_backends(resources)
        assert isinstance(backends["local"], LocalSubprocessBackend) and resources.tuning.poll_seconds > 0

import re
import time
from pathlib import Path

import dagster as dg
from typer.testing import CliRunner

from obs_platform.cli import app, sample_data_files
from obs_platform.training.backend import TrainingSpec
from obs_platform.training.local import LocalSubprocessBackend

from .test_training_backend import wait

runner = CliRunner()
NEW_YEAR_NOON = 1767268800.0  # 2026-01-01 12:00 UTC: the same day in every time zone


def test_init_lands_the_sample_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["init", "--with-sample-data"])
    assert result.exit_code == 0, result.output
    landed = sorted(p.name for p in (tmp_path / "home" / "landing").iterdir() if not p.name.startswith("."))
    assert landed == sorted(p.name for p in sample_data_files())
    assert f"storage root: {tmp_path / 'home'}" in result.output


def test_init_without_data_only_creates_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert [p.name for p in (tmp_path / "home" / "landing").iterdir()] == [".keep"]


def test_run_without_landed_data_fails_with_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    runner.invoke(app, ["init"])
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1
    assert "run `obs-platform init --with-sample-data` first" in result.output
    assert "Traceback" not in result.output


def test_every_command_has_help():
    commands = (
        [],
        ["init"],
        ["run"],
        ["evaluate"],
        ["classify"],
        ["jobs"],
        ["endpoint"],
        ["endpoint", "start"],
        ["endpoint", "stop"],
        ["endpoint", "status"],
    )
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_evaluate_without_a_model_fails_with_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1 and "no model to evaluate yet" in result.output and "Traceback" not in result.output


def submission(asset: str, job_id: str, backend: str, submitted_at: float, **extra) -> dg.AssetMaterialization:
    """A job asset's materialisation as `_submit_once` records it (what the job-status sensor reads)."""
    metadata = {
        "outcome": "submitted",
        "job_id": job_id,
        "backend": backend,
        "dataset_version": "data-1",
        "submitted_at": submitted_at,
        **extra,
    }
    return dg.AssetMaterialization(asset, metadata=metadata)


def test_jobs_lists_every_job_of_the_event_log_local_and_vertex_alike(monkeypatch, tmp_path):
    """The list is the job-status sensor's view (the job assets' events): a job asked for again while it ran is one
    line; an ended one shows its state, model and reckoned cost; an open Vertex job is not asked; an open local
    job shows what its backend says now."""
    home = tmp_path / "home"
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert runner.invoke(app, ["jobs"]).output == "no tuning jobs yet: `obs-platform run` submits one\n"

    local = LocalSubprocessBackend(home, python="false")  # a trainer that exits 1 at once
    local_job = local.submit(TrainingSpec(train_uri="train.jsonl", valid_uri="valid.jsonl", dataset_version="data-1"))
    wait(local, local_job)
    custom_job = "projects/271828182845/locations/europe-west2/customJobs/7"
    gemini_job = "projects/271828182845/locations/europe-west2/tuningJobs/8"
    with dg.DagsterInstance.get() as instance:
        for event in (
            submission("oss_tuning_job", custom_job, "vertex-custom-job", NEW_YEAR_NOON),
            submission("oss_tuning_job", custom_job, "vertex-custom-job", NEW_YEAR_NOON, outcome="running"),
            dg.AssetObservation(
                "oss_tuning_job",
                metadata={"job_id": custom_job, "state": "SUCCEEDED", "model_version": "oss-classifier/v1"},
            ),
            dg.AssetMaterialization(
                "tuned_oss_model", metadata={"job_id": custom_job, "estimated_usd": 3.75, "machine_hours": 1.5}
            ),
            submission("gemini_tuning_job", gemini_job, "vertex-gemini", NEW_YEAR_NOON + 60, estimated_usd=0.12),
            dg.AssetMaterialization(
                "oss_tuning_job", metadata={"outcome": "reused", "model_version": "oss-classifier/v1"}
            ),
            submission("oss_tuning_job", local_job, "local", time.time()),
        ):
            instance.report_runless_asset_event(event)

    [header, *lines] = runner.invoke(app, ["jobs"]).output.splitlines()
    assert re.split(r"\s{2,}", header) == ["job", "state", "backend", "dataset", "model", "est. USD", "submitted"]
    rows = [re.split(r"\s{2,}", line) for line in lines]
    assert [row[:6] for row in rows] == [
        [custom_job, "SUCCEEDED", "vertex-custom-job", "data-1", "oss-classifier/v1", "3.75"],
        [gemini_job, "SUBMITTED", "vertex-gemini", "data-1", "-", "0.12"],
        [local_job, "FAILED", "local", "data-1", "-", "-"],
    ]
    assert rows[0][6].startswith("2026-01-01") and all(len(row) == 7 for row in rows)

    monkeypatch.setenv("OBS_PLATFORM_HOME", "gs://obs-bucket/home")  # listing needs no local root: none is asked
    listed = [re.split(r"\s{2,}", line) for line in runner.invoke(app, ["jobs"]).output.splitlines()[1:]]
    assert [row[1] for row in listed] == ["SUCCEEDED", "SUBMITTED", "SUBMITTED"]


def test_the_env_example_lists_every_variable_the_code_reads():
    """`.env.example` documents every setting: each OBS_PLATFORM_* name in the code appears in it."""
    root = Path(__file__).resolve().parent.parent
    code = "\n".join(
        p.read_text() for folder in ("obs_platform", "trainer_container") for p in (root / folder).rglob("*.py")
    )
    names = set(re.findall(r"OBS_PLATFORM_[A-Z0-9_]*[A-Z0-9]", code))
    names |= {f"OBS_PLATFORM_VERTEX_{key}" for key in ("PROJECT", "REGION", "BUCKET", "TRAINER_IMAGE")}
    example = (root / ".env.example").read_text()
    assert sorted(name for name in names if name not in example) == []

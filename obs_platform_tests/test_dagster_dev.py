"""The loop under a real `dagster dev` (webserver and daemon): a tuning job submitted before it starts is
reported by the job-status sensor, and declarative automation evaluates, gates and serves the model, with
nobody switching anything on."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from obs_platform.cli import sample_data_files
from obs_platform.serving import endpoint

from .conftest import free_port
from .test_data_assets import PROJECT_ROOT, load_defs, metadata

pytestmark = pytest.mark.slow

AFTER_THE_MODEL = ("model_calibration", "evaluation_report", "champion_model", "oss_endpoint")


def start_dagster_dev(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`dagster dev` in its own session: started from a non-interactive shell it ignores SIGINT/SIGTERM sent to
    it alone, so it is stopped by signalling its whole process group."""
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_dagster_dev(process)
    raise AssertionError(f"dagster dev did not answer in 180 s:\n{log.read_text()[-3000:]}")


def stop_dagster_dev(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_for(instance: dg.DagsterInstance, key: str, log: Path, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while instance.get_latest_materialization_event(dg.AssetKey(key)) is None:
        assert time.monotonic() < deadline, f"{key} was never materialised:\n{log.read_text()[-4000:]}"
        time.sleep(2)


def test_the_daemon_reports_the_job_and_automation_deploys_the_model(monkeypatch, storage, tiny_bert, tmp_path):
    for file in sample_data_files():
        storage.write_bytes(f"landing/{file.name}", file.read_bytes())
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(dagster_home),
        "OBS_PLATFORM_BASE_MODEL": str(tiny_bert),
        "OBS_PLATFORM_TRAIN_EPOCHS": "1",
        "OBS_PLATFORM_TRAIN_BATCH_SIZE": "64",
        "OBS_PLATFORM_TRAIN_MAX_LENGTH": "64",
        "OBS_PLATFORM_BASELINES": "majority,tfidf_logistic",
        "OBS_PLATFORM_EXTERNAL_EVAL": "",
        "OBS_PLATFORM_PROMOTION_FLOOR": "none",
        "OBS_PLATFORM_ENDPOINT_RUNTIME": "torch",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    defs = load_defs(monkeypatch, storage.root)  # also sets OBS_PLATFORM_HOME
    log = tmp_path / "dagster-dev.log"
    with dg.DagsterInstance.get() as instance:
        # Submitted from "the UI" before the daemon is up: the job trains while nothing waits for it.
        assert defs.resolve_job_def("train").execute_in_process(instance=instance).success
        job_id = metadata(instance, "oss_tuning_job")["job_id"]
        process, _ = start_dagster_dev({**os.environ}, log)
        try:
            wait_for(instance, "oss_endpoint", log)
        finally:
            stop_dagster_dev(process)
            endpoint.stop(storage.root)
        reported = instance.get_latest_materialization_event(dg.AssetKey("tuned_oss_model"))
        assert reported.run_id == ""  # recorded by the sensor, not by a run
        assert metadata(instance, "tuned_oss_model")["job_id"] == job_id
        runs = {key: instance.get_latest_materialization_event(dg.AssetKey(key)).run_id for key in AFTER_THE_MODEL}
        [automation_run] = set(runs.values())  # one run for everything after the model
        tags = instance.get_run_by_id(automation_run).tags
        assert tags.get("dagster/sensor_name") == "model_automation", tags
        assert metadata(instance, "champion_model")["champion"] == "oss-classifier/v1"

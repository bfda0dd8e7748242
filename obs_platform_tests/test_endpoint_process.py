"""The endpoint as a real background process on loopback, the client against it, and the CLI."""

import json
import shutil
import subprocess
import time
from dataclasses import asdict

import psutil
import pytest
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.processes import lock_held, process_alive, spawn_holding_lock
from obs_platform.serving import endpoint
from obs_platform.serving.client import EndpointUnavailable, ObservationClassifier, RequestRejected
from obs_platform.serving.prediction_log import PREDICTION_LOG_FOLDER
from obs_platform.serving.runtime import EXPORT_MANIFEST
from obs_platform.taxonomy import default_taxonomy_path


@pytest.fixture
def running(monkeypatch, tmp_path, trained):
    """The endpoint on a registry-like copy of the model (`v1/files`), its temporary folder one of the test's."""
    model_dir = tmp_path / "v1" / "files"
    shutil.copytree(trained, model_dir)
    (tmp_path / "temp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "temp"))
    state = endpoint.start(tmp_path, str(model_dir), "oss-classifier/v1", str(default_taxonomy_path()))
    yield tmp_path, state
    endpoint.stop(tmp_path)


@pytest.mark.slow
def test_start_classify_restart_stop(running):
    root, state = running
    token, token_file = endpoint.endpoint_token(root)
    assert token_file is not None and oct(token_file.stat().st_mode & 0o777) == "0o600"
    client = ObservationClassifier.for_local_endpoint(state.url, token)
    result = client.classify("[CHILD] counted the ducks on the pond", child_age_months=42)
    assert result.model_version == "oss-classifier/v1" and len(result.top_k) == 3
    batch = client.classify_batch([{"notes": "Sang a song"}, {"notes": "Drew a circle", "child_age_months": 30}])
    assert len(batch) == 2
    [log] = (root / PREDICTION_LOG_FOLDER).iterdir()  # every prediction logged, by its id
    logged = [json.loads(line)["prediction_id"] for line in log.read_text().splitlines()]
    assert logged == [result.prediction_id, *(p.prediction_id for p in batch)]
    with pytest.raises(RequestRejected) as rejected:
        client.classify("   ")
    assert rejected.value.status == 422
    with pytest.raises(RequestRejected):
        ObservationClassifier.for_local_endpoint(state.url, "wrong").classify("Sang a song")
    [export] = (root / "v1" / "onnx").iterdir()  # the ONNX export, beside the version's files
    built = (export / EXPORT_MANIFEST).stat().st_mtime_ns

    # A copy of the storage root names the running endpoint's PID: not its endpoint, never signalled.
    shutil.copytree(root / endpoint.SERVING, root / "copy" / endpoint.SERVING)
    with pytest.raises(endpoint.StaleEndpointState, match="signalled nothing"):
        endpoint.stop(root / "copy")
    assert endpoint.status(root).pid == state.pid

    restarted = endpoint.start(root, state.model_dir, "oss-classifier/v2", str(default_taxonomy_path()))
    assert restarted.pid != state.pid and endpoint.status(root).model_version == "oss-classifier/v2"
    assert [export] == list((root / "v1" / "onnx").iterdir())  # loaded, not built again
    assert (export / EXPORT_MANIFEST).stat().st_mtime_ns == built
    assert endpoint.stop(root).pid == restarted.pid
    assert endpoint.status(root) is None and not lock_held(root / endpoint.SERVING / "endpoint.lock")
    assert list((root / "temp").rglob("*onnx*")) == []  # no export left in the temporary folder


def test_the_client_retries_then_gives_up_on_a_dead_endpoint():
    client = ObservationClassifier.for_local_endpoint("http://127.0.0.1:9", "t", retries=2, backoff_seconds=0.01)
    with pytest.raises(EndpointUnavailable, match="after 3 attempts"):
        client.classify("Sang a song")


def test_cli_endpoint_commands_without_a_model(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["endpoint", "status"]).exit_code == 1
    started = runner.invoke(app, ["endpoint", "start"])
    assert started.exit_code == 1 and "run `obs-platform run` to train one" in started.output
    assert "no endpoint is running" in runner.invoke(app, ["classify", "Sang a song"]).output
    dated = runner.invoke(app, ["classify", "Sang a song", "--age-months", "52", "--date", "2026-06-12"])
    assert "no endpoint is running" in dated.output
    misdated = runner.invoke(app, ["classify", "Sang a song", "--date", "12/06/2026"])
    assert misdated.exit_code == 2 and "--date" in misdated.output
    assert runner.invoke(app, ["endpoint", "stop"]).output.strip() == "no endpoint was running"


class FlakyTransport:
    """Raises the scripted failures in turn, then answers; records how often it was called."""

    def __init__(self, *failures: Exception):
        self.failures, self.calls = list(failures), 0

    def predict(self, instances):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {
            "model_version": "v",
            "predictions": [
                {
                    "domain": "d",
                    "domain_name": "D",
                    "attribute": "a",
                    "attribute_id": 1,
                    "level": "l",
                    "confidence": 0.5,
                    "level_confidence": 0.5,
                }
            ]
            * len(instances),
        }


def test_transient_statuses_are_retried_and_other_4xx_are_not():
    from obs_platform.serving.client import RetryableStatus

    flaky = FlakyTransport(RetryableStatus(503), RetryableStatus(429))
    assert ObservationClassifier(flaky, retries=3, backoff_seconds=0).classify("x").attribute == "a"
    assert flaky.calls == 3
    rejected = FlakyTransport(RequestRejected(400, "bad"), RetryableStatus(503))
    with pytest.raises(RequestRejected):
        ObservationClassifier(rejected, retries=3, backoff_seconds=0).classify("x")
    assert rejected.calls == 1


@pytest.fixture
def sleeper():
    """An unrelated process in a session of its own: one that a signal to a process group would end."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def write_state(root, pid, started_at):
    state = endpoint.EndpointState("http://127.0.0.1:9", pid, "m/v1", "/m", "/t", "/l", started_at)
    folder = root / endpoint.SERVING
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps(asdict(state)))


@pytest.mark.parametrize("recorded_start", ["earlier", "same"])
def test_a_pid_now_of_another_process_is_reported_stale_and_never_signalled(
    monkeypatch, tmp_path, sleeper, recorded_start
):
    started = psutil.Process(sleeper.pid).create_time()
    # A PID reused since (another start time), or one that started then but holds no lock of this root.
    write_state(tmp_path, sleeper.pid, started - 3600 if recorded_start == "earlier" else started)
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    runner = CliRunner()
    status = runner.invoke(app, ["endpoint", "status"])
    assert status.exit_code == 1 and f"pid {sleeper.pid} is not this endpoint" in status.output
    assert ("started at" if recorded_start == "earlier" else "does not hold") in status.output
    assert "is not this endpoint" in runner.invoke(app, ["classify", "Sang a song"]).output
    stopped = runner.invoke(app, ["endpoint", "stop"])
    assert stopped.exit_code == 1 and "signalled nothing" in stopped.output
    time.sleep(0.2)
    assert sleeper.poll() is None  # still running
    assert runner.invoke(app, ["endpoint", "stop"]).output.strip() == "no endpoint was running"  # state removed


def test_a_copied_storage_root_does_not_own_the_original_endpoint(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    folder = original / endpoint.SERVING
    folder.mkdir(parents=True)
    lock = folder / "endpoint.lock"
    spawned = spawn_holding_lock(["sleep", "60"], lock, folder / "server.log", {})
    try:
        write_state(original, spawned.process.pid, spawned.started_at)
        shutil.copytree(original, copy)
        assert lock_held(lock) and not lock_held(copy / endpoint.SERVING / "endpoint.lock")
        with pytest.raises(endpoint.StaleEndpointState, match="does not hold .*copy/endpoint/endpoint.lock"):
            endpoint.status(copy)
        with pytest.raises(endpoint.StaleEndpointState, match="signalled nothing"):
            endpoint.stop(copy)
        assert endpoint.status(copy) is None and process_alive(spawned.process.pid)
        assert endpoint.status(original).pid == spawned.process.pid  # the original still knows its endpoint
        assert endpoint.stop(original).pid == spawned.process.pid
        assert not process_alive(spawned.process.pid) and not lock_held(lock)
    finally:
        spawned.process.kill()
        spawned.process.wait()


def test_a_truncated_state_is_reported_in_a_line(monkeypatch, tmp_path):
    write_state(tmp_path, 1, 0.0)
    state_file = tmp_path / endpoint.SERVING / "state.json"
    state_file.write_text(state_file.read_text()[:30])
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    runner = CliRunner()
    for command in (["endpoint", "status"], ["endpoint", "stop"], ["classify", "Sang a song"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert f"{state_file} is unreadable (Invalid JSON" in result.output
        assert "no endpoint process holds its lock" in result.output and len(result.output.splitlines()) == 1
    state_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": "one"}))
    with pytest.raises(endpoint.EndpointStateError, match="unreadable"):
        endpoint.status(tmp_path)

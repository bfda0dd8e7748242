"""The endpoint as a real background process on loopback, the client against it, and the CLI."""

import pytest
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.serving import endpoint
from obs_platform.serving.client import EndpointUnavailable, ObservationClassifier, RequestRejected
from obs_platform.taxonomy import default_taxonomy_path


@pytest.fixture
def running(tmp_path, trained):
    state = endpoint.start(tmp_path, str(trained), "oss-classifier/v1", str(default_taxonomy_path()))
    yield tmp_path, state
    endpoint.stop(tmp_path)


@pytest.mark.slow
def test_start_classify_restart_stop(running, trained):
    root, state = running
    token, token_file = endpoint.endpoint_token(root)
    assert token_file is not None and oct(token_file.stat().st_mode & 0o777) == "0o600"
    client = ObservationClassifier.for_local_endpoint(state.url, token)
    result = client.classify("[CHILD] counted the ducks on the pond", child_age_months=42)
    assert result.model_version == "oss-classifier/v1" and len(result.top_k) == 3
    batch = client.classify_batch([{"notes": "Sang a song"}, {"notes": "Drew a circle", "child_age_months": 30}])
    assert len(batch) == 2
    with pytest.raises(RequestRejected) as rejected:
        client.classify("   ")
    assert rejected.value.status == 422
    with pytest.raises(RequestRejected):
        ObservationClassifier.for_local_endpoint(state.url, "wrong").classify("Sang a song")
    restarted = endpoint.start(root, str(trained), "oss-classifier/v2", str(default_taxonomy_path()))
    assert restarted.pid != state.pid and endpoint.status(root).model_version == "oss-classifier/v2"
    assert endpoint.stop(root).pid == restarted.pid
    assert endpoint.status(root) is None


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
    assert runner.invoke(app, ["endpoint", "stop"]).output.strip() == "no endpoint was running"


class FlakyTransport:
    """Answers 503 twice, then a prediction; records how often it was called."""

    def __init__(self, failures):
        self.failures, self.calls = list(failures), 0

    def predict(self, instances):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"model_version": "v", "predictions": [
            {"domain": "d", "domain_name": "D", "attribute": "a", "attribute_id": 1, "level": "l", "confidence": 0.5,
         "level_confidence": 0.5}
        ] * len(instances)}  # fmt: skip


def test_transient_statuses_are_retried_and_other_4xx_are_not():
    from obs_platform.serving.client import RetryableStatus

    flaky = FlakyTransport([RetryableStatus(503), RetryableStatus(429)])
    assert ObservationClassifier(flaky, retries=3, backoff_seconds=0).classify("x").attribute == "a"
    assert flaky.calls == 3
    rejected = FlakyTransport([RequestRejected(400, "bad"), RetryableStatus(503)])
    with pytest.raises(RequestRejected):
        ObservationClassifier(rejected, retries=3, backoff_seconds=0).classify("x")
    assert rejected.calls == 1

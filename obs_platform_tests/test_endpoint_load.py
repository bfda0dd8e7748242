"""The endpoint under load and the client's manners: many callers at once are batched together and shed with 429
+ `Retry-After` (which the client honours) instead of timing out; a caller that has gone is not computed for; the
client backs off and does not send a timed-out request again. Over real HTTP, on a predictor that only sleeps."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from obs_platform.serving.app import create_app
from obs_platform.serving.batching import BatchingSettings
from obs_platform.serving.client import (
    EndpointTimedOut,
    EndpointUnavailable,
    HttpTransport,
    ObservationClassifier,
    RetryableStatus,
    retry_after_seconds,
)

from .endpoint_harness import CountingTransport, TimedPredictor, served
from .test_endpoint_process import FlakyTransport

TOKEN = "load-token"
NOTE = "Amara filled the tall jug at the water tray and poured it carefully into three cups of different sizes."


def test_many_callers_are_batched_together_and_shed_with_429_that_the_client_honours():
    """8 callers × 3 batches of 8 notes against a queue that may hold 0.2 s of work: every call is answered,
    some after a 429, none times out or meets a 5xx; a call told to come back is admitted when it does (its
    ticket kept its place, however busy the others kept the queue); requests share forward passes."""
    predictor = TimedPredictor(seconds_per_token=2e-4)  # 8 notes of 38 tokens: 0.06 s alone
    app = create_app(predictor, {"model_version": "v1"}, TOKEN, batching=BatchingSettings(max_queue_seconds=0.2))
    refusals_per_call: list[int] = []
    with served(app) as url:

        def caller(_: int) -> dict[int, int]:
            transport = CountingTransport(url, TOKEN, timeout=10)
            client = ObservationClassifier(transport, retries=0)
            for _ in range(3):
                refused_before = transport.statuses.get(429, 0)
                assert len(client.classify_batch([{"notes": NOTE}] * 8)) == 8
                refusals_per_call.append(transport.statuses.get(429, 0) - refused_before)
            return transport.statuses

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(caller, range(8)))
    assert sum(s.get(200, 0) for s in statuses) == 24 and all(set(s) <= {200, 429} for s in statuses)
    assert len(refusals_per_call) == 24 and sum(refusals_per_call) > 0 and max(refusals_per_call) == 1
    assert app.state.inference_queue.stats().largest_batch > 8  # batches formed across requests


def test_work_whose_caller_has_gone_is_withdrawn_before_it_is_computed():
    hold = threading.Event()
    predictor = TimedPredictor(hold=hold)
    app = create_app(predictor, {"model_version": "v1"}, TOKEN)
    queue = app.state.inference_queue
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with served(app) as url, httpx.Client(base_url=url, headers=auth) as http, ThreadPoolExecutor(1) as pool:
        first = pool.submit(http.post, "/v1/predict", json={"instances": [{"notes": "kept"}]}, timeout=10)
        assert predictor.entered.wait(5)
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/predict", json={"instances": [{"notes": "abandoned"}]}, timeout=0.3)
        deadline = time.monotonic() + 5
        while queue.stats().withdrawn == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue.stats().withdrawn == 1 and queue.stats().queued_requests == 0
        hold.set()
        assert first.result(10).status_code == 200
    assert [[i.notes for i in batch] for batch in predictor.batches] == [["kept"]]


def test_the_client_waits_as_told_by_retry_after_without_spending_its_retries():
    slept: list[float] = []
    transport = FlakyTransport(*[RetryableStatus(429, retry_after=2)] * 5)
    client = ObservationClassifier(transport, retries=1, sleep=slept.append)
    assert client.classify("Sang a song").attribute == "a"
    assert transport.calls == 6 and len(slept) == 5 and all(2 <= s <= 2.5 for s in slept)


def test_the_client_gives_up_when_waiting_would_pass_its_patience():
    slept: list[float] = []
    transport = FlakyTransport(*[RetryableStatus(429, retry_after=40)] * 5)
    client = ObservationClassifier(transport, patience_seconds=60, sleep=slept.append)
    with pytest.raises(EndpointUnavailable, match="after 2 attempts"):
        client.classify("Sang a song")
    assert transport.calls == 2 and len(slept) == 1


def test_unanswered_5xx_and_lost_connections_back_off_with_jitter_then_give_up():
    slept: list[float] = []
    transport = FlakyTransport(RetryableStatus(503), httpx.ConnectError("refused"), RetryableStatus(502))
    client = ObservationClassifier(transport, retries=2, backoff_seconds=1, sleep=slept.append)
    with pytest.raises(EndpointUnavailable, match="after 3 attempts"):
        client.classify("Sang a song")
    assert 0.5 <= slept[0] <= 1 and 1 <= slept[1] <= 2


def test_a_timed_out_request_is_not_sent_again():
    transport = FlakyTransport(httpx.ReadTimeout("no answer"))
    with pytest.raises(EndpointTimedOut, match="not sent again"):
        ObservationClassifier(transport, sleep=lambda _: None).classify("Sang a song")
    assert transport.calls == 1


def test_the_timeout_grows_with_the_batch():
    transport = HttpTransport("http://127.0.0.1:9", "t", timeout=30, seconds_per_instance=0.5)
    assert transport.timeout_for(1).read == 30.5 and transport.timeout_for(64).read == 62
    assert transport.timeout_for(64).connect == 10


def test_retry_after_is_read_as_seconds_or_a_date():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("3") == 3
    in_five = format_datetime(now + timedelta(seconds=5), usegmt=True)
    assert retry_after_seconds(in_five, now=now.timestamp()) == 5
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None

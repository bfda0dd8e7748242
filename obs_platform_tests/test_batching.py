"""The endpoint's inference queue: batches across requests within a token budget, refuses a line longer than its
deadline, drops withdrawn work, isolates a failing request; on a predictor that only sleeps."""

import threading

import pytest

from obs_platform.predictions import Instance
from obs_platform.serving import batching
from obs_platform.serving.batching import BatchingSettings, InferenceQueue, QueueFull, QueueStopped

from .endpoint_harness import TimedPredictor


def notes(count: int, length: int = 40, mark: str = "n") -> list[Instance]:
    return [Instance((mark * length)[:length]) for _ in range(count)]


@pytest.fixture
def hold() -> threading.Event:
    return threading.Event()


def busy_queue(predictor: TimedPredictor, **settings: float) -> InferenceQueue:
    """A queue whose worker is inside its first batch (blocked until the predictor's hold is set)."""
    queue = InferenceQueue(predictor, BatchingSettings(**settings))
    queue.submit(notes(1, 8, "first"))
    assert predictor.entered.wait(5)
    return queue


def test_requests_waiting_together_share_one_batch_and_each_gets_its_own_answers(hold):
    predictor = TimedPredictor(hold=hold)
    queue = busy_queue(predictor)
    futures = [queue.submit(notes(count, length)) for count, length in ((2, 10), (1, 20), (3, 30))]
    hold.set()
    answers = [future.result(5) for future in futures]
    assert [[p.attribute_id for p in answer] for answer in answers] == [[10, 10], [20], [30, 30, 30]]
    assert [len(batch) for batch in predictor.batches] == [1, 6]
    assert queue.stats().largest_batch == 6
    queue.stop()


def test_a_batch_holds_no_more_tokens_than_its_budget(hold):
    predictor = TimedPredictor(hold=hold)
    per_note = InferenceQueue(predictor).estimate_tokens(notes(1, 40)[0])  # 22 tokens
    queue = busy_queue(predictor, batch_tokens=4 * per_note)
    futures = [queue.submit(notes(2, 40)) for _ in range(3)] + [queue.submit(notes(1, 400))]
    hold.set()
    for future in futures:
        future.result(5)
    # Two requests of two fill the budget; the long note (112 tokens) overflows any batch it joined, so goes alone.
    assert [len(batch) for batch in predictor.batches] == [1, 4, 2, 1]
    assert predictor.batches[-1][0].notes == "n" * 400
    queue.stop()


def test_a_batch_runs_as_forward_passes_of_similar_lengths(hold):
    predictor = TimedPredictor(hold=hold)
    queue = busy_queue(predictor, forward_batch=2)
    futures = [queue.submit([Instance("x" * length) for length in lengths]) for lengths in ((90, 10), (50,), (30,))]
    hold.set()
    answers = [[p.attribute_id for p in future.result(5)] for future in futures]
    assert answers == [[90, 10], [50], [30]]
    assert [[len(i.notes) for i in batch] for batch in predictor.batches[1:]] == [[10, 30], [50, 90]]
    queue.stop()


def test_the_token_estimate_is_capped_at_the_models_length():
    queue = InferenceQueue(TimedPredictor())
    assert queue.estimate_tokens(Instance("x" * 40)) == 22
    assert queue.estimate_tokens(Instance("x" * 4000)) == TimedPredictor.max_length


def test_a_line_longer_than_the_deadline_is_refused_with_a_time_to_come_back(hold):
    predictor = TimedPredictor(seconds_per_token=0.001)
    queue = InferenceQueue(predictor, BatchingSettings(max_queue_seconds=0.5))
    queue.submit(notes(4)).result(5)  # measures the throughput: about 1,000 tokens a second
    predictor.hold, predictor.entered = hold, threading.Event()
    queue.submit(notes(1))
    assert predictor.entered.wait(5)
    admitted = []
    with pytest.raises(QueueFull) as refused:
        for _ in range(100):
            admitted.append(queue.submit(notes(4)))  # 88 tokens: about 0.09 s each
    assert 3 <= len(admitted) <= 6
    assert refused.value.expected_wait > 0.5 and refused.value.retry_after == 1
    assert "retry after 1 s" in str(refused.value)
    hold.set()
    assert all(len(future.result(5)) == 4 for future in admitted)
    queue.submit(notes(4)).result(5)  # the line drained: admitted again
    queue.stop()


def full_queue(hold: threading.Event, max_queue_seconds: float = 0.5) -> tuple[InferenceQueue, QueueFull]:
    """A queue measured at about 1,000 tokens a second, its worker held, filled until it refused a request."""
    predictor = TimedPredictor(seconds_per_token=0.001)
    queue = InferenceQueue(predictor, BatchingSettings(max_queue_seconds=max_queue_seconds))
    queue.submit(notes(4)).result(5)
    predictor.hold, predictor.entered = hold, threading.Event()
    queue.submit(notes(1))
    assert predictor.entered.wait(5)
    with pytest.raises(QueueFull) as refused:
        for _ in range(100):
            queue.submit(notes(4))
    return queue, refused.value


def test_a_refused_request_keeps_its_place_with_its_ticket(hold):
    queue, first = full_queue(hold)
    assert first.ticket and queue.stats().reserved_tokens == 88
    with pytest.raises(QueueFull) as later:  # its place counts: a later caller is sent further back
        queue.submit(notes(4))
    assert later.value.expected_wait > first.expected_wait + 0.05
    queue.submit(notes(4), ticket=first.ticket)  # admitted at once, however long the line
    assert queue.stats().reserved_tokens == 88  # the later caller's place
    with pytest.raises(QueueFull):  # a ticket is good once
        queue.submit(notes(4), ticket=first.ticket)
    hold.set()
    queue.stop()


def test_a_ticket_not_used_in_time_gives_its_place_up(hold, monkeypatch):
    monkeypatch.setattr(batching, "TICKET_GRACE_SECONDS", -100.0)  # every ticket has expired when next looked at
    queue, first = full_queue(hold)
    with pytest.raises(QueueFull) as again:
        queue.submit(notes(4), ticket=first.ticket)
    assert queue.stats().reserved_tokens == 88 and again.value.ticket != first.ticket
    hold.set()
    queue.stop()


def test_tickets_hold_a_bounded_amount_of_work(hold):
    queue, _ = full_queue(hold, max_queue_seconds=0.1)  # tickets for 4 × 0.1 s: about 400 tokens
    tickets = []
    for _ in range(10):
        with pytest.raises(QueueFull) as refused:
            queue.submit(notes(4))
        tickets.append(refused.value.ticket)
    assert 3 <= sum(t is not None for t in tickets) <= 4 and tickets[-1] is None
    assert queue.stats().reserved_tokens <= 400
    hold.set()
    queue.stop()


def test_before_any_measurement_a_few_budgets_of_work_are_admitted(hold):
    predictor = TimedPredictor(hold=hold)
    queue = busy_queue(predictor, batch_tokens=100)
    for _ in range(17):  # 4 budgets of 100 tokens hold the first request's 14 and 17 of 22
        queue.submit(notes(1))
    with pytest.raises(QueueFull) as refused:
        queue.submit(notes(1))
    assert refused.value.expected_wait is None and refused.value.retry_after == 1 and refused.value.ticket
    hold.set()
    queue.stop()


def test_withdrawn_work_is_never_computed(hold):
    predictor = TimedPredictor(hold=hold)
    queue = busy_queue(predictor)
    first = queue.submit(notes(1, 11))
    gone = queue.submit(notes(1, 99))
    assert queue.withdraw(gone) and gone.cancelled()
    assert queue.stats().queued_requests == 1 and queue.stats().withdrawn == 1
    hold.set()
    assert first.result(5)[0].attribute_id == 11
    queue.stop()
    assert all(len(i.notes) != 99 for batch in predictor.batches for i in batch)
    assert not queue.withdraw(first)  # already answered


def test_a_failing_request_does_not_fail_the_requests_batched_with_it(hold):
    predictor = TimedPredictor(hold=hold, fail_on="boom")
    queue = busy_queue(predictor)
    before, failing, after = queue.submit(notes(2, 12)), queue.submit([Instance("boom")]), queue.submit(notes(1, 13))
    hold.set()
    assert [p.attribute_id for p in before.result(5)] == [12, 12] and after.result(5)[0].attribute_id == 13
    with pytest.raises(ValueError):
        failing.result(5)
    queue.stop()


def test_stopping_refuses_what_is_still_queued(hold):
    predictor = TimedPredictor(hold=hold)
    queue = busy_queue(predictor)
    waiting = queue.submit(notes(1))
    threading.Timer(0.2, hold.set).start()
    queue.stop()
    with pytest.raises(QueueStopped):
        waiting.result(5)
    with pytest.raises(QueueStopped):
        queue.submit(notes(1))
    queue.start()  # as an app's lifespan starts again
    assert len(queue.submit(notes(2)).result(5)) == 2
    queue.stop()


def test_settings_from_the_environment():
    assert BatchingSettings.from_env({}) == BatchingSettings()
    settings = BatchingSettings.from_env(
        {
            "OBS_PLATFORM_ENDPOINT_MAX_QUEUE_SECONDS": "2.5",
            "OBS_PLATFORM_ENDPOINT_BATCH_TOKENS": "4096",
            "OBS_PLATFORM_ENDPOINT_BATCH_WAIT_MS": "2",
            "OBS_PLATFORM_ENDPOINT_FORWARD_BATCH": "8",
        }
    )
    assert settings == BatchingSettings(
        batch_tokens=4096, forward_batch=8, max_wait_seconds=0.002, max_queue_seconds=2.5
    )
    with pytest.raises(ValueError, match="invalid endpoint batching settings"):
        BatchingSettings.from_env({"OBS_PLATFORM_ENDPOINT_MAX_QUEUE_SECONDS": "0"})

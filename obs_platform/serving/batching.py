"""The endpoint's inference queue: one worker owns the predictor and answers requests in batches formed across
callers, as Triton's dynamic batcher and text-embeddings-inference do.

A batch takes requests in arrival order while their estimated tokens fit a token budget, waiting a few
milliseconds at most for more to arrive; its observations are sorted by length into forward passes of at most
`forward_batch` each, so a short note is not padded to a long one's length (on a CPU the forward pass is
compute-bound: padding is lost work, and a larger pass gains nothing). Admission is bounded: when the
work already queued would keep a new request waiting longer than `max_queue_seconds` at the throughput measured
so far, it is refused at once (`QueueFull`, answered 429 with `Retry-After`) instead of being left to time out
in a line that only grows. A refused request is given a ticket, its place in the line: its tokens are counted as
waiting until it comes back with the ticket (admitted then, whatever the line) or the ticket expires, so callers
that keep the queue full cannot crowd out those told to come back later. A request whose caller has gone is
taken out before it is computed (`withdraw`).
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.predictor import Predictor

CHARS_PER_TOKEN = 4  # English word pieces: about four characters each
PROMPT_TOKENS = 12  # what the request's text adds around the notes: the framing, the age, [CLS]/[SEP]
DEFAULT_MAX_LENGTH = 512  # a predictor that does not say how far it truncates
THROUGHPUT_WEIGHT = 0.3  # weight of the newest batch in the moving average of tokens per second
UNMEASURED_BATCHES = 4  # before any batch is measured, admit this many budgets of work
TICKET_GRACE_SECONDS = 5.0  # a ticket outlives its Retry-After by a quarter of it (the client's jitter) and this
MAX_RESERVED_DEADLINES = 4  # tickets hold at most this many deadlines' worth of work: refusals past it get none


@dataclass(frozen=True)
class BatchingSettings:
    """How the queue forms batches and when it refuses work."""

    batch_tokens: int = 8192  # estimated tokens per batch: 64 notes of 128 tokens
    forward_batch: int = 16  # observations per forward pass
    max_wait_seconds: float = 0.005  # how long the first request of a batch waits for company
    max_queue_seconds: float = 10.0  # refuse (429) a request that would wait longer than this to start

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BatchingSettings:
        """`OBS_PLATFORM_ENDPOINT_MAX_QUEUE_SECONDS`, `OBS_PLATFORM_ENDPOINT_BATCH_TOKENS`,
        `OBS_PLATFORM_ENDPOINT_BATCH_WAIT_MS`, `OBS_PLATFORM_ENDPOINT_FORWARD_BATCH`; unset: the defaults."""

        def number(name: str, default: float) -> float:
            return float(environ.get(f"OBS_PLATFORM_ENDPOINT_{name}") or default)

        default = cls()
        settings = cls(
            batch_tokens=int(number("BATCH_TOKENS", default.batch_tokens)),
            forward_batch=int(number("FORWARD_BATCH", default.forward_batch)),
            max_wait_seconds=number("BATCH_WAIT_MS", default.max_wait_seconds * 1000) / 1000,
            max_queue_seconds=number("MAX_QUEUE_SECONDS", default.max_queue_seconds),
        )
        if (
            settings.batch_tokens < 1
            or settings.forward_batch < 1
            or settings.max_wait_seconds < 0
            or not settings.max_queue_seconds > 0
        ):
            raise ValueError(f"invalid endpoint batching settings: {settings}")
        return settings


class QueueFull(Exception):
    """The queue holds more work than its deadline allows: come back after `retry_after` seconds."""

    def __init__(self, expected_wait: float | None, retry_after: int, ticket: str | None = None):
        self.expected_wait, self.retry_after = expected_wait, retry_after  # expected_wait: None before measuring
        self.ticket = ticket  # the place kept for the request when it comes back; None when none was kept
        queued = "the queue is full" if expected_wait is None else f"about {expected_wait:.0f} s of work is queued"
        super().__init__(f"the endpoint is busy ({queued}): retry after {retry_after} s")


class QueueStopped(Exception):
    """The queue was stopped (the endpoint is shutting down) before the request was answered."""


@dataclass
class _Request:
    instances: list[Instance]
    sizes: list[int]  # estimated tokens of each observation
    future: Future[list[Prediction]] = field(default_factory=Future)

    @property
    def tokens(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class _Reservation:
    tokens: int
    expires: float  # time.monotonic()


@dataclass(frozen=True)
class QueueStats:
    queued_requests: int
    queued_tokens: int
    reserved_tokens: int  # of refused requests holding a ticket
    tokens_per_second: float | None  # None until a batch has been measured
    batches: int
    largest_batch: int  # observations in the largest batch so far
    withdrawn: int  # requests taken out because their caller had gone


class InferenceQueue:
    """One worker thread runs every forward pass; callers `submit` and wait on the future they get back."""

    def __init__(self, predictor: Predictor, settings: BatchingSettings | None = None):
        self.predictor = predictor
        self.settings = settings or BatchingSettings()
        self.max_tokens = int(getattr(predictor, "max_length", DEFAULT_MAX_LENGTH))
        self._pending: deque[_Request] = deque()
        self._queued_tokens = 0
        self._reservations: dict[str, _Reservation] = {}
        self._reserved_tokens = 0
        self._running_tokens = 0
        self._running_since = 0.0
        self._tokens_per_second: float | None = None
        self._batches = self._largest_batch = self._withdrawn = 0
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopped = False

    def estimate_tokens(self, instance: Instance) -> int:
        """Tokens the model will see for one observation, from its length: truncated at the model's maximum."""
        return min(self.max_tokens, math.ceil(len(instance.notes) / CHARS_PER_TOKEN) + PROMPT_TOKENS)

    def submit(self, instances: list[Instance], ticket: str | None = None) -> Future[list[Prediction]]:
        """Queue a request; its future holds one prediction per instance. Raises `QueueFull` when it would wait
        past the deadline (unless it brings the ticket of an earlier refusal), `QueueStopped` when the queue is
        stopped."""
        request = _Request(list(instances), [self.estimate_tokens(i) for i in instances])
        with self._changed:
            if self._stopped:
                raise QueueStopped("the endpoint is shutting down")
            now = time.monotonic()
            for expired in [key for key, kept in self._reservations.items() if kept.expires < now]:
                self._reserved_tokens -= self._reservations.pop(expired).tokens
            kept = self._reservations.pop(ticket, None) if ticket else None
            if kept is not None:
                self._reserved_tokens -= kept.tokens
            else:
                self._admit(self._queued_tokens + self._running_left() + self._reserved_tokens, request.tokens, now)
            self._pending.append(request)
            self._queued_tokens += request.tokens
            self._ensure_worker()
            self._changed.notify_all()
        return request.future

    def _admit(self, tokens_ahead: float, tokens: int, now: float) -> None:
        """Returns when the request may join the line; otherwise raises `QueueFull` with a ticket for it."""
        deadline = self.settings.max_queue_seconds
        if self._tokens_per_second is None:
            limit = UNMEASURED_BATCHES * self.settings.batch_tokens
            if not tokens_ahead or tokens_ahead + tokens <= limit:
                return
            expected_wait, retry_after, reservable = None, 1, limit
        else:
            expected_wait = (tokens_ahead + tokens) / self._tokens_per_second
            if not tokens_ahead or expected_wait <= deadline:
                return
            # By then the line ahead has shrunk to about the deadline's worth of work, so the worker never idles.
            retry_after = max(1, math.ceil(expected_wait - deadline))
            reservable = MAX_RESERVED_DEADLINES * deadline * self._tokens_per_second
        ticket = None
        if self._reserved_tokens + tokens <= reservable:
            ticket = secrets.token_urlsafe(16)
            self._reservations[ticket] = _Reservation(tokens, now + 1.25 * retry_after + TICKET_GRACE_SECONDS)
            self._reserved_tokens += tokens
        raise QueueFull(expected_wait, retry_after, ticket)

    def _running_left(self) -> float:
        """Tokens of the batch being computed that are still to do, at the measured throughput."""
        if self._tokens_per_second is None:
            return self._running_tokens
        done = (time.monotonic() - self._running_since) * self._tokens_per_second
        return max(0.0, self._running_tokens - done)

    def withdraw(self, future: Future[list[Prediction]]) -> bool:
        """Take a request whose caller has gone out of the line; False when it is already being computed."""
        with self._changed:
            if not future.cancel():
                return False
            for request in self._pending:
                if request.future is future:
                    self._pending.remove(request)
                    self._queued_tokens -= request.tokens
                    self._withdrawn += 1
                    break
            return True

    def stats(self) -> QueueStats:
        with self._changed:
            return QueueStats(
                len(self._pending),
                self._queued_tokens,
                self._reserved_tokens,
                self._tokens_per_second,
                self._batches,
                self._largest_batch,
                self._withdrawn,
            )

    def start(self) -> None:
        """Accept requests again after `stop` (an app's lifespan may run more than once); the worker starts with
        the first request."""
        with self._changed:
            self._stopped = False

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch being computed, refuse the rest (`QueueStopped`) and end the worker."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._changed:
            while self._pending:
                request = self._pending.popleft()
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(QueueStopped("the endpoint is shutting down"))
            self._queued_tokens = 0

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="inference-queue", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._compute(batch)

    def _next_batch(self) -> list[_Request] | None:
        """The next batch in arrival order (None once stopped): waits for a first request, then up to
        `max_wait_seconds` from its arrival for the budget to fill."""
        budget = self.settings.batch_tokens
        with self._changed:
            self._running_tokens = 0
            while not self._pending and not self._stopped:
                self._changed.wait()
            if self._stopped:
                return None
            fill_by = time.monotonic() + self.settings.max_wait_seconds
            while self._queued_tokens < budget and not self._stopped and (left := fill_by - time.monotonic()) > 0:
                self._changed.wait(left)
            batch: list[_Request] = []
            tokens = 0
            while self._pending and not (batch and tokens + self._pending[0].tokens > budget):
                request = self._pending.popleft()
                self._queued_tokens -= request.tokens
                if request.future.set_running_or_notify_cancel():  # False: withdrawn meanwhile
                    batch.append(request)
                    tokens += request.tokens
            self._running_tokens, self._running_since = tokens, time.monotonic()
            return batch

    def _compute(self, batch: list[_Request]) -> None:
        instances = [instance for request in batch for instance in request.instances]
        sizes = [size for request in batch for size in request.sizes]
        by_length = sorted(range(len(instances)), key=sizes.__getitem__)
        started = time.perf_counter()
        try:
            predictions: list[Prediction | None] = [None] * len(instances)
            for start in range(0, len(by_length), self.settings.forward_batch):
                passed = by_length[start : start + self.settings.forward_batch]
                for index, prediction in zip(
                    passed, self.predictor.predict([instances[i] for i in passed]), strict=True
                ):
                    predictions[index] = prediction
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:  # one request's failure must not fail the others that shared its batch
                for request in batch:
                    self._compute([request])
            return
        seconds = time.perf_counter() - started
        self._measure(sum(sizes), seconds, len(instances))
        offset = 0
        for request in batch:
            request.future.set_result(predictions[offset : offset + len(request.instances)])  # type: ignore[arg-type]
            offset += len(request.instances)

    def _measure(self, tokens: int, seconds: float, observations: int) -> None:
        with self._changed:
            rate = tokens / max(seconds, 1e-6)
            if self._tokens_per_second is not None:
                rate = THROUGHPUT_WEIGHT * rate + (1 - THROUGHPUT_WEIGHT) * self._tokens_per_second
            self._tokens_per_second = rate
            self._batches += 1
            self._largest_batch = max(self._largest_batch, observations)

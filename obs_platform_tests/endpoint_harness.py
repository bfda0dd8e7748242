"""What the endpoint's tests share: a predictor that takes as long as a real one would (and records its
batches), the app served by a real uvicorn on loopback in this process, and a transport that counts what the
client met on the way."""

from __future__ import annotations

import io
import logging
import logging.config
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.__main__ import log_config
from obs_platform.serving.client import HttpTransport, RetryableStatus

from .conftest import free_port


class TimedPredictor:
    """Answers every observation with the same label after `seconds_per_token` per padded token of its batch;
    `fail_on` makes it raise (with the notes in the message, as a careless library might) for a note holding it.
    `hold` (an Event) makes every batch wait for it first, `entered` is set as each batch starts. The answer's
    `attribute_id` is the length of the observation's notes, so a test can tell whose answer is whose."""

    runtime = "fake"
    max_length = 128

    def __init__(self, seconds_per_token: float = 0.0, fail_on: str | None = None, hold: threading.Event | None = None):
        self.seconds_per_token, self.fail_on, self.hold = seconds_per_token, fail_on, hold
        self.entered = threading.Event()
        self.batches: list[list[Instance]] = []

    def predict(self, instances: list[Instance]) -> list[Prediction]:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        if self.fail_on is not None and any(self.fail_on in i.notes for i in instances):
            raise ValueError(f"cannot tokenise {[(i.notes, i.child_name) for i in instances]}")
        self.batches.append(list(instances))
        longest = max(min(self.max_length, len(i.notes) // 4 + 12) for i in instances)
        time.sleep(self.seconds_per_token * longest * len(instances))
        return [
            Prediction("communication", "Communication", "Listening", len(i.notes), "Birth to three", 0.5, 0.5)
            for i in instances
        ]


@contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` on a free loopback port, as `python -m obs_platform.serving` runs it; yields the URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def server_log() -> Iterator[io.StringIO]:
    """The endpoint process's logging configuration (`log_config`) for the duration, written to a buffer instead
    of stderr; the test process's own logging is restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    config = log_config()
    config["handlers"]["stderr"]["stream"] = buffer
    logging.config.dictConfig(config)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


class CountingTransport(HttpTransport):
    """The client's HTTP transport, counting the statuses it met (429s retried included) and timeouts."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()

    def predict(self, instances: list[dict[str, Any]], ticket: str | None = None) -> dict[str, Any]:
        try:
            answer = super().predict(instances, ticket)
        except RetryableStatus as refused:
            self._count(refused.status)
            raise
        self._count(200)
        return answer

    def _count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

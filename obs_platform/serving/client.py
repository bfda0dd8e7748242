"""`ObservationClassifier`: the facade apps and evaluation use to get suggestions from an endpoint.

One client, one transport per kind of endpoint (the local FastAPI endpoint; Vertex endpoints add theirs). A
request that never reached the endpoint (connection refused, reset before a response) and a 502/503/504 are sent
again after an exponential backoff with jitter, `retries` times at most; a 429 or 503 that says when to come back
(`Retry-After`) is sent again after that long, as often as the call's `patience_seconds` allow, with the ticket
the refusal carried (the local endpoint keeps the request's place in its line with it). A read timeout is
not retried: the endpoint may still be computing that request, and sending it again would only lengthen its
line (the endpoint sheds load with 429 long before a request waits that long). Other 4xx are the caller's mistake
and raised at once. Every failure surfaces as one of this module's exception types.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx

from obs_platform.predictions import Prediction, Suggestion

RETRYABLE_STATUS = {429, 502, 503, 504}
TICKET_HEADER = "Obs-Queue-Ticket"  # as the endpoint's app names it (not imported: the app needs the model stack)


class ClassifierError(Exception):
    """Base of the client's errors."""


class EndpointUnavailable(ClassifierError):
    """The endpoint could not be reached, or kept answering 'try again', after every retry."""


class EndpointTimedOut(EndpointUnavailable):
    """No answer within the request's timeout; not sent again, as the endpoint may still be computing it."""


class RequestRejected(ClassifierError):
    """The endpoint refused the request (4xx): retrying the same request cannot help."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"endpoint answered {status}: {detail}")


@dataclass(frozen=True)
class ClassificationResult(Prediction):
    """A prediction as the endpoint returned it, with the model version that made it."""

    model_version: str | None = None


class Transport(Protocol):
    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        """One predict call; raises httpx errors or RequestRejected/RetryableStatus. A transport whose refusals
        carry a ticket also takes `ticket=` (only such a transport is ever given one)."""
        ...


class RetryableStatus(ClassifierError):
    """A transient refusal; `retry_after`: the seconds the endpoint asked the caller to wait, when it said;
    `ticket`: what to send back with the request to keep its place in the endpoint's line."""

    def __init__(self, status: int, retry_after: float | None = None, ticket: str | None = None):
        self.status, self.retry_after, self.ticket = status, retry_after, ticket
        super().__init__(f"endpoint answered {status}")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds: delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment - (time.time() if now is None else now))


class HttpTransport:
    """The local endpoint (and anything else speaking its `/v1/predict` shape over HTTP). A request may take
    `timeout` seconds plus `seconds_per_instance` for each observation it carries: a batch of 64 needs longer
    than one observation, the more so on a busy machine."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, seconds_per_instance: float = 0.5):
        self.timeout, self.seconds_per_instance = timeout, seconds_per_instance
        self._client = httpx.Client(
            base_url=url.rstrip("/"), timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def timeout_for(self, count: int) -> httpx.Timeout:
        return httpx.Timeout(self.timeout + self.seconds_per_instance * count, connect=min(self.timeout, 10.0))

    def predict(self, instances: list[dict[str, Any]], ticket: str | None = None) -> dict[str, Any]:
        response = self._client.post(
            "/v1/predict",
            json={"instances": instances},
            timeout=self.timeout_for(len(instances)),
            headers={TICKET_HEADER: ticket} if ticket else None,
        )
        return _answer(response)

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        return _answer(self._client.post("/v1/feedback", json=body, timeout=self.timeout_for(1)))


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The endpoint's JSON answer; a status worth asking again for as `RetryableStatus`, any other 4xx/5xx as
    `RequestRejected` with the endpoint's message."""
    if response.status_code in RETRYABLE_STATUS:
        raise RetryableStatus(
            response.status_code,
            retry_after_seconds(response.headers.get("retry-after")),
            response.headers.get(TICKET_HEADER),
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise RequestRejected(response.status_code, detail)
    return response.json()


class ObservationClassifier:
    def __init__(
        self,
        transport: Transport,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        patience_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.transport = transport
        self.retries = retries  # sends after a failure to connect or a 5xx that did not say when to come back
        self.backoff_seconds = backoff_seconds
        self.patience_seconds = patience_seconds  # the most one call spends waiting before sending again
        self.sleep = sleep

    @classmethod
    def for_local_endpoint(cls, url: str, token: str, **options: Any) -> ObservationClassifier:
        return cls(HttpTransport(url, token), **options)

    def classify(
        self,
        notes: str,
        image_uri: str | None = None,
        child_age_months: float | None = None,
        child_name: str | None = None,
        observation_date: dt.date | None = None,
    ) -> ClassificationResult:
        item = {"notes": notes, "image_uri": image_uri, "child_age_months": child_age_months, "child_name": child_name}
        return self.classify_batch([{**item, "observation_date": observation_date}])[0]

    def classify_batch(self, items: Sequence[dict[str, Any]]) -> list[ClassificationResult]:
        """`items`: the fields of `/v1/predict`'s instances (a date as a `datetime.date` or an ISO string)."""
        instances = [
            {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in item.items() if v is not None}
            for item in items
        ]
        body = self._with_retries(instances)
        version = body.get("model_version")
        return [
            ClassificationResult(**{**p, "top_k": [Suggestion(**s) for s in p.get("top_k", [])]}, model_version=version)
            for p in body["predictions"]
        ]

    def feedback(
        self,
        result: ClassificationResult,
        notes: str,
        choice: Literal["accepted", "corrected", "none_of_these"],
        attribute_id: int | None = None,
        level: str | None = None,
        child_age_months: float | None = None,
        child_name: str | None = None,
        observation_date: dt.date | None = None,
    ) -> dict[str, Any]:
        """An educator's verdict on `result` (what `classify` returned for `notes`): the suggestion accepted (the
        first, or `attribute_id` among the top-k), another attribute chosen (`corrected`), or `none_of_these`.
        The local endpoint records it and publishes it as training data; RequestRejected for an unknown or
        already answered prediction, or a label outside the taxonomy."""
        if not isinstance(self.transport, HttpTransport):
            raise ClassifierError("feedback is recorded by the local endpoint: this client's transport has no route")
        body = {
            "prediction_id": result.prediction_id,
            "model_version": result.model_version,
            "notes": notes,
            "child_age_months": child_age_months,
            "child_name": child_name,
            "observation_date": None if observation_date is None else observation_date.isoformat(),
            "choice": choice,
            "attribute_id": attribute_id,
            "level": level,
        }
        return self.transport.feedback({key: value for key, value in body.items() if value is not None})

    def _with_retries(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        failures, waited, attempts, ticket = 0, 0.0, 0, None
        while True:
            attempts += 1
            try:
                return self.transport.predict(instances, ticket=ticket) if ticket else self.transport.predict(instances)
            except httpx.ReadTimeout as exc:
                raise EndpointTimedOut(
                    f"no answer from the endpoint within the timeout ({exc}); not sent again, "
                    "as it may still be computing the request"
                ) from exc
            except (httpx.TransportError, RetryableStatus) as exc:
                told = exc.retry_after if isinstance(exc, RetryableStatus) else None
                ticket = exc.ticket if isinstance(exc, RetryableStatus) else None
                if told is None:
                    failures += 1
                    # Jittered: callers that failed together do not come back together.
                    wait = self.backoff_seconds * 2 ** (failures - 1) * random.uniform(0.5, 1.0)
                else:
                    wait = told * random.uniform(1.0, 1.25)
                if failures > self.retries or waited + wait > self.patience_seconds:
                    raise EndpointUnavailable(f"endpoint unavailable after {attempts} attempts: {exc}") from exc
                self.sleep(wait)
                waited += wait

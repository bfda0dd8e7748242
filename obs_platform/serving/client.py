"""`ObservationClassifier`: the facade apps and evaluation use to get suggestions from an endpoint.

One client, one transport per kind of endpoint (the local FastAPI endpoint now; Vertex endpoints add theirs).
Transient failures (connection errors, 429, 503) are retried with exponential backoff; other 4xx are the
caller's mistake and raised at once. Every failure surfaces as one of this module's exception types.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from obs_platform.serving.results import Prediction, Suggestion

RETRYABLE_STATUS = {429, 502, 503, 504}


class ClassifierError(Exception):
    """Base of the client's errors."""


class EndpointUnavailable(ClassifierError):
    """The endpoint could not be reached, or kept answering 'try again', after every retry."""


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
        """One predict call; raises httpx errors or RequestRejected/RetryableStatus."""
        ...


class RetryableStatus(ClassifierError):
    def __init__(self, status: int):
        self.status = status
        super().__init__(f"endpoint answered {status}")


class HttpTransport:
    """The local endpoint (and anything else speaking its `/v1/predict` shape over HTTP)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        response = self._client.post("/v1/predict", json={"instances": instances})
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableStatus(response.status_code)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise RequestRejected(response.status_code, detail)
        return response.json()


class ObservationClassifier:
    def __init__(self, transport: Transport, retries: int = 3, backoff_seconds: float = 0.5):
        self.transport = transport
        self.retries = retries
        self.backoff_seconds = backoff_seconds

    @classmethod
    def for_local_endpoint(cls, url: str, token: str, **options: Any) -> ObservationClassifier:
        return cls(HttpTransport(url, token), **options)

    def classify(
        self,
        notes: str,
        image_uri: str | None = None,
        child_age_months: float | None = None,
        child_name: str | None = None,
    ) -> ClassificationResult:
        return self.classify_batch([{"notes": notes, "image_uri": image_uri, "child_age_months": child_age_months,
                                     "child_name": child_name}])[0]  # fmt: skip

    def classify_batch(self, items: Sequence[dict[str, Any]]) -> list[ClassificationResult]:
        instances = [{k: v for k, v in item.items() if v is not None} for item in items]
        body = self._with_retries(instances)
        version = body.get("model_version")
        return [
            ClassificationResult(**{**p, "top_k": [Suggestion(**s) for s in p.get("top_k", [])]}, model_version=version)
            for p in body["predictions"]
        ]

    def _with_retries(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return self.transport.predict(instances)
            except (httpx.TransportError, RetryableStatus) as exc:
                last = exc
                if attempt < self.retries:
                    time.sleep(self.backoff_seconds * 2**attempt)
        raise EndpointUnavailable(f"endpoint unavailable after {self.retries + 1} attempts: {last}") from last

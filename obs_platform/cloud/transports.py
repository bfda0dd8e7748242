"""The client's transports for models served by Vertex AI, so `ObservationClassifier` answers the same
`ClassificationResult` whatever serves the model:

- `VertexEndpointTransport`: a registered model deployed to a Vertex endpoint (`VertexModelDeployer`), which runs
  the project's serving app: Vertex's predict shape is the app's, so predictions come back as the app wrote them.
- `GeminiTransport`: a tuned Gemini model on the endpoint its tuning job deployed it to. There is no app of ours in
  front of it, so the transport does what the app's predictor does: it redacts the notes, asks the model as the
  tuning data did (same system instruction, same prompt), and reads the answer back into a label of the taxonomy.

Both raise what the client's retry loop expects: an unreachable Vertex as an httpx transport error, and a status
worth asking again for (timeout, quota, server error) as `RetryableStatus`, both retried; any other refusal as
`RequestRejected`, at once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httpx
from trainer.answers import LabelSpace

from obs_platform.cloud.vertex import TRANSIENT_HTTP_STATUSES, VertexSettings, unreachable_errors
from obs_platform.data.formats import RequestTexts, gemini_user_turn, system_instruction
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.answers import read_prediction, taxonomy_label_space
from obs_platform.serving.client import RequestRejected, RetryableStatus
from obs_platform.taxonomy import Taxonomy

if TYPE_CHECKING:
    from google import genai
    from google.cloud.aiplatform_v1 import PredictionServiceClient
    from google.genai import types

# The answer's probability when Vertex reports no log-probabilities for it: the greedy answer counts as certain.
UNREPORTED_PROBABILITY = 1.0
UNPROCESSABLE = 422  # the local app's status for an instance it cannot read


class VertexEndpointTransport:
    """A Vertex endpoint serving the project's app: `instances` in, the app's predictions out."""

    def __init__(self, settings: VertexSettings, endpoint_name: str, client: PredictionServiceClient | None = None):
        self.settings = settings
        self.endpoint_name = endpoint_name
        self._client = client

    @cached_property
    def client(self) -> PredictionServiceClient:
        return self._client or self.settings.prediction_service_client()

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud.aiplatform_v1 import PredictResponse
        from google.protobuf import json_format

        with _classifier_errors(self.endpoint_name, GoogleAPICallError):
            response = self.client.predict(
                endpoint=self.endpoint_name, instances=instances, timeout=self.settings.request_timeout_s
            )
        predictions = json_format.MessageToDict(PredictResponse.pb(response)).get("predictions", [])
        # The version the app would name is the registry's: the Model's display name, as VertexModelDeployer uploads.
        version = response.model_display_name or response.deployed_model_id
        return {"predictions": [_with_integer_ids(p) for p in predictions], "model_version": version}


class GeminiTransport:
    """A tuned Gemini model, asked one observation at a time (Gemini answers one conversation per request).

    The answer is read as every generative model's is (`obs_platform.serving.answers`): valid, repaired to the
    nearest label, or an `invalid` prediction with the reason, never an error. The confidence is the answer's
    probability (as the local generative predictor reports it), from the mean token log-probability Vertex reports
    with a candidate; `model_version` is the tuned model's endpoint, which is what the registry records for it.
    """

    def __init__(
        self,
        settings: VertexSettings,
        endpoint: str,
        taxonomy: Taxonomy,
        roster: Roster | None = None,
        client: genai.Client | None = None,
    ):
        self.settings = settings
        self.endpoint = endpoint
        self.taxonomy = taxonomy
        self.texts = RequestTexts(roster)
        self.instruction = system_instruction(taxonomy)
        self.space = taxonomy_label_space(taxonomy)
        self._client = client

    @cached_property
    def client(self) -> genai.Client:
        return self._client or self.settings.genai_client()

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        read = [_instance(item) for item in instances]  # all checked before the first (billed) request
        prompts = self.texts(read)
        predictions = [
            self._prediction(self._generate(prompt, instance.image_uri)) for prompt, instance in zip(prompts, read)
        ]
        return {"predictions": [asdict(p) for p in predictions], "model_version": self.endpoint}

    def _generate(self, prompt: str, image_uri: str | None) -> types.GenerateContentResponse:
        from google.genai import errors, types

        config = types.GenerateContentConfig(
            system_instruction=self.instruction, temperature=0, response_mime_type="application/json"
        )
        turn = gemini_user_turn(prompt, [image_uri] if image_uri else [])
        with _classifier_errors(self.endpoint, errors.APIError):
            return self.client.models.generate_content(model=self.endpoint, contents=[turn], config=config)

    def _prediction(self, response: types.GenerateContentResponse) -> Prediction:
        if not response.candidates:
            reason = response.prompt_feedback.block_reason if response.prompt_feedback else None
            return Prediction.invalid(f"Gemini gave no answer (prompt blocked: {reason})")
        candidate = response.candidates[0]
        tokens = response.usage_metadata.candidates_token_count if response.usage_metadata else None
        return gemini_prediction(
            response.text,
            candidate.avg_logprobs,
            tokens,
            f"finish reason: {candidate.finish_reason}",
            self.space,
            self.taxonomy,
        )


def gemini_prediction(
    text: str | None,
    mean_logprob: float | None,
    answer_tokens: int | None,
    why_no_text: str,
    space: LabelSpace,
    taxonomy: Taxonomy,
) -> Prediction:
    """A Gemini answer (online or from a batch job) as a prediction: read against the label space (valid, repaired
    or invalid, never an error), its confidence the answer's probability."""
    if not text:
        return Prediction.invalid(f"Gemini gave no answer ({why_no_text})")
    return read_prediction(text, space, taxonomy, _answer_probability(mean_logprob, answer_tokens))


@contextmanager
def _classifier_errors(endpoint: str, api_error: type[Exception]) -> Iterator[None]:
    """Vertex's errors as the client's: unreachable → an httpx transport error and 408, 429 or a server error →
    RetryableStatus (the client retries both); any other API error → RequestRejected. `api_error` is the SDK's
    error class (both SDKs keep the HTTP status in `code`)."""
    try:
        yield
    except httpx.TransportError:
        raise
    except unreachable_errors() as exc:
        raise httpx.ConnectError(f"cannot reach Vertex AI endpoint {endpoint}: {exc}") from exc
    except api_error as exc:
        status = getattr(exc, "code", None)
        if status in TRANSIENT_HTTP_STATUSES:
            raise RetryableStatus(status) from exc
        raise RequestRejected(status or 0, getattr(exc, "message", None) or str(exc)) from exc


def _instance(item: dict[str, Any]) -> Instance:
    """A request instance as the app would accept it; RequestRejected for one it would refuse."""
    try:
        day = item.get("observation_date")
        instance = Instance(**{**item, "observation_date": dt.date.fromisoformat(str(day)) if day else None})
    except (TypeError, ValueError) as exc:
        raise RequestRejected(UNPROCESSABLE, f"not an observation instance: {exc}") from None
    if not isinstance(instance.notes, str) or not instance.notes.strip():
        raise RequestRejected(UNPROCESSABLE, "notes are empty or only white space")
    return instance


def _answer_probability(mean_logprob: float | None, tokens: int | None) -> float:
    """The probability of the whole answer, the product of its tokens' probabilities: the mean log-probability
    times the number of answer tokens, exponentiated."""
    if mean_logprob is None or not tokens:
        return UNREPORTED_PROBABILITY
    return math.exp(mean_logprob * tokens)


def _with_integer_ids(prediction: dict[str, Any]) -> dict[str, Any]:
    """A prediction with its ids as the app wrote them: a protobuf Struct holds every number as a double."""
    return {
        **prediction,
        "attribute_id": int(prediction["attribute_id"]),
        "tags": [int(tag) for tag in prediction.get("tags", [])],
        "top_k": [{**s, "attribute_id": int(s["attribute_id"])} for s in prediction.get("top_k", [])],
    }

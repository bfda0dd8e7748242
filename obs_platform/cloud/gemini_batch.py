"""A tuned Gemini asked many observations at once: a Vertex AI batch prediction job (google-genai's batches API).

Online, a tuned Gemini answers one conversation per request, billed at the full price; a batch job reads every
request from one JSONL file in the bucket, answers them within hours at half the price, and writes the answers in
Vertex's output layout: `<output prefix>/prediction-model-<time>/predictions.jsonl`, one line per request holding
the request as sent, the `response`, and a `status` that is not empty when that request failed.

Each request is what the tuning lines taught and what `GeminiTransport` sends online: the same system instruction,
the same user turn, the notes redacted with the same roster. Answers come back in no promised order, so each is
matched to its observation by the text of the user turn it answers (identical notes get identical answers). An
answer is read as every generative model's is: valid, repaired or invalid; a request with no usable answer (it
failed, its line is unreadable or missing) is an `invalid` prediction, which evaluation counts as wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from trainer.answers import LabelSpace

from obs_platform.cloud.costs import token_count
from obs_platform.cloud.transports import gemini_prediction
from obs_platform.cloud.vertex import (
    VertexSettings,
    genai_job_status,
    require_job_name,
    require_succeeded,
    translated_errors,
)
from obs_platform.data.formats import RequestTexts, gemini_user_turn, system_instruction
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.answers import taxonomy_label_space
from obs_platform.taxonomy import Taxonomy
from obs_platform.training.backend import JobError, JobStatus, ModelArtifact

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

COLLECTION = "batchPredictionJobs"
REQUESTS_FILE = "requests.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"  # the name Vertex gives the answers in each output folder
# What one answer costs in tokens before any was read: the JSON answer of a typical label, with a secondary tag.
ESTIMATED_ANSWER_TOKENS = 45


@dataclass(frozen=True)
class BatchRequests:
    """The request file of a batch job, and for each observation (in order) the key its answer is found by."""

    jsonl: bytes
    keys: tuple[str, ...]

    @property
    def estimated_input_tokens(self) -> int:
        return token_count(self.jsonl.decode())

    @property
    def estimated_output_tokens(self) -> int:
        return ESTIMATED_ANSWER_TOKENS * len(self.keys)


@dataclass(frozen=True)
class BatchAnswers:
    """What a batch job answered, in the order of its requests, and the tokens Vertex reported billing."""

    predictions: tuple[Prediction, ...]
    input_tokens: int
    output_tokens: int
    failed: int  # requests Vertex reports as failed (a status instead of a response)
    unanswered: int  # requests with no readable line in the output

    def rates(self) -> dict[str, float]:
        """The share of answers read as each status (`ok`, `repaired`, `invalid`)."""
        count = max(len(self.predictions), 1)
        statuses = [p.status for p in self.predictions]
        return {f"{status}_rate": round(statuses.count(status) / count, 4) for status in ("ok", "repaired", "invalid")}


def batch_requests(instances: Sequence[Instance], taxonomy: Taxonomy, roster: Roster | None) -> BatchRequests:
    """One request line per instance, as the tuned model was taught (and is asked online)."""
    instruction = {"parts": [{"text": system_instruction(taxonomy)}]}
    lines, keys = [], []
    for prompt, instance in zip(RequestTexts(roster)(instances), instances):
        request = {
            "contents": [gemini_user_turn(prompt, [instance.image_uri] if instance.image_uri else [])],
            "systemInstruction": instruction,
            "generationConfig": {"temperature": 0, "responseMimeType": "application/json"},
        }
        lines.append(json.dumps({"request": request}, ensure_ascii=False))
        keys.append(request_key(request))
    return BatchRequests(("\n".join(lines) + "\n").encode(), tuple(keys))


def submitted_keys(requests_jsonl: bytes) -> tuple[str, ...]:
    """The keys of a request file as it was submitted: read back rather than built again, which a roster grown
    since (other redaction, other texts) would change."""
    return tuple(request_key(json.loads(line)["request"]) for line in requests_jsonl.splitlines() if line.strip())


def request_key(request: Mapping[str, Any]) -> str:
    """What names a request in the output: the text of its user turn (the redacted notes and the age)."""
    turn = request["contents"][-1]
    text = "".join(part.get("text", "") for part in turn.get("parts", []) if isinstance(part, Mapping))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_batch_answers(output_lines: Iterable[bytes | str], keys: Sequence[str], taxonomy: Taxonomy) -> BatchAnswers:
    """The predictions for `keys` (a `BatchRequests`' keys) from the job's output lines; never raises on an answer."""
    space = taxonomy_label_space(taxonomy)
    found: dict[str, Prediction] = {}
    input_tokens = output_tokens = failed = 0
    for line in output_lines:
        try:
            record = json.loads(line)
            key = request_key(record["request"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue  # an unreadable line answers nothing: its request is counted as unanswered
        if record.get("status") or not isinstance(record.get("response"), Mapping):
            failed += 1
            found[key] = Prediction.invalid(f"the batch job could not answer: {record.get('status') or 'no response'}")
            continue
        response = record["response"]
        usage = response.get("usageMetadata") or {}
        input_tokens += int(usage.get("promptTokenCount") or 0)
        output_tokens += int(usage.get("candidatesTokenCount") or 0)
        found[key] = _prediction(response, space, taxonomy)
    predictions = tuple(found.get(key) or Prediction.invalid("no answer in the batch job's output") for key in keys)
    return BatchAnswers(predictions, input_tokens, output_tokens, failed, sum(key not in found for key in keys))


def _prediction(response: Mapping[str, Any], space: LabelSpace, taxonomy: Taxonomy) -> Prediction:
    candidates = response.get("candidates") or []
    if not candidates:
        reason = (response.get("promptFeedback") or {}).get("blockReason")
        return Prediction.invalid(f"Gemini gave no answer (prompt blocked: {reason})")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text", "") for part in parts if isinstance(part, Mapping))
    tokens = (response.get("usageMetadata") or {}).get("candidatesTokenCount")
    return gemini_prediction(
        text,
        candidate.get("avgLogprobs"),
        int(tokens) if tokens else None,
        f"finish reason: {candidate.get('finishReason')}",
        space,
        taxonomy,
    )


class GeminiBatchBackend:
    """Batch prediction jobs of a tuned Gemini: submitted here, then polled by the job-status sensor through the
    backend protocol (status, result, cancel) like a tuning job. A job's result is its output folder, no model."""

    name = "vertex-gemini-batch"

    def __init__(self, settings: VertexSettings, client: genai.Client | None = None):
        self.settings = settings
        self._client = client

    @cached_property
    def client(self) -> genai.Client:
        return self._client or self.settings.genai_client()

    def submit(self, model: str, requests_uri: str, output_uri: str, display_name: str, labels: dict[str, str]) -> str:
        """Start a batch job of `model` (a tuned model's resource name) on the request file; returns its name."""
        from google.genai import errors, types

        config = types.CreateBatchJobConfig(
            display_name=display_name,
            dest=output_uri,
            # The config has no labels field; the REST resource has (what finds the job on the bill).
            http_options=types.HttpOptions(extra_body={"labels": labels}),
        )
        with translated_errors(f"submit a Gemini batch job on {requests_uri}", errors.APIError):
            job = self.client.batches.create(model=model, src=requests_uri, config=config)
        if not job.name:
            raise JobError("Vertex AI created a batch prediction job without a name")
        return job.name

    def status(self, job_id: str) -> JobStatus:
        return genai_job_status(self._job(job_id))

    def result(self, job_id: str) -> ModelArtifact:
        job = self._job(job_id)
        require_succeeded(job_id, genai_job_status(job))
        folder = (job.output_info.gcs_output_directory if job.output_info else None) or (
            job.dest.gcs_uri if job.dest else None
        )
        if not folder:
            raise JobError(f"batch job {job_id} succeeded but names no output folder")
        stats = job.completion_stats.model_dump(exclude_none=True) if job.completion_stats else {}
        manifest = {"mode": "batch_prediction", "model": job.model, "output": folder, "metrics": stats}
        return ModelArtifact(uri=folder, manifest=manifest, managed=True)

    def cancel(self, job_id: str) -> None:
        from google.genai import errors

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"cancel batch job {job_id}", errors.APIError):
            self.client.batches.cancel(name=job_id)

    def _job(self, job_id: str) -> types.BatchJob:
        from google.genai import errors

        require_job_name(job_id, COLLECTION)
        with translated_errors(f"read batch job {job_id}", errors.APIError):
            return self.client.batches.get(name=job_id)

"""A tuned Gemini's batch prediction job through the real google-genai SDK over HTTP to the loopback fake of Vertex,
with the requests and answers in the GCS emulator: what is sent, how states and results are read, and how the
answers (some malformed, some failed) come back as predictions."""

from __future__ import annotations

import json

import pytest

from obs_platform.cloud.gemini_batch import (
    PREDICTIONS_FILE,
    GeminiBatchBackend,
    batch_requests,
    read_batch_answers,
    submitted_keys,
)
from obs_platform.cloud.vertex import VertexSettings
from obs_platform.data.formats import system_instruction
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Instance
from obs_platform.storage import storage_from_uri
from obs_platform.training.backend import JobError, JobState

from .fake_vertex import BATCH_FAILED_EVERY, BATCH_MALFORMED_EVERY, FakeVertex

pytest.importorskip("google.genai")
pytest.importorskip("google.cloud.storage")

NOTES = [f"Amara counted {n} ducks on the pond and said {'quack ' * n}" for n in range(1, 27)]


@pytest.fixture
def backend(fake_vertex: FakeVertex, gcs_emulator: str, eyfs) -> GeminiBatchBackend:
    fake_vertex.taxonomy = eyfs
    settings = VertexSettings(
        project="obs-proj",
        region="europe-west2",
        staging_bucket=f"gs://{gcs_emulator}/vertex",
        trainer_image_uri="image",
        api_endpoint=fake_vertex.url,
    )
    return GeminiBatchBackend(settings)


def submitted(backend: GeminiBatchBackend, fake: FakeVertex, folder: str, eyfs) -> tuple[str, object]:
    requests = batch_requests([Instance(n, 40.0, "Amara") for n in NOTES], eyfs, Roster.from_names(["Amara Okafor"]))
    storage_from_uri(folder).write_bytes("requests.jsonl", requests.jsonl)
    model = fake.tuned_endpoint().replace("/endpoints/", "/models/") + "@1"
    job = backend.submit(model, f"{folder}/requests.jsonl", f"{folder}/output", "obs-eval", {"dataset_version": "d1"})
    return job, requests


def test_requests_are_what_the_tuned_model_was_taught(eyfs):
    requests = batch_requests([Instance("Amara poured water.", 40.0, "Amara")], eyfs, Roster())
    [line] = [json.loads(line) for line in requests.jsonl.splitlines()]
    request = line["request"]
    assert request["systemInstruction"]["parts"] == [{"text": system_instruction(eyfs)}]
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "Observation: [CHILD] poured water.\nChild's age: 40 months"}]}
    ]
    assert request["generationConfig"] == {"temperature": 0, "responseMimeType": "application/json"}
    assert requests.estimated_input_tokens > 0 and requests.estimated_output_tokens > 0
    assert submitted_keys(requests.jsonl) == requests.keys  # what evaluation reads back from the bucket


def test_a_batch_job_runs_to_answers_read_against_the_taxonomy(backend, fake_vertex, gcs_emulator, tmp_path, eyfs):
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/batch"
    job, requests = submitted(backend, fake_vertex, folder, eyfs)
    [created] = fake_vertex.created("batchPredictionJobs")
    assert created["inputConfig"] == {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"{folder}/requests.jsonl"]}}
    assert created["outputConfig"]["gcsDestination"] == {"outputUriPrefix": f"{folder}/output"}
    assert created["labels"] == {"dataset_version": "d1"} and "Amara" not in json.dumps(created)
    assert [backend.status(job).state for _ in range(3)] == [JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED]

    result = backend.result(job)
    assert result.uri.startswith(f"{folder}/output/prediction-model-") and result.managed
    lines = storage_from_uri(result.uri).read_bytes(PREDICTIONS_FILE).splitlines()
    answers = read_batch_answers(reversed(lines), requests.keys, eyfs)  # the output's order is no promise

    failed = [n for n in range(len(NOTES)) if n % BATCH_FAILED_EVERY == BATCH_FAILED_EVERY - 1]
    malformed = [n for n in range(len(NOTES)) if n % BATCH_MALFORMED_EVERY == BATCH_MALFORMED_EVERY - 1]
    statuses = [p.status for p in answers.predictions]
    assert answers.failed == len(failed) == 2 and answers.unanswered == 0
    for number in failed:
        assert statuses[number] == "invalid" and "could not answer" in answers.predictions[number].problem
    # Malformed in turn: cut off before its attribute, misspelt (repaired), prose naming no label.
    assert [statuses[n] for n in malformed] == ["invalid", "repaired", "invalid", "invalid", "repaired"]
    good = [n for n in range(len(NOTES)) if n not in failed + malformed]
    assert all(statuses[n] == "ok" and answers.predictions[n].attribute for n in good)
    assert answers.rates()["invalid_rate"] == round(statuses.count("invalid") / len(NOTES), 4)
    assert answers.input_tokens > 0 and answers.output_tokens > 0


def test_an_answer_missing_or_unreadable_counts_as_unanswered(eyfs):
    requests = batch_requests([Instance("Sang a song."), Instance("Hopped on one foot.")], eyfs, None)
    first = json.loads(requests.jsonl.splitlines()[0])["request"]
    answer = '{"domain": "physical_development", "attribute": "Gross Motor Skills", "level": "Reception"}'
    lines = [
        b"{not json",
        json.dumps(
            {"status": "", "request": first, "response": {"candidates": [{"content": {"parts": [{"text": answer}]}}]}}
        ),
    ]
    answers = read_batch_answers(lines, requests.keys, eyfs)
    assert [p.status for p in answers.predictions] == ["ok", "invalid"] and answers.unanswered == 1
    assert "no answer in the batch job's output" in answers.predictions[1].problem


def test_refusals_and_cancel(backend, fake_vertex, gcs_emulator, tmp_path, eyfs):
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/batch"
    with pytest.raises(JobError, match="does not exist"):
        backend.submit("projects/p/locations/l/models/1@1", f"{folder}/none.jsonl", f"{folder}/out", "x", {})
    with pytest.raises(JobError, match="not a Vertex AI batchPredictionJobs name"):
        backend.status("projects/p/locations/l/tuningJobs/1")
    job, _ = submitted(backend, fake_vertex, folder, eyfs)
    backend.cancel(job)
    assert [backend.status(job).state for _ in range(2)] == [JobState.RUNNING, JobState.CANCELLED]
    with pytest.raises(JobError, match="CANCELLED"):
        backend.result(job)

"""Feedback on suggestions: `POST /v1/feedback` through the client, its 4xx rules, the landing exports it becomes
(read back by the data assets' own reader and canonicalisation, labelled as the educator chose), and nothing lost
when the endpoint is killed mid-write."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.data.canonical import canonicalise
from obs_platform.data.formats import RequestTexts
from obs_platform.data.raw import parse_export
from obs_platform.predictions import Instance, Prediction, Suggestion
from obs_platform.serving.app import create_app
from obs_platform.serving.client import ClassifierError, ObservationClassifier, RequestRejected
from obs_platform.serving.feedback import EXPORT_FOLDER, FEEDBACK_FOLDER, Feedback, FeedbackStore
from obs_platform.serving.monitor import feedback_table
from obs_platform.serving.prediction_log import PredictionLog
from obs_platform.storage import LocalStorage

from .endpoint_harness import served

TOKEN = "t0ken"
NOTES = ["Counted five ducks on the pond.", "Sang the whole of Twinkle Twinkle.", "Hopped on one foot to the gate."]


class SuggestingPredictor:
    """Suggests the taxonomy's first three attributes, in that order, at their first level."""

    runtime = "fake"

    def __init__(self, taxonomy):
        self.taxonomy, self.texts = taxonomy, RequestTexts(None)

    def predict(self, instances: list[Instance]) -> list[Prediction]:
        attributes = self.taxonomy.attributes[:3]
        suggestions = [Suggestion.of(self.taxonomy, a.id, p) for a, p in zip(attributes, (0.6, 0.3, 0.1))]
        return [Prediction.ranked(suggestions, attributes[0].label_levels[0].title, 0.9) for _ in instances]


@pytest.fixture
def endpoint(tmp_path, eyfs):
    store = FeedbackStore(tmp_path, eyfs, records_per_file=2)
    log = PredictionLog(tmp_path / "serving" / "predictions")
    app = create_app(
        SuggestingPredictor(eyfs), {"model_version": "m/v1"}, TOKEN, prediction_log=log, feedback_store=store
    )
    with served(app) as url:
        yield ObservationClassifier.for_local_endpoint(url, TOKEN), store


def exported_rows(root, eyfs):
    files = sorted((root / EXPORT_FOLDER).glob("*.jsonl"))
    raw = [parse_export(f.name, f.read_bytes()) for f in files]
    return files, canonicalise(pd.concat(raw, ignore_index=True), eyfs)


def test_feedback_becomes_training_data_labelled_as_the_educator_chose(endpoint, tmp_path, eyfs, monkeypatch):
    client, store = endpoint
    results = client.classify_batch([{"notes": n, "child_age_months": 40, "child_name": "Amara"} for n in NOTES])
    corrected_to = eyfs.attributes[5]
    assert client.feedback(results[0], NOTES[0], "accepted")["attribute_id"] == eyfs.attributes[0].id
    answer = client.feedback(
        results[1],
        NOTES[1],
        "corrected",
        attribute_id=corrected_to.id,
        level=corrected_to.label_levels[0].title,
        child_age_months=40,
        observation_date=dt.date(2026, 6, 12),
    )
    assert answer["attribute_id"] == corrected_to.id
    # Two records waiting: published as one export of the raw shape, which the data assets read as they are.
    [export], result = exported_rows(tmp_path, eyfs)
    assert result.quarantined.empty and len(result.canonical) == 2
    labels = dict(zip(result.canonical["observation_id"], result.canonical["attribute_id"]))
    assert labels == {
        f"fb-{results[0].prediction_id}": eyfs.attributes[0].id,
        f"fb-{results[1].prediction_id}": corrected_to.id,
    }
    client.feedback(results[2], NOTES[2], "none_of_these")
    store.close()
    assert sorted((tmp_path / EXPORT_FOLDER).glob("*.jsonl")) == [export]  # "none of these" is kept out
    first, second = (json.loads(line) for line in export.read_text().splitlines())
    assert second["childAgeMonths"] == 40 and second["observationDate"] == "2026-06-12"  # the note as it was sent
    assert first["observationDate"] == time.strftime("%Y-%m-%d", time.gmtime())  # no date sent: the day it came
    assert store.counts() == {"accepted": 1, "corrected": 1, "none_of_these": 1}
    # Every prediction suggested the same domain first: one row.
    [row] = feedback_table(LocalStorage(tmp_path), eyfs).to_dict("records")
    assert (row["model_version"], row["domain"]) == ("m/v1", eyfs.domain(eyfs.attributes[0].domain_id).key)
    assert (row["feedback"], row["accepted_top1"], row["corrected"], row["none_of_these"]) == (3, 1, 1, 1)
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path))
    printed = CliRunner().invoke(app, ["feedback-stats"]).output
    assert "top1_acceptance" in printed and "0.333" in printed
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "elsewhere"))
    assert "no feedback yet" in CliRunner().invoke(app, ["feedback-stats"]).output


def test_feedback_refusals_are_4xx_with_a_message(endpoint, eyfs):
    client, _ = endpoint
    first, second = client.classify_batch([{"notes": n} for n in NOTES[:2]])

    def refused(result, choice, **fields) -> tuple[int, str]:
        with pytest.raises(RequestRejected) as raised:
            client.feedback(result, NOTES[0], choice, **fields)
        return raised.value.status, str(raised.value.detail)

    unknown = first.__class__(**{**first.__dict__, "prediction_id": "f" * 32})
    assert refused(unknown, "accepted") == (404, "unknown prediction_id: feedback names a prediction's id")
    other_model = first.__class__(**{**first.__dict__, "model_version": "m/v0"})
    assert refused(other_model, "accepted")[0] == 409
    assert refused(first, "corrected") == (422, "corrected: attribute_id (the ELG chosen instead) is required")
    assert refused(first, "accepted", attribute_id=eyfs.attributes[7].id)[1].endswith("not one of the suggestions")
    assert refused(first, "corrected", attribute_id=9999) == (422, "attribute_id 9999 is not in the taxonomy")
    assert refused(first, "corrected", attribute_id=eyfs.attributes[4].id, level="Year 9")[0] == 422
    assert refused(first, "maybe")[0] == 422
    client.feedback(first, NOTES[0], "accepted")
    assert refused(first, "none_of_these") == (409, "this prediction already has feedback")
    stranger = ObservationClassifier.for_local_endpoint(str(client.transport._client.base_url), "wrong")
    with pytest.raises(RequestRejected) as raised:
        stranger.feedback(second, NOTES[1], "accepted")
    assert raised.value.status == 401


def test_feedback_needs_an_endpoint_that_records_it(eyfs):
    app = create_app(SuggestingPredictor(eyfs), {"model_version": "m/v1"}, TOKEN)
    with served(app) as url:
        client = ObservationClassifier.for_local_endpoint(url, TOKEN)
        result = client.classify(NOTES[0])
        with pytest.raises(RequestRejected) as raised:
            client.feedback(result, NOTES[0], "accepted")
    assert raised.value.status == 501
    with pytest.raises(ClassifierError, match="local endpoint"):
        ObservationClassifier(transport=object()).feedback(result, NOTES[0], "accepted")


WRITER = """
import sys, time
from pathlib import Path
from obs_platform.serving.feedback import Feedback, FeedbackStore
from obs_platform.taxonomy import default_taxonomy_path, load_taxonomy

taxonomy = load_taxonomy(default_taxonomy_path())
store = FeedbackStore(Path(sys.argv[1]), taxonomy, records_per_file=7)
attribute = taxonomy.attributes[0]
for n in range(100000):
    store.record(Feedback(f"p{n}", "m/v1", f"note {n}", 40.0, None, "accepted", attribute.id,
                          attribute.label_levels[0].title, time.time()))
    print(f"p{n}", flush=True)  # answered: the endpoint would have replied by now
"""


def test_nothing_answered_is_lost_when_the_writer_is_killed(tmp_path, eyfs):
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    answered = []
    deadline = time.monotonic() + 60
    while len(answered) < 40 and time.monotonic() < deadline:
        answered.append(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait()
    answered += [line.strip() for line in process.stdout.read().splitlines() if line.strip()]
    log = tmp_path / FEEDBACK_FOLDER / "log.jsonl"
    with open(log, "ab") as handle:  # a write cut short by the kill
        handle.write(b'{"prediction_id": "torn", "model_ver')

    store = FeedbackStore(tmp_path, eyfs, records_per_file=7)
    kept = [json.loads(line)["prediction_id"] for line in log.read_text().splitlines()]
    assert set(answered) <= set(kept) and "torn" not in kept and len(answered) >= 40
    attribute = eyfs.attributes[0]
    store.record(
        Feedback(
            "after", "m/v1", "note", None, None, "accepted", attribute.id, attribute.label_levels[0].title, time.time()
        )
    )
    store.close()
    _, result = exported_rows(tmp_path, eyfs)
    published = set(result.canonical["observation_id"])
    assert published == {f"fb-{p}" for p in [*kept, "after"]}  # every record, once, across the exports
    assert not list((tmp_path / EXPORT_FOLDER).glob(".*"))  # no temporary file left in the landing area

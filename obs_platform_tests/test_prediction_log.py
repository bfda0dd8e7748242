"""Every prediction gets an id and is logged append-only, without the note or a name."""

import json

from obs_platform.data.formats import RequestTexts
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Instance
from obs_platform.serving.app import create_app
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.prediction_log import PredictionLog, note_digest

from .endpoint_harness import TimedPredictor, served

TOKEN = "t0ken"


def test_predictions_are_identified_and_logged_without_their_notes(tmp_path):
    predictor = TimedPredictor()
    predictor.texts = RequestTexts(Roster.from_names(["Amara Okafor"]))
    log = PredictionLog(tmp_path / "serving" / "predictions")
    app = create_app(predictor, {"model_version": "m/v3"}, TOKEN, batching=None, prediction_log=log)
    notes = ["Amara poured water into three cups.", "Counted five ducks on the pond with Amara."]
    with served(app) as url:
        client = ObservationClassifier.for_local_endpoint(url, TOKEN)
        first = client.classify_batch([{"notes": n, "child_age_months": 40, "child_name": "Amara"} for n in notes])
        second = client.classify(notes[0], child_age_months=40, child_name="Amara")

    ids = [p.prediction_id for p in (*first, second)]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    [file] = (tmp_path / "serving" / "predictions").iterdir()
    written = file.read_text()
    assert "Amara" not in written and "ducks" not in written  # neither the note nor the name
    lines = [json.loads(line) for line in written.splitlines()]
    assert [line["prediction_id"] for line in lines] == ids
    redacted = predictor.texts([Instance(n, 40, "Amara") for n in notes])
    assert [line["note_sha256"] for line in lines] == [note_digest(t) for t in (*redacted, redacted[0])]
    assert lines[0]["note_sha256"] == lines[2]["note_sha256"]  # the same note, the same digest
    assert all(line["model_version"] == "m/v3" and line["latency_ms"] >= 0 for line in lines)
    assert lines[1]["attribute_id"] == len(notes[1]) and lines[1]["level"] == "Birth to three"

"""The predictor and the HTTP endpoint, on a tiny classifier trained once for the module."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from obs_platform.data.redaction import Roster
from obs_platform.serving.app import MAX_BATCH, create_app
from obs_platform.serving.predictor import ClassifierPredictor, Instance

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def predictor(trained, tiny_bert, eyfs) -> ClassifierPredictor:
    return ClassifierPredictor(trained, eyfs, roster=Roster.from_names(["Amara Okafor"]), base_model=str(tiny_bert))


@pytest.fixture(scope="module")
def client(predictor, tmp_path_factory) -> TestClient:
    root = tmp_path_factory.mktemp("home")
    return TestClient(create_app(predictor, {"model_version": "oss-classifier/v1", "inputs": ["text"]}, TOKEN, root))


def test_predictions_are_valid_taxonomy_labels(predictor, eyfs):
    [prediction] = predictor.predict([Instance("Amara poured water into three cups: 'this one has the most'", 40)])
    attribute = eyfs.attribute(prediction.attribute_id)
    assert prediction.attribute == attribute.name and prediction.domain == eyfs.domain(attribute.domain_id).key
    assert prediction.level in [lvl.title for lvl in eyfs.levels]
    assert 0 < prediction.confidence <= 1 and len(prediction.top_k) == 3
    assert prediction.top_k[0].probability == prediction.confidence
    probabilities = [s.probability for s in prediction.top_k]
    assert probabilities == sorted(probabilities, reverse=True)


def test_a_batch_is_one_pass_with_the_same_answers(predictor):
    notes = ["Built a tall tower", "Sang the whole song", "Counted to ten on the steps"]
    batched = predictor.predict([Instance(n) for n in notes])
    single = [predictor.predict([Instance(n)])[0] for n in notes]
    assert [p.attribute_id for p in batched] == [p.attribute_id for p in single]
    assert all(abs(a.confidence - b.confidence) < 1e-3 for a, b in zip(batched, single))


def test_requests_are_redacted_like_training_data(predictor):
    texts = predictor.texts([Instance("Zeynep and Amara built a den", 30, child_name="Zeynep Kaya")])
    assert texts == ["Observation: [CHILD] and [CHILD_2] built a den\nChild's age: 30 months"]
    dated = predictor.texts([Instance("Built a den", 30, observation_date=dt.date(2026, 6, 12))])
    assert dated == ["Observation: Built a den\nChild's age: 30 months\nObserved on: 2026-06-12"]


def test_predict_endpoint(client):
    response = client.post(
        "/v1/predict", headers=AUTH, json={"instances": [{"notes": "Jumped with two feet", "child_age_months": 30}]}
    )
    assert response.status_code == 200
    dated = {"notes": "Jumped with two feet", "child_age_months": 30, "observation_date": "2026-06-12"}
    assert client.post("/v1/predict", headers=AUTH, json={"instances": [dated]}).status_code == 200
    body = response.json()
    assert body["model_version"] == "oss-classifier/v1"
    assert set(body["predictions"][0]) >= {"domain", "attribute", "level", "confidence", "top_k"}
    assert client.get("/health").json() == {"status": "ok", "model_version": "oss-classifier/v1"}
    assert client.get("/v1/model", headers=AUTH).json()["inputs"] == ["text"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"instances": []}, 422),
        ({"instances": [{"notes": "   "}]}, 422),
        ({"instances": [{"notes": "x" * 5000}]}, 422),
        ({"instances": [{"notes": "ok", "child_age_months": 400}]}, 422),
        ({"instances": [{"notes": "ok", "observation_date": "12/06/2026"}]}, 422),
        ({"instances": [{"notes": "ok", "observation_date": "2999-06-12"}]}, 422),
        ({"instances": [{"notes": "ok", "observation_date": "1999-12-31"}]}, 422),
        ({"instances": [{"notes": "ok", "extra": 1}]}, 422),
        ({"instances": [{"notes": "ok"}] * (MAX_BATCH + 1)}, 422),
        ({"instances": [{"notes": "ok", "image_uri": "file:///etc/passwd"}]}, 422),
        ({"instances": [{"notes": "ok", "image_uri": "/etc/passwd"}]}, 422),
        ({"instances": [{"notes": "ok", "image_uri": "~nosuchuser/a.jpg"}]}, 422),
        ({"notes": "no instances"}, 422),
        ([{"notes": "not an object"}], 422),
    ],
)
def test_bad_requests_are_4xx(client, body, status):
    assert client.post("/v1/predict", headers=AUTH, json=body).status_code == status


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (rb'{"instances": [{"notes": "Sang \ud800 a song"}]}', "surrogate"),
        (rb'{"instances": [{"notes": "Sang", "child_name": "\udc00"}]}', "surrogate"),
        (rb'{"instances": [{"notes": "Sang", "child_age_months": NaN}]}', "not valid JSON"),
        (rb'{"instances": [{"notes": "Sang", "child_age_months": Infinity}]}', "not valid JSON"),
        (rb'{"instances": [{"notes": "Sang", "child_age_months": 1e400}]}', "infinity"),
        (rb'{"instances": [{"notes": "Sang", "image_uri": "/tmp/a\u0000.jpg"}]}', "control character (U+0000)"),
        (rb'{"instances": [{"notes": "Sang\u0007 a song"}]}', "control character (U+0007)"),
        (rb'{"instances": [{"notes": "Sang", "child_name": "Amara\u001b[2J"}]}', "control character (U+001B)"),
        (rb'{"instances": [{"notes": "\u200b\u200b \ufeff"}]}', "zero-width"),
        (b'{"instances": [{"notes": "Sang"}]', "not valid JSON"),
        (b"[" * 2000, "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_malformed_values_are_422_with_a_message(client, raw, problem):
    response = client.post("/v1/predict", headers=AUTH, content=raw)
    assert response.status_code == 422
    assert problem in " ".join(error["msg"] for error in response.json()["detail"])


def test_tabs_and_new_lines_are_accepted_in_notes(client):
    body = {"instances": [{"notes": "Sang a song\n\twith actions\r\n", "child_name": "Amara\tOkafor"}]}
    assert client.post("/v1/predict", headers=AUTH, json=body).status_code == 200


def test_json_is_read_whatever_the_content_type_says(client):
    """curl's `-d` sends `application/x-www-form-urlencoded`: the README's example must work as written."""
    body = b'{"instances": [{"notes": "Counted five ducks", "child_age_months": 40}]}'
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        response = client.post("/v1/predict", headers={**AUTH, **headers}, content=body)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 1


def test_errors_name_the_field_never_the_value(client):
    marker = "Zephyrine"
    bodies = [
        {"instances": [{"notes": marker * 1000}]},
        {"instances": [{"notes": "ok", marker: 1}]},
        {"instances": [{"notes": "ok", "child_age_months": marker}]},
        {"instances": [{"notes": "ok", "image_uri": f"/etc/{marker}"}]},
        {"instances": [{"notes": "ok", "child_name": marker + "\x00"}]},
    ]
    for body in bodies:
        response = client.post("/v1/predict", headers=AUTH, json=body)
        assert response.status_code == 422 and marker not in response.text
        assert all({"loc", "msg"} <= set(error) and "input" not in error for error in response.json()["detail"])
    assert client.post("/v1/predict", headers=AUTH, json=bodies[1]).json()["detail"][0]["loc"] == [
        "instances",
        0,
        "(unexpected field)",
    ]


def test_auth_and_size_limits(client):
    body = {"instances": [{"notes": "ok"}]}
    assert client.post("/v1/predict", json=body).status_code == 401
    assert client.post("/v1/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    huge = b'{"instances": [' + b'{"notes": "ok"},' * 80000 + b'{"notes": "ok"}]}'
    response = client.post("/v1/predict", content=huge, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413
    chunked = client.post("/v1/predict", content=iter([huge[:600_000], huge[600_000:]]), headers=AUTH)
    assert chunked.status_code == 413 and "content-length" not in chunked.request.headers
    assert (
        client.post(
            "/v1/predict", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
        ).status_code
        == 422
    )
    good_image = {"instances": [{"notes": "ok", "image_uri": "gs://bucket/a.jpg"}]}
    assert client.post("/v1/predict", headers=AUTH, json=good_image).status_code == 200


def test_onnx_runtime_gives_the_same_predictions(trained, tiny_bert, eyfs, predictor):
    on_onnx = ClassifierPredictor(
        trained, eyfs, roster=predictor.texts.roster, base_model=str(tiny_bert), runtime="onnx"
    )
    assert on_onnx.forward.model.fused_operators.get("Attention") == 2  # one fused attention kernel per layer
    notes = [Instance("Built a tall tower with the big blocks", 30), Instance("Sang", None), Instance("Counted " * 40)]
    for batch in (notes, notes[:1]):  # padded batches and a single observation
        expected, got = predictor.predict(batch), on_onnx.predict(batch)
        assert [p.attribute_id for p in got] == [p.attribute_id for p in expected]
        assert [p.level for p in got] == [p.level for p in expected]
        assert all(abs(a.confidence - b.confidence) < 1e-4 for a, b in zip(got, expected))


def test_an_unknown_runtime_is_refused(trained, tiny_bert, eyfs):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        ClassifierPredictor(trained, eyfs, base_model=str(tiny_bert), runtime="tensorrt")

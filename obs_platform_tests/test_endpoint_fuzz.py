"""Schemathesis against the endpoint's own OpenAPI schema, in process, on the tiny classifier: requests that fit
the schema and requests that do not, each answered without a 5xx. Beside it, bodies schemathesis cannot send
(any code point, unpaired surrogates escaped, NaN and Infinity, NUL in paths) through Hypothesis directly.

Hypothesis is driven directly from each operation's strategy: schemathesis's fixture-based `parametrize` does
not run under this pytest (it reads a node attribute pytest 9 removed)."""

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from obs_platform.data.redaction import Roster
from obs_platform.serving.app import create_app
from obs_platform.serving.predictor import ClassifierPredictor

TOKEN = "fuzz-token"
EXAMPLES = {"/v1/predict": 100, "/v1/model": 20, "/health": 20}
OPERATIONS = [
    ("POST", "/v1/predict", GenerationMode.POSITIVE),
    ("POST", "/v1/predict", GenerationMode.NEGATIVE),
    ("GET", "/v1/model", GenerationMode.POSITIVE),
    ("GET", "/v1/model", GenerationMode.NEGATIVE),  # only its credentials can be wrong
    ("GET", "/health", GenerationMode.POSITIVE),  # nothing to get wrong
]


@pytest.fixture(scope="module")
def app(trained, tiny_bert, eyfs, tmp_path_factory):
    roster = Roster.from_names(["Amara Okafor"])
    predictor = ClassifierPredictor(trained, eyfs, roster=roster, base_model=str(tiny_bert))
    return create_app(predictor, {"model_version": "v1"}, TOKEN, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_no_request_gets_a_5xx(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[path],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answered_without_a_5xx(case):
        if mode is GenerationMode.POSITIVE:  # the negative cases keep whatever credentials were generated
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        case.validate_response(case.call(), checks=[not_a_server_error])

    answered_without_a_5xx()


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates and controls included
PATHS = st.builds(
    lambda prefix, rest: prefix + rest, st.sampled_from(["", "/", "~", "gs://", "https://", "./"]), ANY_TEXT
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), ANY_TEXT)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=6
)
INSTANCES = st.fixed_dictionaries(
    {"notes": ANY_TEXT | VALUES},
    optional={"child_age_months": st.floats() | VALUES, "child_name": ANY_TEXT | VALUES, "image_uri": PATHS | VALUES},
)
BODIES = st.one_of(st.fixed_dictionaries({"instances": st.lists(INSTANCES, max_size=4)}), VALUES)


def test_arbitrary_json_bodies_get_no_5xx_and_no_echo(app):
    @given(body=BODIES)
    @settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def answered_without_a_5xx(body):
        raw = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()  # \udXXX escapes, NaN, Infinity
        response = client.post("/v1/predict", content=raw, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"])

    with TestClient(app) as client:  # the app's lifespan runs: schemathesis's calls have ended it before
        answered_without_a_5xx()

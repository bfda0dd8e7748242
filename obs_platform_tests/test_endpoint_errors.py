"""No request content in any answer or log line, on any path; the token before the body. Over real HTTP (uvicorn
as the endpoint process runs it, with its logging), on the tiny classifier."""

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from obs_platform.data.redaction import Roster
from obs_platform.serving.app import MAX_BODY_BYTES, create_app
from obs_platform.serving.predictor import ClassifierPredictor, Instance

from .endpoint_harness import served, server_log

TOKEN = "errors-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAME = "Zephyrine Quillfeather"
FAIL = "explode-now"


class FailsOnMarker:
    """The tiny classifier, except that a note holding FAIL raises an error quoting the request, as a library's
    error might: the 500 path."""

    def __init__(self, predictor: ClassifierPredictor):
        self.predictor, self.runtime, self.max_length = predictor, predictor.runtime, predictor.max_length

    def predict(self, instances: list[Instance]) -> list:
        if any(FAIL in i.notes for i in instances):
            raise ValueError(f"cannot read {[(i.notes, i.child_name) for i in instances]}")
        return self.predictor.predict(instances)


@pytest.fixture(scope="module")
def url(trained, tiny_bert, eyfs, tmp_path_factory):
    predictor = ClassifierPredictor(
        trained, eyfs, roster=Roster.from_names(["Amara Okafor"]), base_model=str(tiny_bert)
    )
    app = create_app(FailsOnMarker(predictor), {"model_version": "v1"}, TOKEN, tmp_path_factory.mktemp("home"))
    with served(app) as address:
        yield address


def exchange(url: str, data: bytes) -> bytes:
    """Raw bytes to the server and its first response back (headers and a Content-Length body), without
    waiting for the connection to close."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_the_token_is_checked_before_the_body_is_read(url):
    """A chunked upload without the token is refused before any of its body is sent."""
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(url, head).startswith(b"HTTP/1.1 401")


def test_a_chunked_body_cannot_pass_the_size_limit(url):
    chunk = b'{"notes": "ok"},' * 6250  # 100,000 bytes
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 1))
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
    response = exchange(url, head % TOKEN.encode() + body)
    assert response.startswith(b"HTTP/1.1 413") and b'"notes"' not in response


def test_no_request_content_in_any_answer_or_log_line(url):
    name_json = NAME.encode()
    bad_bodies = [
        {"instances": [{"notes": "Sang a song", "child_name": NAME + "\x07"}]},
        {"instances": [{"notes": "Sang a song", "child_name": NAME * 20}]},
        {"instances": [{"notes": f"{NAME} sang " * 400}]},
        {"instances": [{"notes": "Sang a song", "child_age_months": NAME}]},
        {"instances": [{"notes": "Sang a song", "observation_date": NAME}]},
        {"instances": [{"notes": "Sang a song", "observation_date": "2999-06-12", "child_name": NAME}]},
        {"instances": [{"notes": "Sang a song", "observation_date": "1999-12-31", "child_name": NAME}]},
        {"instances": [{"notes": "Sang a song", NAME: 1}]},
        {"instances": [{"notes": "Sang a song", "image_uri": f"/etc/{NAME}\x00.jpg"}]},
        {"instances": [{"notes": "Sang a song", "image_uri": f"~{NAME}/a.jpg"}]},
        {"instances": [{"notes": "\u200b", "child_name": NAME}]},
        {"instances": [], "child_name": NAME},
        [NAME],
    ]
    raw_bodies = [
        b'{"instances": [{"notes": "%s \\ud800"}]}' % name_json,
        b'{"instances": [{"notes": "Sang", "child_name": "%s", "child_age_months": NaN}]}' % name_json,
        b'{"instances": [{"notes": "Sang", "child_name": "%s", "child_age_months": 1e400}]}' % name_json,
        b'{"instances": [{"notes": "%s' % name_json,
    ]
    answers: list[httpx.Response] = []
    with server_log() as log, httpx.Client(base_url=url, timeout=30) as http:
        ok = {"instances": [{"notes": f"{NAME} sang a song", "child_name": NAME}]}
        answers.append(http.post("/v1/predict", headers=AUTH, json=ok, params={"child": NAME}))
        answers.append(http.post("/v1/predict", json=ok))
        answers.append(http.post("/v1/predict", headers={"Authorization": f"Bearer {NAME}"}, json=ok))
        answers.append(http.post("/v1/predict", headers=AUTH, json={"instances": [{"notes": NAME * 50_000}]}))
        answers += [http.post("/v1/predict", headers=AUTH, json=body) for body in bad_bodies]
        answers += [http.post("/v1/predict", headers=AUTH, content=body) for body in raw_bodies]
        answers.append(http.post(f"/v1/predict/{NAME}", headers=AUTH, json=ok))
        answers.append(http.get("/v1/predict", headers=AUTH, params={"child": NAME}))
        failing = {"instances": [{"notes": f"{FAIL} {NAME}", "child_name": NAME}]}
        answers.append(http.post("/v1/predict", headers=AUTH, json=failing, params={"child": NAME}))
        invalid_http = exchange(url, b"GET /v1/%s HTTP/1.1\r\nHost: x\r\n\r\n" % name_json)
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=5) as gone:  # leaves mid-body
            gone.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b'Content-Length: 1000\r\n\r\n{"instances": [{"notes": "%s' % (TOKEN.encode(), name_json)
            )
        time.sleep(0.2)
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 401, 401, 413] + [422] * (len(bad_bodies) + len(raw_bodies)) + [404, 405, 500]
    assert invalid_http.startswith(b"HTTP/1.1 400")
    written = log.getvalue()
    assert written.count("internal error") == 1 and "ValueError" in written  # the 500, without its message
    for part in NAME.split():
        assert part not in written
        assert all(part not in answer.text for answer in answers[1:])
        assert part.encode() not in invalid_http

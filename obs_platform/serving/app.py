"""The HTTP endpoint: Vertex AI's predict shape over a `Predictor` (a classifier or a tuned causal LM).

`POST /v1/predict` `{"instances": [{"notes", "child_age_months", "observation_date", "child_name", "image_uri"}]}` →
`{"predictions": [...], "model_version": ...}`, each prediction with its own `prediction_id` (and, given a
`PredictionLog`, logged before the answer leaves); `GET /health`; `GET /v1/model`. Bad input is a 4xx with a
message, never a 500, and no answer or log line ever repeats what a request contained (notes and names are
personal data): errors give the field and the problem, not the value. The bearer token is checked before the
body is read; the body is read as a stream and refused (413) past `MAX_BODY_BYTES`, chunked or not, and read as
JSON whatever its `Content-Type` says. Every prediction goes through one `InferenceQueue`, which batches across
requests and answers 429 with `Retry-After` (and a ticket keeping the request's place, `Obs-Queue-Ticket`) when
its line is longer than its deadline. `GET /` serves the review page educators use (`review_page.html`: classify a
note, accept a suggestion or pick another ELG, send the feedback), which asks no token as it holds no data; the
page reads the label space from `GET /v1/taxonomy`, which does.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at run time.
import asyncio
import datetime as dt
import logging
import secrets
import time
import traceback
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from obs_platform.data.schema import EARLIEST_DATE, MAX_AGE_MONTHS, MAX_NOTES_CHARS
from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.batching import BatchingSettings, InferenceQueue, QueueFull, QueueStopped
from obs_platform.serving.feedback import Choice, Feedback, FeedbackStore
from obs_platform.serving.prediction_log import IssuedPrediction, LoggedPrediction, PredictionLog, note_digest
from obs_platform.serving.predictor import Predictor
from obs_platform.taxonomy import Taxonomy

MAX_BATCH = 64
MAX_BODY_BYTES = 1_000_000
TICKET_HEADER = "Obs-Queue-Ticket"  # a 429 hands one out; the request sent again brings it back
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away: nobody reads it
KNOWN_PATHS = ("/", "/health", "/v1/model", "/v1/predict", "/v1/feedback", "/v1/taxonomy")
FIELDS = {
    "instances",
    "notes",
    "child_age_months",
    "child_name",
    "image_uri",
    "observation_date",
    "prediction_id",
    "model_version",
    "choice",
    "attribute_id",
    "level",
}
ALLOWED_CONTROLS = {"\t", "\n", "\r"}
PAGE_HEADERS = {  # the page is one file with its style and script inline; it loads nothing from elsewhere
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

logger = logging.getLogger(__name__)


def text_problem(text: str, controls: set[str]) -> str | None:
    """Why `text` cannot be accepted (a control character, an unpaired surrogate), or None."""
    for character in text:
        category = unicodedata.category(character)
        if category == "Cs":
            return "contains an unpaired surrogate"
        if category == "Cc" and character not in controls:
            return f"contains a control character (U+{ord(character):04X})"
    return None


def visible(text: str) -> bool:
    """Whether any character shows: not white space, not a zero-width or other format character."""
    return any(not c.isspace() and unicodedata.category(c) not in ("Cf", "Cc") for c in text)


def _checked_text(text: str | None, controls: set[str]) -> str | None:
    if text is not None and (problem := text_problem(text, controls)):
        raise ValueError(problem)
    return text


class NoteIn(BaseModel):
    """A note as a request carries it (to be classified, or with feedback on its classification)."""

    model_config = ConfigDict(extra="forbid")

    notes: str = Field(min_length=1, max_length=MAX_NOTES_CHARS)
    child_age_months: float | None = Field(default=None, ge=0, le=MAX_AGE_MONTHS, allow_inf_nan=False)
    child_name: str | None = Field(default=None, max_length=200)
    observation_date: dt.date | None = Field(default=None, ge=EARLIEST_DATE.date(), description="ISO date")

    @field_validator("notes")
    @classmethod
    def _readable_notes(cls, notes: str) -> str:
        _checked_text(notes, ALLOWED_CONTROLS)
        if not visible(notes):
            raise ValueError("notes are empty or only white space or zero-width characters")
        return notes

    @field_validator("child_name")
    @classmethod
    def _readable_name(cls, name: str | None) -> str | None:
        return _checked_text(name, ALLOWED_CONTROLS)

    @field_validator("observation_date")
    @classmethod
    def _not_in_the_future(cls, day: dt.date | None) -> dt.date | None:
        if day is not None and day > dt.date.today() + dt.timedelta(days=1):  # a day's grace for time zones
            raise ValueError("observation_date is in the future")
        return day


class InstanceIn(NoteIn):
    image_uri: str | None = Field(default=None, max_length=2000)

    @field_validator("image_uri")
    @classmethod
    def _readable_uri(cls, uri: str | None) -> str | None:
        return _checked_text(uri, set())


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[InstanceIn] = Field(min_length=1, max_length=MAX_BATCH)


class FeedbackRequest(NoteIn):
    """An educator's verdict on a prediction: the note as it was sent, the prediction's id and model version, and
    the choice: the suggestion accepted (`attribute_id` one of the suggestions, the first when left out), another
    attribute chosen (`corrected`, `attribute_id` required), or `none_of_these`; `level` defaults to the predicted."""

    prediction_id: str = Field(min_length=1, max_length=64)
    model_version: str = Field(min_length=1, max_length=200)
    choice: Choice
    attribute_id: int | None = None
    level: str | None = Field(default=None, max_length=100)


Body = TypeVar("Body", PredictRequest, FeedbackRequest)

PREDICT_BODY = {  # the request body in the OpenAPI schema: the route reads it itself (after the token, bounded)
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "instances": {
                        "type": "array",
                        "items": InstanceIn.model_json_schema(),
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                    },
                },
                "required": ["instances"],
                "additionalProperties": False,
            }
        }
    },
}


def error_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as location and message only: pydantic's `input` and `ctx` repeat the request's values,
    and a field name the schema does not know is itself input."""
    return [
        {
            "loc": [
                part if isinstance(part, int) or part in FIELDS or part == "body" else "(unexpected field)"
                for part in error.get("loc", ())
            ],
            "msg": str(error.get("msg", "invalid value")),
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]


def content_free_traceback(error: BaseException) -> str:
    """Where an exception was raised and its type, without its message (which may quote a request)."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(error).__module__}.{type(error).__qualname__}"


class ContentFreeErrors:
    """Outermost layer inside Starlette's: an unexpected exception becomes a 500 whose body and log line carry no
    request content. Starlette's own handler would pass the exception on to the server, which logs its message."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            error_id = secrets.token_hex(4)
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "(another path)"
            logger.error(
                "internal error %s on %s %s\n%s", error_id, scope["method"], path, content_free_traceback(error)
            )
            if not started:
                body = {"detail": f"internal error {error_id}: the endpoint's log has where it happened"}
                await JSONResponse(body, status_code=500)(scope, receive, send)


async def read_body(request: Request) -> bytes:
    """The body, read as a stream so a chunked one cannot pass the limit either (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(status_code=413, detail=f"request body over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(status_code=413, detail=f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, model: type[Body]) -> Body:
    """The body as a `model` (`PredictRequest`, `FeedbackRequest`), or 422 naming the problem. orjson refuses what
    the standard library lets through into a 500 later: NaN, Infinity, numbers out of range, unpaired surrogates,
    nesting past 1024."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:  # its messages are fixed phrases and a position, never the input
        loc = ["body"]
        detail = f"the body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        raise HTTPException(status_code=422, detail=[{"loc": loc, "msg": detail, "type": "json_invalid"}]) from None
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise HTTPException(status_code=422, detail=error_details(error.errors(include_input=False))) from None


async def answered_unless_gone(
    request: Request, future: "Future[list[Prediction]]", queue: InferenceQueue
) -> list[Prediction] | None:
    """The request's predictions, or None when its client disconnected first (the work is withdrawn from the
    queue unless it is already being computed)."""
    answer = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if answer.done():
        return answer.result()
    queue.withdraw(future)
    answer.cancel()
    return None


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone: once the body is read, the next message a server sends is that."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    predictor: Predictor,
    model_info: dict[str, Any],
    token: str | None,
    storage_root: Path | None = None,
    batching: BatchingSettings | None = None,
    prediction_log: PredictionLog | None = None,
    feedback_store: FeedbackStore | None = None,
    *,
    taxonomy: Taxonomy | None = None,
) -> FastAPI:
    """The endpoint's app. `token=None` only behind Vertex AI, which authenticates callers before a request
    reaches the container; everywhere else every route but /health and the review page needs the bearer token.
    `taxonomy`: the label space the review page's picker lists (`GET /v1/taxonomy`; 501 without one)."""
    queue = InferenceQueue(predictor, batching)
    page = resources.files("obs_platform.serving").joinpath("review_page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()  # its worker starts with the first request
        yield
        queue.stop()
        if prediction_log is not None:
            prediction_log.close()
        if feedback_store is not None:
            feedback_store.close()  # publishes what is waiting

    app = FastAPI(title="obs-platform endpoint", version=str(model_info.get("model_version", "")), lifespan=lifespan)
    app.state.inference_queue = queue
    app.add_middleware(ContentFreeErrors)
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": error_details(error.errors())}, status_code=422)

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    def checked_image(uri: str | None, index: int) -> str | None:
        if uri is None or uri.startswith(("gs://", "https://")):
            return uri
        if storage_root is not None:
            try:
                path = Path(uri).expanduser().resolve()
            except (OSError, RuntimeError, ValueError):  # an unknown ~user, a name too long for the system
                path = None
            if path is not None and path.is_relative_to(storage_root.resolve()):
                return str(path)
        problem = "image_uri must be gs://, https:// or a path inside the storage root"
        loc = ["body", "instances", index, "image_uri"]
        raise HTTPException(status_code=422, detail=[{"loc": loc, "msg": problem, "type": "value_error"}])

    @app.get("/", include_in_schema=False)
    def review_page() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_version": model_info.get("model_version")}

    @app.get("/v1/model", dependencies=[Depends(authorised)])
    def model() -> dict[str, Any]:
        return model_info

    @app.get("/v1/taxonomy", dependencies=[Depends(authorised)])
    def label_space() -> dict[str, Any]:
        if taxonomy is None:
            raise HTTPException(status_code=501, detail="this endpoint was started without its taxonomy")
        domains = [
            {
                "id": domain.id,
                "key": domain.key,
                "name": domain.name,
                "attributes": [
                    {"id": a.id, "name": a.name, "levels": [level.title for level in a.label_levels]}
                    for a in domain.attributes
                ],
            }
            for domain in taxonomy.domains
        ]
        return {"name": taxonomy.name, "domains": domains}

    @app.post("/v1/predict", dependencies=[Depends(authorised)], openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_body(request)
        except ClientDisconnect:  # gone before its body arrived: nothing to answer, nothing to log
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        parsed = parse_request(body, PredictRequest)
        instances = [
            Instance(i.notes, i.child_age_months, i.child_name, checked_image(i.image_uri, n), i.observation_date)
            for n, i in enumerate(parsed.instances)
        ]
        ticket = request.headers.get(TICKET_HEADER)
        try:
            future = queue.submit(instances, ticket=ticket if ticket and len(ticket) <= 64 else None)
        except QueueFull as full:
            headers = {"Retry-After": str(full.retry_after), **({TICKET_HEADER: full.ticket} if full.ticket else {})}
            raise HTTPException(status_code=429, detail=str(full), headers=headers) from None
        except QueueStopped as stopped:
            raise HTTPException(status_code=503, detail=str(stopped)) from None
        try:
            predictions = await answered_unless_gone(request, future, queue)
        except QueueStopped as stopped:
            raise HTTPException(status_code=503, detail=str(stopped)) from None
        if predictions is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        version = str(model_info.get("model_version"))
        identified = [replace(p, prediction_id=uuid.uuid4().hex) for p in predictions]
        if prediction_log is not None:
            logged = [
                LoggedPrediction(p.prediction_id, version, note_digest(text), p)
                for p, text in zip(identified, predictor.texts(instances), strict=True)
            ]
            await asyncio.to_thread(prediction_log.write, logged, (time.perf_counter() - started) * 1000)
        return JSONResponse({"predictions": [asdict(p) for p in identified], "model_version": version})

    @app.post("/v1/feedback", dependencies=[Depends(authorised)], status_code=201)
    async def feedback(request: Request) -> dict[str, Any]:
        if feedback_store is None or prediction_log is None:
            raise HTTPException(status_code=501, detail="this endpoint records no feedback (no local storage root)")
        try:
            body = await read_body(request)
        except ClientDisconnect:
            return {}
        parsed = parse_request(body, FeedbackRequest)
        issued = prediction_log.issued(parsed.prediction_id)
        if issued is None:
            raise HTTPException(status_code=404, detail="unknown prediction_id: feedback names a prediction's id")
        if parsed.model_version != issued.model_version:
            detail = f"prediction_id was answered by model {issued.model_version}, not {parsed.model_version}"
            raise HTTPException(status_code=409, detail=detail)
        if feedback_store.has_feedback(parsed.prediction_id):
            raise HTTPException(status_code=409, detail="this prediction already has feedback")
        attribute_id, level = _chosen_label(parsed, issued, feedback_store)
        record = Feedback(
            parsed.prediction_id,
            parsed.model_version,
            parsed.notes,
            parsed.child_age_months,
            parsed.child_name,
            parsed.choice,
            attribute_id,
            level,
            time.time(),
            None if parsed.observation_date is None else parsed.observation_date.isoformat(),
        )
        try:
            await asyncio.to_thread(feedback_store.record, record)
        except ValueError:  # the same feedback sent twice at once: the second loses the race
            raise HTTPException(status_code=409, detail="this prediction already has feedback") from None
        return {
            "prediction_id": record.prediction_id,
            "choice": record.choice,
            "attribute_id": attribute_id,
            "level": level,
        }

    return app


def _chosen_label(
    parsed: FeedbackRequest, issued: IssuedPrediction, store: FeedbackStore
) -> tuple[int | None, str | None]:
    """The label the feedback gives the note, checked against the prediction and the taxonomy (422 otherwise)."""
    if parsed.choice == "none_of_these":
        return None, None
    if parsed.choice == "accepted":
        attribute_id = issued.suggested[0] if parsed.attribute_id is None else parsed.attribute_id
        if attribute_id not in issued.suggested or attribute_id == 0:
            raise HTTPException(status_code=422, detail="accepted: attribute_id is not one of the suggestions")
    elif parsed.attribute_id is None:
        raise HTTPException(status_code=422, detail="corrected: attribute_id (the ELG chosen instead) is required")
    else:
        attribute_id = parsed.attribute_id
    level = parsed.level or issued.level
    try:
        domain_id = store.taxonomy.attribute(attribute_id).domain_id
    except KeyError:
        raise HTTPException(status_code=422, detail=f"attribute_id {attribute_id} is not in the taxonomy") from None
    if problems := store.taxonomy.label_problems(domain_id, attribute_id, level):
        raise HTTPException(status_code=422, detail="; ".join(problems))
    return attribute_id, level

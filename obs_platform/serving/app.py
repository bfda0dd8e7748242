"""The HTTP endpoint: Vertex AI's predict shape over a `Predictor` (a classifier or a tuned causal LM).

`POST /v1/predict` `{"instances": [{"notes", "child_age_months", "child_name", "image_uri"}]}` →
`{"predictions": [...], "model_version": ...}`; `GET /health`; `GET /v1/model`. Bearer-token auth, limits on
request size and batch size; bad input is a 4xx with a message, never a 500.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at run time.
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from obs_platform.data.schema import MAX_AGE_MONTHS, MAX_NOTES_CHARS
from obs_platform.serving.predictor import Instance, Predictor

MAX_BATCH = 64
MAX_BODY_BYTES = 1_000_000


class InstanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notes: str = Field(min_length=1, max_length=MAX_NOTES_CHARS)
    child_age_months: float | None = Field(default=None, ge=0, le=MAX_AGE_MONTHS)
    child_name: str | None = Field(default=None, max_length=200)
    image_uri: str | None = Field(default=None, max_length=2000)

    @field_validator("notes")
    @classmethod
    def _not_blank(cls, notes: str) -> str:
        if not notes.strip():
            raise ValueError("notes are empty or only white space")
        return notes


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[InstanceIn] = Field(min_length=1, max_length=MAX_BATCH)


def create_app(
    predictor: Predictor, model_info: dict[str, Any], token: str | None, storage_root: Path | None = None
) -> FastAPI:
    """The endpoint's app. `token=None` only behind Vertex AI, which authenticates callers before a request
    reaches the container; everywhere else every route but /health needs the bearer token."""
    app = FastAPI(title="obs-platform endpoint", version=str(model_info.get("model_version", "")))
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    def checked_image(uri: str | None) -> str | None:
        if uri is None or uri.startswith(("gs://", "https://")):
            return uri
        if storage_root is not None:
            path = Path(uri).expanduser().resolve()
            if path.is_relative_to(storage_root.resolve()):
                return str(path)
        raise HTTPException(
            status_code=422, detail=f"image_uri must be gs://, https:// or inside the storage root: {uri!r}"
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_version": model_info.get("model_version")}

    @app.get("/v1/model", dependencies=[Depends(authorised)])
    def model() -> dict[str, Any]:
        return model_info

    @app.post("/v1/predict", dependencies=[Depends(authorised)])
    def predict(request: PredictRequest) -> dict[str, Any]:
        instances = [
            Instance(i.notes, i.child_age_months, i.child_name, checked_image(i.image_uri)) for i in request.instances
        ]
        predictions = predictor.predict(instances)
        return {"predictions": [asdict(p) for p in predictions], "model_version": model_info.get("model_version")}

    return app

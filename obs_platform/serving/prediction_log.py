"""Every prediction the endpoint makes, logged append-only under the storage root: what watching the served model
and checking an educator's feedback against the suggestion it answers both read.

A line holds the prediction's id, the time, the model version, the SHA-256 of the note as the model read it
(redacted), the top-3 suggestions with their probabilities, the level, the status and the request's latency; never
the note or a name. One file per day and process (`<day>-<pid>.jsonl`), opened for appending only, so two endpoint
processes never write into one file and a line once written is never rewritten. Each request's lines are written
in one call and flushed before its answer leaves: a process killed after answering has already logged.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from obs_platform.predictions import Prediction

TOP_K_LOGGED = 3
PREDICTION_LOG_FOLDER = "serving/predictions"  # under the storage root
REMEMBERED_DAYS = 30  # feedback on an older prediction is refused as unknown


def note_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class LoggedPrediction:
    prediction_id: str
    model_version: str
    note_sha256: str  # of the note as the model read it: redacted, with the age line
    prediction: Prediction

    def line(self, logged_at: float, latency_ms: float) -> dict:
        p = self.prediction
        return {
            "prediction_id": self.prediction_id,
            "time": round(logged_at, 3),
            "model_version": self.model_version,
            "note_sha256": self.note_sha256,
            "top_k": [
                {"attribute_id": s.attribute_id, "domain": s.domain, "probability": s.probability}
                for s in p.top_k[:TOP_K_LOGGED]
            ],
            "attribute_id": p.attribute_id,
            "level": p.level,
            "confidence": p.confidence,
            "confident": p.confident,
            "status": p.status,
            "latency_ms": round(latency_ms, 2),
        }


@dataclass(frozen=True)
class IssuedPrediction:
    """What feedback on a prediction is checked against."""

    model_version: str
    suggested: tuple[int, ...]  # the top-3 attribute ids, best first
    level: str


class PredictionLog:
    """Appends logged predictions to today's file of this process in `folder`, and remembers the predictions of
    the last `REMEMBERED_DAYS` days (feedback names one of them)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._day = ""
        self._file: IO[bytes] | None = None
        self._issued: dict[str, IssuedPrediction] = {}
        oldest = time.strftime("%Y-%m-%d", time.gmtime(time.time() - REMEMBERED_DAYS * 86400))
        for path in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
            if path.name[:10] >= oldest:
                for line in path.read_bytes().splitlines():
                    try:
                        self._remember(orjson.loads(line))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by a kill: its prediction was never answered

    def issued(self, prediction_id: str) -> IssuedPrediction | None:
        return self._issued.get(prediction_id)

    def write(self, predictions: Sequence[LoggedPrediction], latency_ms: float) -> None:
        now = time.time()
        lines = [p.line(now, latency_ms) for p in predictions]
        payload = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        with self._lock:
            handle = self._handle(time.strftime("%Y-%m-%d", time.gmtime(now)))
            handle.write(payload)
            handle.flush()
            for line in lines:
                self._remember(line)

    def _remember(self, line: dict) -> None:
        suggested = tuple(s["attribute_id"] for s in line["top_k"]) or (line["attribute_id"],)
        self._issued[line["prediction_id"]] = IssuedPrediction(line["model_version"], suggested, line["level"])

    def _handle(self, day: str) -> IO[bytes]:
        if self._file is None or day != self._day:
            if self._file is not None:
                self._file.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.folder / f"{day}-{os.getpid()}.jsonl", "ab")  # noqa: SIM115 (kept open)
            self._day = day
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

"""Educators' feedback on suggestions: recorded durably, then published into the landing area as raw exports, so
the landing sensor, canonicalisation, redaction and the splits take corrections with no special path.

Every feedback is appended to `serving/feedback/log.jsonl` and fsync'd before the endpoint answers: an answered
feedback is never lost. A line torn by a kill mid-write was never answered; the next start cuts it off. Accepted
and corrected notes (a "none of these" is kept out of training and only counted) are then published as an export
of the raw JSONL shape, `landing/feedback/feedback-<first line>-<last line>.jsonl`, once `records_per_file` are
waiting or the hour has turned: written to a temporary name and renamed, so the landing area never sees half a
file, and never rewritten. `published.json` remembers how far the log is published; a crash between an export and
that mark publishes the same notes again under the same name, which replaces the file with identical bytes.

One serving endpoint runs per storage root (its lock), so one process writes these files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

from obs_platform.settings import LANDING_PREFIX
from obs_platform.taxonomy import Taxonomy

Choice = Literal["accepted", "corrected", "none_of_these"]
FEEDBACK_FOLDER = "serving/feedback"
FEEDBACK_LOG = f"{FEEDBACK_FOLDER}/log.jsonl"  # under the storage root
EXPORT_FOLDER = f"{LANDING_PREFIX}/feedback"
RECORDS_PER_FILE = 100
EDUCATOR_ID = "feedback"  # the raw export's educator: these notes came back through the endpoint


@dataclass(frozen=True)
class Feedback:
    """An educator's verdict on one prediction, with the note as it was sent, and the label it gives the note."""

    prediction_id: str
    model_version: str
    notes: str
    child_age_months: float | None
    child_name: str | None
    choice: Choice
    attribute_id: int | None  # the label: the accepted suggestion or the educator's choice; None for none_of_these
    level: str | None
    received_at: float
    observation_date: str | None = None  # ISO; unknown, the day the feedback came

    @property
    def trains(self) -> bool:
        return self.choice != "none_of_these"

    def raw_record(self, taxonomy: Taxonomy) -> dict:
        """The note in the shape of the exports the data assets read (`sample_data/*.jsonl`)."""
        attribute = taxonomy.attribute(int(self.attribute_id or 0))
        return {
            "observationId": f"fb-{self.prediction_id}",
            "childName": self.child_name,
            "childAgeMonths": self.child_age_months,
            "observationDate": self.observation_date or time.strftime("%Y-%m-%d", time.gmtime(self.received_at)),
            "educatorId": EDUCATOR_ID,
            "educatorName": None,
            "setting": None,
            "observationNotes": self.notes,
            "photoUris": [],
            "domainId": attribute.domain_id,
            "attributeId": attribute.id,
            "progressionTitle": self.level,
            "secondaryTags": [],
        }


class FeedbackStore:
    """The feedback log of one storage root, and its publishing into the landing area."""

    def __init__(self, root: Path, taxonomy: Taxonomy, records_per_file: int = RECORDS_PER_FILE):
        self.root, self.taxonomy, self.records_per_file = root, taxonomy, records_per_file
        self.folder = root / FEEDBACK_FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = root / FEEDBACK_LOG
        self._lock = threading.Lock()
        _cut_torn_line(self.log_path)
        self._records = read_feedback(self.log_path.read_bytes() if self.log_path.exists() else b"")
        self._answered = {record.prediction_id for record in self._records}
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 (kept open: one append per feedback)
        self.publish(force=False)

    def has_feedback(self, prediction_id: str) -> bool:
        return prediction_id in self._answered

    def record(self, feedback: Feedback) -> None:
        """Append durably (fsync before returning), then publish if a file's worth is waiting."""
        line = json.dumps(asdict(feedback), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            if feedback.prediction_id in self._answered:
                raise ValueError(f"prediction {feedback.prediction_id} already has feedback")
            self._log.write(line)
            self._log.flush()
            os.fsync(self._log.fileno())
            self._records.append(feedback)
            self._answered.add(feedback.prediction_id)
        self.publish(force=False)

    def counts(self) -> dict[str, int]:
        with self._lock:
            choices = [record.choice for record in self._records]
        return {choice: choices.count(choice) for choice in ("accepted", "corrected", "none_of_these")}

    def publish(self, force: bool = True) -> Path | None:
        """Publish the lines after the mark as one export (`force`: whatever is waiting, as at shutdown); returns
        the export written, if any."""
        with self._lock:
            start = self._published()
            waiting = self._records[start:]
            if not waiting:
                return None
            hour_turned = time.gmtime(waiting[0].received_at)[:4] != time.gmtime()[:4]
            if not (force or hour_turned or len(waiting) >= self.records_per_file):
                return None
            end = len(self._records)
            lines = [json.dumps(r.raw_record(self.taxonomy), ensure_ascii=False) for r in waiting if r.trains]
            export = None
            if lines:
                export = self.root / EXPORT_FOLDER / f"feedback-{start + 1:08d}-{end:08d}.jsonl"
                _write_atomically(export, ("\n".join(lines) + "\n").encode())
            _write_atomically(self.folder / "published.json", json.dumps({"lines": end}).encode())
            return export

    def close(self) -> None:
        self.publish(force=True)
        with self._lock:
            self._log.close()

    def _published(self) -> int:
        mark = self.folder / "published.json"
        return int(json.loads(mark.read_text())["lines"]) if mark.exists() else 0


def read_feedback(log: bytes) -> list[Feedback]:
    """The records of a feedback log's bytes; a last line without its newline (a write a kill interrupted, never
    answered) is left out."""
    complete = log[: log.rfind(b"\n") + 1]
    return [Feedback(**json.loads(line)) for line in complete.splitlines() if line.strip()]


def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline: the write a kill interrupted, never answered."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)

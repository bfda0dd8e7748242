"""The local tuning backend: the trainer entrypoint as a detached subprocess, jobs recorded in sqlite.

Job records live in `<storage root>/jobs/jobs.sqlite`, so any process (a Dagster run, a sensor, the CLI)
can poll a job another one started. A job's process writes its exit code to a file when it ends; a job
whose process vanished without one (the machine rebooted) is reported FAILED, never left RUNNING. A job's
status carries its progress as the trainer's progress file tells it (`trainer/runs.py`'s ProgressLog).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from obs_platform.processes import process_alive, stop_process_group
from obs_platform.training.backend import (
    BackendUnavailable,
    JobError,
    JobState,
    JobStatus,
    ModelArtifact,
    TrainingProgress,
    TrainingSpec,
)

LOG_TAIL_LINES = 20
CANCEL_GRACE_SECONDS = 5  # the trainer has no SIGTERM handler to finish: what it writes then is discarded anyway
PROGRESS_FILE = "progress.jsonl"  # the trainer's (trainer.runs.PROGRESS_FILE), in its output folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    pid INTEGER,
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
)
"""


class LocalSubprocessBackend:
    name = "local"

    def __init__(self, root: str | Path, python: str = sys.executable):
        self.root = Path(root)
        self.python = python
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = sqlite3.connect(self.root / "jobs" / "jobs.sqlite", timeout=30)
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"the job records cannot be opened: {exc}") from exc
        try:
            with connection:
                yield connection
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full: try again later
            raise BackendUnavailable(f"the job records cannot be read: {exc}") from exc
        finally:
            connection.close()

    def _folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    # ----- the protocol ----------------------------------------------------------------------------
    def submit(self, spec: TrainingSpec) -> str:
        job_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = self._folder(job_id)
        output = folder / "output"
        output.mkdir(parents=True)
        command = [self.python, "-m", "trainer", *spec.trainer_args(str(output))]
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, state, spec, output_dir, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, JobState.PENDING.value, json.dumps(spec.to_dict()), str(output), now, now),
            )
        # A shell records the exit code, so a poller in another process learns how the job ended.
        script = f'{subprocess.list2cmdline(command)}; echo $? > "{folder / "exit_code"}"'
        with open(folder / "trainer.log", "wb") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the Dagster run that submitted it
                env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")},
            )
        self._update(job_id, JobState.RUNNING, pid=process.pid)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        row = self._row(job_id)
        state, message, ended = JobState(row["state"]), row["message"], row["updated"]
        if state is JobState.RUNNING:
            state, message = self._observe(job_id, row)
            if state is not JobState.RUNNING:
                self._update(job_id, state, message=message)
            ended = time.time()
        detail = read_progress(Path(row["output_dir"]) / PROGRESS_FILE, elapsed=ended - row["created"])
        if state is JobState.SUCCEEDED:
            progress = 1.0
        elif state is JobState.RUNNING:
            progress = self._progress(row, detail)
        else:
            progress = 0.0
        return JobStatus(state, progress, message, detail)

    def result(self, job_id: str) -> ModelArtifact:
        status = self.status(job_id)
        if status.state is not JobState.SUCCEEDED:
            raise JobError(f"job {job_id} is {status.state.value}: {status.message or 'no result yet'}")
        output = Path(self._row(job_id)["output_dir"])
        return ModelArtifact(uri=str(output), manifest=json.loads((output / "manifest.json").read_text()))

    def cancel(self, job_id: str) -> None:
        row = self._row(job_id)
        if JobState(row["state"]).finished:
            return
        if row["pid"]:
            stop_process_group(row["pid"], grace_seconds=CANCEL_GRACE_SECONDS)
        self._update(job_id, JobState.CANCELLED, message="cancelled")

    # ----- listing, for the CLI and the sensors ---------------------------------------------------------
    def jobs(self) -> list[dict[str, object]]:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM jobs ORDER BY created").fetchall()
        return [{**dict(row), "spec": json.loads(row["spec"])} for row in rows]

    def log_tail(self, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
        log = self._folder(job_id) / "trainer.log"
        if not log.exists():
            return ""
        # tqdm redraws with carriage returns: keep the last state of each line.
        text = log.read_text(errors="replace").replace("\r", "\n")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    # ----- internals -------------------------------------------------------------------------------
    def _row(self, job_id: str) -> sqlite3.Row:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no local job {job_id!r}")
        return row

    def _update(self, job_id: str, state: JobState, *, pid: int | None = None, message: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state = ?, pid = COALESCE(?, pid), message = COALESCE(?, message), updated = ? "
                "WHERE id = ?",
                (state.value, pid, message, time.time(), job_id),
            )

    def _observe(self, job_id: str, row: sqlite3.Row) -> tuple[JobState, str]:
        exit_file = self._folder(job_id) / "exit_code"
        if exit_file.exists():
            code = exit_file.read_text().strip()
            if code == "0" and (Path(row["output_dir"]) / "manifest.json").exists():
                return JobState.SUCCEEDED, ""
            return JobState.FAILED, f"trainer exited with code {code}:\n{self.log_tail(job_id)}"
        if row["pid"] and not process_alive(row["pid"]):
            return JobState.FAILED, f"trainer process {row['pid']} vanished without an exit code"
        return JobState.RUNNING, ""

    def _progress(self, row: sqlite3.Row, detail: TrainingProgress) -> float:
        """Steps done over planned, from the trainer's progress file; without one (a trainer older than it) from
        its metrics log: tuning steps done over planned (a `train` line naming `steps`, as the hybrid's encoder
        tuning writes), else finished epochs over planned epochs."""
        if detail.total_steps > 0:
            return min(detail.step / detail.total_steps, 0.99)
        metrics = Path(row["output_dir"]) / "metrics.jsonl"
        epochs = json.loads(row["spec"]).get("hyperparameters", {}).get("epochs", 4)
        if not metrics.exists():
            return 0.0
        events = [_event(line) for line in metrics.read_text().splitlines()]
        stepped = [e for e in events if e.get("event") == "train" and e.get("steps")]
        if stepped:
            return min(stepped[-1]["step"] / stepped[-1]["steps"], 0.99)
        evaluations = sum(e.get("event") == "eval" for e in events)
        return min(evaluations / max(int(epochs), 1), 0.99)


def read_progress(path: Path, elapsed: float) -> TrainingProgress:
    """A job's progress from the trainer's progress file: the last line's step of the total and epoch, the latest
    validation metric any line named, and the trainer's pace from its last `start` line to the line that reached
    the last step (an evaluation after it is no step); only `elapsed`, the seconds since the job started, before
    the trainer wrote a line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:  # not written yet (the trainer is still loading), or the folder was removed
        text = ""
    lines = [line for line in map(_event, text.splitlines()) if isinstance(line.get("step"), int) and "time" in line]
    if not lines:
        return TrainingProgress(elapsed=elapsed)
    last = lines[-1]
    start = next((line for line in reversed(lines) if line.get("start")), lines[0])
    measured = next((line for line in reversed(lines) if line.get("metric")), {})
    reached = next(line for line in lines if line["step"] == last["step"] and line["time"] >= start["time"])
    stepped = last["step"] - start["step"]
    return TrainingProgress(
        elapsed=elapsed,
        step=last["step"],
        total_steps=int(last.get("total_steps") or 0),
        epoch=int(last.get("epoch") or 0),
        epochs=int(last.get("epochs") or 0),
        metric=str(measured.get("metric", "")),
        value=measured.get("value"),
        seconds_per_step=(reached["time"] - start["time"]) / stepped if stepped > 0 else 0.0,
    )


def _event(line: str) -> dict:
    """One metrics line; a line the trainer is still writing reads as no event."""
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}

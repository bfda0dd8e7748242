"""What every training mode records the same way: the seed, the metrics log and the input hashes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from transformers import set_seed

from trainer.locations import fetch_file


class MetricsLog:
    """Metrics as JSON lines: one per logged step and per evaluation (appended across resumes)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, event: str, **values: Any) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}) + "\n")

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


PROGRESS_FILE = "progress.jsonl"
# The classifier's validation metric the progress bar shows: the one promotion is judged on.
VALID_METRIC = "attribute_accuracy"


class ProgressLog:
    """`progress.jsonl` in the output folder, what the platform's progress bar reads while the job runs: a line when
    training starts (`start`), one per logged step (the step of the total, the epoch under way of the epochs, 1-based;
    0 where the recipe has none) and one per evaluation naming the validation metric it measured."""

    def __init__(self, path: Path):
        self.path = path

    def write(
        self,
        step: int,
        total_steps: int,
        epoch: int = 0,
        epochs: int = 0,
        *,
        start: bool = False,
        metric: str = "",
        value: float | None = None,
    ) -> None:
        record: dict[str, Any] = {"time": round(time.time(), 3), "step": step, "total_steps": total_steps}
        record |= {"epoch": epoch, "epochs": epochs}
        if start:
            record["start"] = True
        if metric and value is not None:
            record |= {"metric": metric, "value": value}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators (CUDA's too) from one seed: `transformers.set_seed`."""
    set_seed(seed)


def sha256_of(uri: str) -> str:
    """The hash of an input file, recorded in the manifest so a model names the exact data it saw."""
    return hashlib.sha256(fetch_file(uri).read_bytes()).hexdigest()

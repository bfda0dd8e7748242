"""What every training mode records the same way: the seed, the metrics log and the input hashes."""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sha256_of(uri: str) -> str:
    """The hash of an input file, recorded in the manifest so a model names the exact data it saw."""
    return hashlib.sha256(fetch_file(uri).read_bytes()).hexdigest()

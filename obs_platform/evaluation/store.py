"""Evaluation results under the storage root, readable by any analyst's tool: metrics as JSON, prediction
tables as parquet, plots as PNG. Results are keyed by what they depend on, so a finished evaluation is reused."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from obs_platform.evaluation.runs import SystemResult
from obs_platform.storage import Storage


class EvaluationStore:
    def __init__(self, storage: Storage):
        self.storage = storage

    def _write_frame(self, path: str, frame: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.storage.write_bytes(path, buffer.getvalue())

    def _read_frame(self, path: str) -> pd.DataFrame:
        frame = pd.read_parquet(io.BytesIO(self.storage.read_bytes(path)))
        for column in ("true_tags", "pred_tags", "pred_top_k"):
            frame[column] = frame[column].map(list)
        return frame

    def save(self, folder: str, result: SystemResult) -> None:
        self._write_frame(f"{folder}/test_predictions.parquet", result.test_predictions)
        if result.external_predictions is not None:
            self._write_frame(f"{folder}/external_predictions.parquet", result.external_predictions)
        metrics = {"test": result.test_metrics, "external": result.external_metrics}
        self.storage.write_bytes(f"{folder}/metrics.json", json.dumps(metrics, indent=2).encode())  # last

    def load(self, folder: str) -> SystemResult | None:
        if not self.storage.exists(f"{folder}/metrics.json"):
            return None
        metrics = json.loads(self.storage.read_bytes(f"{folder}/metrics.json"))
        external_path = f"{folder}/external_predictions.parquet"
        return SystemResult(
            metrics["test"],
            self._read_frame(f"{folder}/test_predictions.parquet"),
            metrics["external"],
            self._read_frame(external_path) if self.storage.exists(external_path) else None,
        )

    def write_json(self, path: str, value: dict[str, Any]) -> str:
        self.storage.write_bytes(path, json.dumps(value, indent=2).encode())
        return self.storage.uri(path)

    def read_json(self, path: str) -> dict[str, Any] | None:
        return json.loads(self.storage.read_bytes(path)) if self.storage.exists(path) else None

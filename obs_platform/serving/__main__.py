"""`python -m obs_platform.serving`: the endpoint process that `obs_platform.serving.endpoint` manages, and the
serving container's entrypoint on Vertex AI.

Vertex starts a custom serving container without arguments: the model's files are at `AIP_STORAGE_URI` (a `gs://`
folder, copied here first), the port is `AIP_HTTP_PORT`, and Vertex authenticates callers (IAM) before a request
reaches the container, so there is no bearer token; the model version and the storage root (for the roster) come
from the Model's container environment (`OBS_PLATFORM_MODEL_VERSION`, `OBS_PLATFORM_HOME`).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvicorn

from obs_platform.data.redaction import Roster
from obs_platform.serving.app import content_free_traceback, create_app
from obs_platform.serving.batching import BatchingSettings
from obs_platform.serving.feedback import FeedbackStore
from obs_platform.serving.prediction_log import PREDICTION_LOG_FOLDER, PredictionLog
from obs_platform.serving.predictor import load_predictor
from obs_platform.serving.runtime import RUNTIMES
from obs_platform.settings import ROSTER_PATH, Settings
from obs_platform.storage import LocalStorage, storage_from_uri
from obs_platform.taxonomy import load_taxonomy


def vertex_arguments(environment: dict[str, str], scratch: Path) -> list[str]:
    """The command line a Vertex serving container implies, from its environment."""
    files = storage_from_uri(environment["AIP_STORAGE_URI"])
    for path in files.list_files(""):
        (scratch / path).parent.mkdir(parents=True, exist_ok=True)
        (scratch / path).write_bytes(files.read_bytes(path))
    settings = Settings.from_env()
    return [
        "--model-dir",
        str(scratch),
        "--model-version",
        environment.get("OBS_PLATFORM_MODEL_VERSION", "unknown"),
        "--taxonomy",
        settings.taxonomy_path,
        "--storage-root",
        settings.home,
        "--host",
        "0.0.0.0",
        "--port",
        environment["AIP_HTTP_PORT"],
    ]


class ContentFreeExceptions(logging.Filter):
    """Writes a logged exception as its type and frames only: its message may quote a request (a validation
    error's does), and the server's log must hold no request content on any path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"{record.getMessage()}\n{content_free_traceback(record.exc_info[1])}", ()
            record.exc_info, record.exc_text = None, None
        return True


def log_config() -> dict[str, Any]:
    """Warnings and errors of every logger to stderr (the endpoint's `server.log`) through `ContentFreeExceptions`;
    no access log, whose lines carry query strings."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"content_free": {"()": ContentFreeExceptions}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "plain",
                "filters": ["content_free"],
            },
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def main(argv: list[str] | None = None) -> None:
    on_vertex = "AIP_STORAGE_URI" in os.environ and not (argv if argv is not None else sys.argv[1:])
    if on_vertex:
        argv = vertex_arguments(dict(os.environ), Path(tempfile.mkdtemp(prefix="model-")))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--taxonomy", required=True)
    parser.add_argument("--storage-root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime", choices=RUNTIMES, default=Settings.from_env().endpoint_runtime)
    parser.add_argument(
        "--log-predictions",
        action="store_true",
        help=f"log every prediction under <storage root>/{PREDICTION_LOG_FOLDER}",
    )
    args = parser.parse_args(argv)
    manifest = json.loads(Path(args.model_dir, "manifest.json").read_text())
    storage = storage_from_uri(args.storage_root)  # a folder or gs://
    roster = Roster.from_json(storage.read_bytes(ROSTER_PATH)) if storage.exists(ROSTER_PATH) else None
    taxonomy = load_taxonomy(args.taxonomy)
    predictor = load_predictor(args.model_dir, taxonomy, roster=roster, runtime=args.runtime)
    labels = manifest.get("labels") or manifest.get("label_space") or {}
    info = {
        "model_version": args.model_version,
        "mode": manifest.get("mode", "classifier"),
        "runtime": predictor.runtime,
        "calibration": asdict(calibration) if (calibration := getattr(predictor, "calibration", None)) else None,
        "base_model": manifest.get("base_model"),
        "dataset": manifest.get("data"),
        "validation_metrics": manifest.get("metrics"),
        "labels": {name: len(values) for name, values in labels.items()},
        "roster_people": len(roster) if roster else 0,
        "inputs": {
            "notes": True,
            "child_age_months": True,
            "observation_date": True,
            "child_name": "redaction only",
            "image_uri": False,
        },
        "note": "text-only model: image_uri is validated and accepted, not used",
    }
    batching = BatchingSettings.from_env()
    info["batching"] = asdict(batching)
    local_root = storage.root if isinstance(storage, LocalStorage) else None  # local image paths must lie inside it
    token = None if on_vertex else os.environ["OBS_PLATFORM_ENDPOINT_TOKEN"]
    # Predictions are logged, and feedback recorded, beside the data when the storage root is a folder.
    logging_here = args.log_predictions and local_root is not None
    log = PredictionLog(local_root / PREDICTION_LOG_FOLDER) if logging_here else None
    feedback = FeedbackStore(local_root, taxonomy) if logging_here else None
    info["prediction_log"] = str(log.folder) if log else None
    app = create_app(predictor, info, token, local_root, batching, log, feedback, taxonomy=taxonomy)
    uvicorn.run(app, host=args.host, port=args.port, log_config=log_config(), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

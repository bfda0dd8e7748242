"""`python -m obs_platform.serving`: the endpoint process that `obs_platform.serving.endpoint` manages."""

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import uvicorn

from obs_platform.data.redaction import Roster
from obs_platform.serving.app import create_app
from obs_platform.serving.predictor import load_predictor
from obs_platform.serving.runtime import RUNTIMES
from obs_platform.settings import ROSTER_PATH, Settings
from obs_platform.storage import LocalStorage, storage_from_uri
from obs_platform.taxonomy import load_taxonomy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--taxonomy", required=True)
    parser.add_argument("--storage-root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime", choices=RUNTIMES, default=Settings.from_env().endpoint_runtime)
    args = parser.parse_args()
    manifest = json.loads(Path(args.model_dir, "manifest.json").read_text())
    storage = storage_from_uri(args.storage_root)  # a folder or gs://
    roster = Roster.from_json(storage.read_bytes(ROSTER_PATH)) if storage.exists(ROSTER_PATH) else None
    predictor = load_predictor(args.model_dir, load_taxonomy(args.taxonomy), roster=roster, runtime=args.runtime)
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
        "inputs": {"notes": True, "child_age_months": True, "child_name": "redaction only", "image_uri": False},
        "note": "text-only model: image_uri is validated and accepted, not used",
    }
    local_root = storage.root if isinstance(storage, LocalStorage) else None  # local image paths must lie inside it
    app = create_app(predictor, info, os.environ["OBS_PLATFORM_ENDPOINT_TOKEN"], local_root)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

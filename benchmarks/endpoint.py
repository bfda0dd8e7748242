"""Benchmark the local endpoint: latency of single observations and throughput of batches, over real HTTP.

Serves the registry's champion from OBS_PLATFORM_HOME (run `make run` first) on loopback once per runtime
(PyTorch, ONNX Runtime), sends the test split's notes one per request and in batches, and prints p50/p99
latency, observations per second, and the attribute accuracy on the validation + test notes with the
agreement of each runtime's answers with the first one's.

    python benchmarks/endpoint.py [--requests 200] [--batch-size 32] [--runtimes torch onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx
import pandas as pd
from tqdm import tqdm

from obs_platform.serving import endpoint
from obs_platform.serving.runtime import RUNTIMES
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage
from obs_platform.training.registry import ModelRegistry, oss_model_name


def split_records(root: Path, *names: str) -> list[dict]:
    folders = sorted((root / "splits").glob("*/test.jsonl"), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise SystemExit("no test split under the storage root: run `make run` first")
    return [json.loads(line) for name in names for line in (folders[-1].parent / name).read_text().splitlines()]


def instance(record: dict) -> dict:
    return {"notes": record["text"], "child_age_months": record["child_age_months"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: httpx.Client, notes: list[dict], requests: int, batch_size: int) -> list[dict]:
    for note in notes[:5]:  # warm-up
        client.post("/v1/predict", json={"instances": [note]})
    latencies = []
    for i in tqdm(range(requests), desc="single"):
        begin = time.perf_counter()
        client.post("/v1/predict", json={"instances": [notes[i % len(notes)]]}).raise_for_status()
        latencies.append((time.perf_counter() - begin) * 1000)
    batches = [notes[i : i + batch_size] for i in range(0, len(notes), batch_size)] * 3
    begin, batch_latencies = time.perf_counter(), []
    for batch in tqdm(batches, desc="batched"):
        start = time.perf_counter()
        client.post("/v1/predict", json={"instances": batch}).raise_for_status()
        batch_latencies.append((time.perf_counter() - start) * 1000)
    elapsed = time.perf_counter() - begin
    return [
        {"requests": f"1 observation x {requests}", "p50_ms": percentile(latencies, 0.5),
         "p99_ms": percentile(latencies, 0.99), "observations_per_s": 1000 / statistics.mean(latencies)},
        {"requests": f"{batch_size} observations x {len(batches)}", "p50_ms": percentile(batch_latencies, 0.5),
         "p99_ms": percentile(batch_latencies, 0.99), "observations_per_s": sum(map(len, batches)) / elapsed},
    ]  # fmt: skip


def answers(client: httpx.Client, records: list[dict]) -> list[int]:
    found = []
    for start in range(0, len(records), 32):
        body = {"instances": [instance(r) for r in records[start : start + 32]]}
        found += [p["attribute_id"] for p in client.post("/v1/predict", json=body).json()["predictions"]]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    args = parser.parse_args()
    settings = Settings.from_env()
    root = LocalStorage(settings.home).root
    champion = ModelRegistry(LocalStorage(root)).resolve(oss_model_name(settings.train_mode), "champion")
    was_running = endpoint.status(root)
    notes = [instance(r) for r in split_records(root, "test.jsonl")]
    labelled = split_records(root, "valid.jsonl", "test.jsonl")
    rows, first_answers = [], None
    for runtime in args.runtimes:
        os.environ["OBS_PLATFORM_ENDPOINT_RUNTIME"] = runtime  # the endpoint process reads it
        state = endpoint.start(root, champion.uri, champion.label, settings.taxonomy_path)
        token, _ = endpoint.endpoint_token(root)
        with httpx.Client(base_url=state.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            found = answers(client, labelled)
            first_answers = first_answers or found
            quality = {
                "attribute_accuracy": sum(f == r["attribute_id"] for f, r in zip(found, labelled)) / len(labelled),
                "agreement": sum(a == b for a, b in zip(found, first_answers)) / len(found),
            }
            rows += [{"runtime": runtime, **row, **quality} for row in measure(client, notes, args.requests,
                                                                                 args.batch_size)]  # fmt: skip
    endpoint.stop(root)
    os.environ.pop("OBS_PLATFORM_ENDPOINT_RUNTIME")
    if was_running is not None:  # leave the endpoint as it was found
        endpoint.start(root, champion.uri, was_running.model_version, settings.taxonomy_path)
    print(f"endpoint {champion.label} (fp32, CPU, {os.cpu_count()} cores); accuracy on {len(labelled)} "
          "validation + test notes")  # fmt: skip
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()

"""Benchmark the local endpoint: latency of single observations and throughput of batches, over real HTTP.

Serves the registry's champion from OBS_PLATFORM_HOME (run `make run` first) on loopback, sends the test
split's notes, and prints p50/p99 latency per request and observations per second.

    python benchmarks/endpoint.py [--requests 200] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx
import pandas as pd
from tqdm import tqdm

from obs_platform.serving import endpoint
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage
from obs_platform.training.registry import OSS_MODEL, ModelRegistry


def test_notes(root: Path) -> list[dict]:
    ledger_folders = sorted((root / "splits").glob("*/test.jsonl"), key=lambda p: p.stat().st_mtime)
    if not ledger_folders:
        raise SystemExit("no test split under the storage root: run `make run` first")
    records = [json.loads(line) for line in ledger_folders[-1].read_text().splitlines()]
    return [{"notes": r["text"], "child_age_months": r["child_age_months"]} for r in records]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    settings = Settings.from_env()
    root = LocalStorage(settings.home).root
    champion = ModelRegistry(LocalStorage(root)).resolve(OSS_MODEL, "champion")
    state = endpoint.status(root)
    started_here = state is None or state.model_version != champion.label
    if started_here:
        state = endpoint.start(root, champion.uri, champion.label, settings.taxonomy_path)
    token, _ = endpoint.endpoint_token(root)
    notes = test_notes(root)
    rows = []
    with httpx.Client(base_url=state.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for instance in notes[:5]:  # warm-up
            client.post("/v1/predict", json={"instances": [instance]})
        latencies = []
        for i in tqdm(range(args.requests), desc="single"):
            begin = time.perf_counter()
            client.post("/v1/predict", json={"instances": [notes[i % len(notes)]]}).raise_for_status()
            latencies.append((time.perf_counter() - begin) * 1000)
        rows.append({"mode": "1 observation / request", "requests": args.requests,
                     "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                     "observations_per_s": 1000 / statistics.mean(latencies)})  # fmt: skip
        batches = [notes[i : i + args.batch_size] for i in range(0, len(notes), args.batch_size)] * 3
        begin, count, batch_latencies = time.perf_counter(), 0, []
        for batch in tqdm(batches, desc="batched"):
            start = time.perf_counter()
            client.post("/v1/predict", json={"instances": batch}).raise_for_status()
            batch_latencies.append((time.perf_counter() - start) * 1000)
            count += len(batch)
        rows.append({"mode": f"{args.batch_size} observations / request", "requests": len(batches),
                     "p50_ms": percentile(batch_latencies, 0.5), "p99_ms": percentile(batch_latencies, 0.99),
                     "observations_per_s": count / (time.perf_counter() - begin)})  # fmt: skip
    if started_here:
        endpoint.stop(root)
    table = pd.DataFrame(rows).round(1)
    print(f"endpoint {champion.label} (fp32, CPU) at {state.url}")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()

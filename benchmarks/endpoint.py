"""Benchmark the local endpoint over real HTTP: latency and throughput per runtime, and a concurrency sweep.

Serves the registry's champion from OBS_PLATFORM_HOME (run `make run` first; or any model folder with
`--model-dir`) on loopback once per runtime (PyTorch, ONNX Runtime), sends the test split's notes one per request
and in batches, and prints p50/p99 latency, observations per second, and the attribute accuracy on the validation
+ test notes with the agreement of each runtime's answers with the first one's.

The concurrency sweep (on the first runtime) runs 1, 4, 16 and 32 callers at once, each an `ObservationClassifier`
(the project's client, with its timeouts and retries) sending batches of 1 and of 32 of the test split's notes
(their real lengths) until `--sweep-observations` have been answered, and prints per setting the throughput, its
ratio to one caller's, latency per call (retries included), the 429s met (and honoured), timeouts, 5xx and
failed calls. The bar: at 32 callers no call times out or meets a 5xx, and throughput stays at 90 % or more of one
caller's for both batch sizes. Measure it on an idle machine: anything else running changes the figures.

    python benchmarks/endpoint.py [--requests 200] [--batch-size 32] [--runtimes torch onnx]
    python benchmarks/endpoint.py --sweep-only [--clients 1 4 16 32] [--sweep-batch-sizes 1 32]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from tqdm import tqdm

from obs_platform.serving import endpoint
from obs_platform.serving.client import (
    ClassifierError,
    EndpointTimedOut,
    HttpTransport,
    ObservationClassifier,
    RequestRejected,
    RetryableStatus,
)
from obs_platform.serving.runtime import RUNTIMES
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage
from obs_platform.training.registry import ModelRegistry, oss_model_name

BAR_CLIENTS = 32
BAR_THROUGHPUT_RATIO = 0.9


def split_records(root: Path, *names: str) -> list[dict]:
    folders = sorted((root / "splits").glob("*/test.jsonl"), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise SystemExit("no test split under the storage root: run `make run` first")
    return [json.loads(line) for name in names for line in (folders[-1].parent / name).read_text().splitlines()]


def instance(record: dict) -> dict:
    fields = {"notes": record["text"], "child_age_months": record["child_age_months"]}
    return fields | ({"observation_date": record["observation_date"]} if record.get("observation_date") else {})


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
        {
            "requests": f"1 observation x {requests}",
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "observations_per_s": 1000 / statistics.mean(latencies),
        },
        {
            "requests": f"{batch_size} observations x {len(batches)}",
            "p50_ms": percentile(batch_latencies, 0.5),
            "p99_ms": percentile(batch_latencies, 0.99),
            "observations_per_s": sum(map(len, batches)) / elapsed,
        },
    ]


def answers(client: httpx.Client, records: list[dict]) -> list[int]:
    found = []
    for start in range(0, len(records), 32):
        body = {"instances": [instance(r) for r in records[start : start + 32]]}
        found += [p["attribute_id"] for p in client.post("/v1/predict", json=body).json()["predictions"]]
    return found


class CountingTransport(HttpTransport):
    """The client's transport, counting every status it met (a 429 the client then honoured included)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.statuses: dict[int, int] = {}

    def predict(self, instances: list[dict[str, Any]], ticket: str | None = None) -> dict[str, Any]:
        try:
            answer = super().predict(instances, ticket)
        except (RetryableStatus, RequestRejected) as refused:
            self._count(refused.status)
            raise
        self._count(200)
        return answer

    def _count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass
class SweepRun:
    """What the callers of one setting met."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    observations: int = 0
    timeouts: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sweep_setting(url: str, token: str, notes: list[dict], clients: int, batch_size: int, observations: int) -> dict:
    """`clients` callers at once share `observations` (in requests of `batch_size`) until all are answered."""
    requests = max(clients, observations // batch_size)
    next_request = itertools.count()
    run = SweepRun()

    def caller() -> None:
        transport = CountingTransport(url, token)
        classifier = ObservationClassifier(transport)
        while (number := next(next_request)) < requests:
            start = number * batch_size
            batch = [notes[(start + k) % len(notes)] for k in range(batch_size)]
            begin = time.perf_counter()
            try:
                answered = len(classifier.classify_batch(batch))
            except EndpointTimedOut:
                with run.lock:
                    run.timeouts += 1
                continue
            except ClassifierError as error:
                with run.lock:
                    run.failures.append(type(error).__name__)
                continue
            with run.lock:
                run.latencies.append(time.perf_counter() - begin)
                run.observations += answered
        with run.lock:
            for status, count in transport.statuses.items():
                run.statuses[status] = run.statuses.get(status, 0) + count

    threads = [threading.Thread(target=caller) for _ in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    statuses = run.statuses
    return {
        "clients": clients,
        "batch": batch_size,
        "calls": requests,
        "seconds": elapsed,
        "observations_per_s": run.observations / elapsed,
        "call_p50_s": percentile(run.latencies, 0.5) if run.latencies else None,
        "call_p99_s": percentile(run.latencies, 0.99) if run.latencies else None,
        "429s": statuses.get(429, 0),
        "timeouts": run.timeouts,
        "5xx": sum(count for status, count in statuses.items() if status >= 500),
        "failed_calls": len(run.failures),
    }


def sweep(url: str, token: str, notes: list[dict], clients: list[int], sizes: list[int], observations: int) -> bool:
    """Prints the sweep's table and the verdict on the bar; True when it is met."""
    rows = []
    for size in sizes:
        for count in clients:
            print(f"sweep: {count} callers x batches of {size}", flush=True)
            rows.append(sweep_setting(url, token, notes, count, size, observations))
    table = pd.DataFrame(rows)
    alone = table[table.clients == min(clients)].set_index("batch").observations_per_s
    table["vs_fewest_callers"] = table.observations_per_s / table.batch.map(alone)
    print(table.round(3).to_markdown(index=False))
    if BAR_CLIENTS not in clients or min(clients) != 1:
        print(f"bar: not judged (needs 1 and {BAR_CLIENTS} callers in the sweep)")
        return True
    verdicts = []
    for row in table[table.clients == BAR_CLIENTS].to_dict("records"):
        met = (
            row["timeouts"] == 0
            and row["5xx"] == 0
            and row["failed_calls"] == 0
            and row["vs_fewest_callers"] >= BAR_THROUGHPUT_RATIO
        )
        verdicts.append(met)
        print(
            f"bar, {BAR_CLIENTS} callers x batch {row['batch']}: {'met' if met else 'NOT met'} (throughput "
            f"{row['vs_fewest_callers']:.2f} of one caller's, {row['timeouts']} timeouts, {row['5xx']} 5xx, "
            f"{row['failed_calls']} failed calls, {row['429s']} 429s honoured)"
        )
    return all(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--model-dir", help="serve this model folder instead of the registry's champion")
    parser.add_argument("--sweep-only", action="store_true", help="only the concurrency sweep")
    parser.add_argument("--no-sweep", action="store_true", help="no concurrency sweep")
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--sweep-batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--sweep-observations", type=int, default=1024, help="answered per sweep setting")
    args = parser.parse_args()
    settings = Settings.from_env()
    root = LocalStorage(settings.home).root
    if args.model_dir:
        model_dir, label = str(Path(args.model_dir).resolve()), f"{Path(args.model_dir).name} (--model-dir)"
    else:
        champion = ModelRegistry(LocalStorage(root)).resolve(oss_model_name(settings.train_mode), "champion")
        model_dir, label = champion.uri, champion.label
    try:
        was_running = endpoint.status(root)
    except endpoint.StaleEndpointState as exc:
        print(f"ignoring {exc}")
        was_running = None
    notes = [instance(r) for r in split_records(root, "test.jsonl")]
    labelled = split_records(root, "valid.jsonl", "test.jsonl")
    rows, first_answers, bar_met = [], None, True
    for position, runtime in enumerate(args.runtimes):
        os.environ["OBS_PLATFORM_ENDPOINT_RUNTIME"] = runtime  # the endpoint process reads it
        state = endpoint.start(root, model_dir, label, settings.taxonomy_path)
        token, _ = endpoint.endpoint_token(root)
        if not args.sweep_only:
            with httpx.Client(base_url=state.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
                found = answers(client, labelled)
                first_answers = first_answers or found
                quality = {
                    "attribute_accuracy": sum(f == r["attribute_id"] for f, r in zip(found, labelled)) / len(labelled),
                    "agreement": sum(a == b for a, b in zip(found, first_answers)) / len(found),
                }
                rows += [
                    {"runtime": runtime, **row, **quality}
                    for row in measure(client, notes, args.requests, args.batch_size)
                ]
        if position == 0 and not args.no_sweep:
            print(f"concurrency sweep on {runtime} ({os.cpu_count()} cores)")
            bar_met = sweep(state.url, token, notes, args.clients, args.sweep_batch_sizes, args.sweep_observations)
    endpoint.stop(root)
    os.environ.pop("OBS_PLATFORM_ENDPOINT_RUNTIME")
    if was_running is not None:  # leave the endpoint as it was found
        endpoint.start(root, was_running.model_dir, was_running.model_version, settings.taxonomy_path)
    if rows:
        print(
            f"endpoint {label} (fp32, CPU, {os.cpu_count()} cores); accuracy on {len(labelled)} validation + test notes"
        )
        print(pd.DataFrame(rows).round(3).to_markdown(index=False))
    raise SystemExit(0 if bar_met else 1)


if __name__ == "__main__":
    main()

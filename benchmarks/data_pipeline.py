"""Benchmark the data pipeline (raw exports → canonical → redacted → splits → JSONL) at 10k, 100k and 1M rows.

Raw observations are built by resampling the shipped corpus: every row gets a new id and a child drawn from
a roster of 500 invented names, written into the note in place of the original child, so notes are not
copies of each other and redaction has a realistic roster to look up. Each size runs in a fresh process so
its peak memory is its own; a sampler thread records the peak RSS of every stage.

    python benchmarks/data_pipeline.py                 # 10k, 100k, 1M
    python benchmarks/data_pipeline.py --sizes 10000   # one size
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pandas as pd
import psutil
from tqdm import tqdm

from obs_platform.cli import sample_data_files
from obs_platform.data import prepare
from obs_platform.data.canonical import canonicalise
from obs_platform.data.raw import read_landing
from obs_platform.storage import LocalStorage, write_content_addressed
from obs_platform.taxonomy import load_taxonomy

ROSTER_SIZE = 500
EXPORT_FILES = 10


class PeakSampler:
    """Samples this process's RSS every 20 ms; `peak()` is the highest seen since the last reset."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(0.02)

    def reset(self) -> None:
        self._peak = self._process.memory_info().rss

    def peak(self) -> int:
        return max(self._peak, self._process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()


def corpus_records() -> list[dict]:
    records = []
    for path in sample_data_files():
        if path.suffix == ".jsonl" and "malformed" not in path.name:
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def invented_roster(records: list[dict], size: int, rng: random.Random) -> list[str]:
    firsts = sorted({r["childName"].split()[0] for r in records} | {r["educatorName"].split()[0] for r in records})
    lasts = sorted({r["childName"].split()[-1] for r in records})
    names: set[str] = set()
    while len(names) < size:
        names.add(f"{rng.choice(firsts)} {rng.choice(lasts)}")
    return sorted(names)


def write_landing(storage: LocalStorage, rows: int, seed: int = 7) -> None:
    """`rows` resampled observations in EXPORT_FILES JSONL exports."""
    rng = random.Random(seed)
    records = corpus_records()
    roster = invented_roster(records, ROSTER_SIZE, rng)
    per_file = -(-rows // EXPORT_FILES)
    for file_index in range(EXPORT_FILES):
        lines = []
        for i in range(file_index * per_file, min(rows, (file_index + 1) * per_file)):
            source = records[rng.randrange(len(records))]
            child = roster[rng.randrange(ROSTER_SIZE)]
            original_first = source["childName"].split()[0]
            lines.append(
                orjson.dumps(
                    {
                        **source,
                        "observationId": f"bench-{i}",
                        "childName": child,
                        "observationNotes": source["observationNotes"].replace(original_first, child.split()[0]),
                    }
                )
            )
        storage.write_bytes(f"landing/export-{file_index:02d}.jsonl", b"\n".join(lines) + b"\n")


@contextmanager
def stage(name: str, sampler: PeakSampler, results: list[dict]) -> Iterator[None]:
    sampler.reset()
    start = time.perf_counter()
    yield
    results.append({"stage": name, "seconds": time.perf_counter() - start, "peak_rss_mb": sampler.peak() / 2**20})


def run_worker(rows: int) -> list[dict]:
    taxonomy = load_taxonomy()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as root:
        storage = LocalStorage(root)
        write_landing(storage, rows)
        sampler = PeakSampler()
        steps: list[tuple[str, Callable[[], None]]] = []
        state: dict = {}
        steps.append(("read exports", lambda: state.update(raw=read_landing(storage, "landing").table)))
        steps.append(("canonicalise + validate", lambda: state.update(result=canonicalise(state.pop("raw"), taxonomy))))
        steps.append(
            (
                "redact",
                lambda: state.update(
                    redacted=prepare.redact_observations(
                        state["result"].canonical,
                        prepare.build_roster(state["result"].canonical, state["result"].quarantined),
                    )
                ),
            )
        )
        steps.append(
            ("assign splits", lambda: state.update(splits=prepare.split_observations(state.pop("redacted"), None)))
        )
        steps.append(
            (
                "write split JSONL",
                lambda: write_content_addressed(storage, "splits", prepare.split_files(state["splits"].frame)),
            )
        )
        steps.append(
            (
                "write Gemini JSONL",
                lambda: write_content_addressed(
                    storage, "gemini", prepare.gemini_files(state["splits"].frame, taxonomy)
                ),
            )
        )
        steps.append(
            (
                "write chat JSONL",
                lambda: write_content_addressed(storage, "chat", prepare.chat_files(state["splits"].frame, taxonomy)),
            )
        )
        total_start = time.perf_counter()
        for name, step in tqdm(steps, desc=f"{rows:,} rows", leave=False, file=sys.stderr):
            with stage(name, sampler, results):
                step()
        results.append(
            {
                "stage": "total",
                "seconds": time.perf_counter() - total_start,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            }
        )
        sampler.stop()
        assert len(state["result"].canonical) == rows, "every resampled row must be canonical"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker)))
        return
    table = []
    for rows in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(rows)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"{rows} rows failed:\n{done.stderr[-3000:]}")
        for row in json.loads(done.stdout.strip().splitlines()[-1]):
            table.append({"rows": f"{rows:,}", **row})
    frame = pd.DataFrame(table)
    frame["seconds"] = frame["seconds"].round(2)
    frame["peak_rss_mb"] = frame["peak_rss_mb"].round(0).astype(int)
    print(f"data pipeline on {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    print(frame.to_markdown(index=False))


if __name__ == "__main__":
    main()

"""Benchmark the data pipeline (landed exports → canonical → redacted → splits → JSONL) at 10k, 100k and 1M rows:
from nothing (an empty cache), then a drop of 10k new rows in one new export onto what was just processed.

Raw observations are built by resampling the shipped corpus: every row gets a new id and a child drawn from
a roster of 500 invented names, written into the note in place of the original child, so notes are not
copies of each other and redaction has a realistic roster to look up. Each size runs in a fresh process so
its peak memory is its own; a sampler thread records the peak RSS of every stage, worker processes included.

    python benchmarks/data_pipeline.py                       # 10k, 100k, 1M, each with a 10k drop
    python benchmarks/data_pipeline.py --sizes 1000000       # one size
    python benchmarks/data_pipeline.py --drop 0              # from nothing only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import orjson
import pandas as pd
import psutil
from tqdm import tqdm

from obs_platform.cli import sample_data_files
from obs_platform.data import prepare
from obs_platform.data.line_files import write_line_files
from obs_platform.data.parts import canonical_from_parts, snapshot_landing
from obs_platform.data.redaction_cache import redact_with_cache
from obs_platform.data.values import frame_from_parquet
from obs_platform.storage import LocalStorage
from obs_platform.taxonomy import Taxonomy, load_taxonomy

ROSTER_SIZE = 500
EXPORT_FILES = 10
LEDGER = "splits/ledger.parquet"


class PeakSampler:
    """Peak memory per stage: the most this process and its worker processes held together (this process's RSS
    plus the workers' own pages, USS: a forked worker shares this process's pages), sampled every 250 ms, and at
    least this process's own peak as the kernel keeps it (`VmHWM`, reset per stage), which no sample can miss.
    Linux only (/proc).

    Sampling costs the work it measures: the kernel walks a worker's page tables to count its own pages, about 5 ms
    for a worker of 2.5 GB. The sampler before this one (psutil's scan of every process and its parse of each
    worker's memory map, 20 ms apart, holding the GIL) slowed 1M rows from nothing from 31 s to 37.5 s."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._peak = max(self._peak, self._together())

    def _together(self) -> int:
        with open("/proc/self/statm") as statm:
            own = int(statm.read().split()[1]) * self._page
        return own + sum(_own_pages(pid) for pid in _children())

    def reset(self) -> None:
        with suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := the RSS now
        self._peak = self._together()

    def peak(self) -> int:
        return max(self._peak, self._together(), _status_kilobytes("VmHWM") * 1024)

    def stop(self) -> None:
        self._stop.set()


def _children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with suppress(OSError), open(f"/proc/self/task/{task}/children") as handle:
            pids += [int(pid) for pid in handle.read().split()]
    return pids


def _own_pages(pid: int) -> int:
    """A process's private pages (USS), in bytes; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = dict(line.split(":", 1) for line in rollup if ":" in line)
    except OSError:
        return 0
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in ("Private_Clean", "Private_Dirty")) * 1024


def _status_kilobytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


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


def write_landing(storage: LocalStorage, rows: int, files: int, first: int = 0, seed: int = 7) -> None:
    """`rows` resampled observations (ids from `first` on) in `files` JSONL exports."""
    rng = random.Random(seed + first)
    records = corpus_records()
    roster = invented_roster(records, ROSTER_SIZE, random.Random(seed))
    per_file = -(-rows // files)
    for file_index in range(files):
        lines = []
        for i in range(first + file_index * per_file, first + min(rows, (file_index + 1) * per_file)):
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
        storage.write_bytes(f"landing/export-{first + file_index:08d}.jsonl", b"\n".join(lines) + b"\n")


@contextmanager
def stage(name: str, sampler: PeakSampler, results: list[dict]) -> Iterator[None]:
    sampler.reset()
    start = time.perf_counter()
    yield
    results.append({"stage": name, "seconds": time.perf_counter() - start, "peak_rss_mb": sampler.peak() / 2**20})


def pipeline_steps(storage: LocalStorage, taxonomy: Taxonomy, state: dict) -> list[tuple[str, Callable[[], None]]]:
    """What the data assets do, in order, through the same library calls (landing → split JSONL), then the two
    training formats."""

    def canonical() -> None:
        state["canonical"] = canonical_from_parts(storage, snapshot_landing(storage, "landing"), taxonomy)

    def redact() -> None:
        result = state["canonical"].result
        roster = prepare.build_roster(result.canonical, result.quarantined)
        cached = redact_with_cache(storage, result.canonical, roster)
        state["redaction"] = cached.reuse
        state["redacted"] = prepare.with_redacted_text(result.canonical, cached.texts, cached.group_keys)

    def split() -> None:
        ledger = frame_from_parquet(storage.read_bytes(LEDGER)) if storage.exists(LEDGER) else None
        state["splits"] = prepare.split_observations(state.pop("redacted"), ledger)

    def write_splits() -> None:
        state["split_lines"] = prepare.write_split_bundle(storage, state["splits"].frame, taxonomy)
        state["splits"].result.ledger.to_parquet(storage.local_path(LEDGER), index=False)

    return [
        ("landing → canonical", canonical),
        ("redact", redact),
        ("assign splits", split),
        ("write split JSONL", write_splits),
        (
            "write Gemini JSONL",
            lambda: write_line_files(storage, "gemini", prepare.gemini_lines(state["splits"].frame, taxonomy)),
        ),
        (
            "write chat JSONL",
            lambda: write_line_files(storage, "chat", prepare.chat_lines(state["splits"].frame, taxonomy)),
        ),
    ]


def run_scenario(storage: LocalStorage, taxonomy: Taxonomy, label: str) -> list[dict]:
    sampler = PeakSampler()
    results: list[dict] = []
    state: dict = {}
    steps = pipeline_steps(storage, taxonomy, state)
    start = time.perf_counter()
    for name, step in tqdm(steps, desc=label, leave=False, file=sys.stderr):
        with stage(name, sampler, results):
            step()
        if name == "write split JSONL":
            results.append(
                {
                    "stage": "= to split JSONL",
                    "seconds": time.perf_counter() - start,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                }
            )
    results.append(
        {
            "stage": "= total",
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        }
    )
    sampler.stop()
    parts, reuse = state["canonical"], state["redaction"]
    for row in results:
        row.update(
            scenario=label,
            exports_reused=f"{len(parts.reused)}/{len(parts.parts)}",
            notes_redacted=reuse.new + reuse.redone,
            split_lines_reused=state["split_lines"].rows_reused,
        )
    return results


def run_worker(rows: int, drop: int) -> list[dict]:
    taxonomy = load_taxonomy()
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as root:
        storage = LocalStorage(root)
        write_landing(storage, rows, EXPORT_FILES)
        results = run_scenario(storage, taxonomy, f"{rows:,} from nothing")
        if drop:
            write_landing(storage, drop, 1, first=rows)
            results += run_scenario(storage, taxonomy, f"+{drop:,} onto {rows:,}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--drop", type=int, default=10_000, help="rows in the new export landed afterwards (0: none)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.drop)))
        return
    table = []
    for rows in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(rows), "--drop", str(args.drop)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"{rows} rows failed:\n{done.stderr[-3000:]}")
        table += json.loads(done.stdout.strip().splitlines()[-1])
    frame = pd.DataFrame(table)[
        ["scenario", "stage", "seconds", "peak_rss_mb", "exports_reused", "notes_redacted", "split_lines_reused"]
    ]
    frame["seconds"] = frame["seconds"].round(2)
    frame["peak_rss_mb"] = frame["peak_rss_mb"].round(0).astype(int)
    print(f"data pipeline on {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    print(frame.to_markdown(index=False))


if __name__ == "__main__":
    main()

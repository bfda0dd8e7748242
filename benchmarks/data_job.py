"""Time the `data` job in Dagster (in process, asset checks included) on resampled exports: from nothing, then
after a drop of new rows in one new export. What `data_pipeline.py` measures of the library calls, plus the
I/O manager's copies of whole frames and the blocking checks that read every line of every bundle.

    python benchmarks/data_job.py                      # 100k rows, then a 10k drop
    python benchmarks/data_job.py --rows 10000 --drop 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
from data_pipeline import EXPORT_FILES, write_landing

from obs_platform.storage import LocalStorage

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--drop", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="obs-data-job-") as home:
        os.environ["OBS_PLATFORM_HOME"] = home
        storage = LocalStorage(home)
        write_landing(storage, args.rows, EXPORT_FILES)
        from obs_platform.defs.jobs import DATA_JOB  # after OBS_PLATFORM_HOME is set: the definitions read it

        defs = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT / "obs_platform" / "definitions.py")
        job = defs.resolve_job_def(DATA_JOB)
        table = []
        with dg.DagsterInstance.ephemeral() as instance:
            for label in (f"{args.rows:,} from nothing", f"+{args.drop:,} onto {args.rows:,}"):
                if label.startswith("+"):
                    write_landing(storage, args.drop, 1, first=args.rows)
                start = time.perf_counter()
                if not job.execute_in_process(instance=instance, raise_on_error=False).success:
                    raise SystemExit(f"the data job failed ({label})")
                table.append({"run": label, "seconds": round(time.perf_counter() - start, 1)})
    print(pd.DataFrame(table).to_markdown(index=False))


if __name__ == "__main__":
    main()

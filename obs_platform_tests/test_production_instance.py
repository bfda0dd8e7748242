"""The production instance config (`dagster.production.yaml`) against a real PostgreSQL server on loopback: the data
group materialises with runs and events stored in Postgres, and the retry, monitoring and concurrency sections
load. The Kubernetes run launcher is swapped for the default one (no cluster here)."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from .conftest import free_port
from .test_data_assets import PROJECT_ROOT, load_defs, run_data_group

pytestmark = pytest.mark.slow


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    binaries = postgres_binaries()
    if binaries is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("no PostgreSQL server here (Debian: apt-get install postgresql)")
    # Not under pytest's temporary folder: it is private to root, and the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="obs-postgres-"))
    data = folder / "data"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    port = free_port()
    subprocess.run(
        as_postgres([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    subprocess.run(
        as_postgres(
            [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            as_postgres([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dagster"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(
            as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def production_home(folder: Path) -> Path:
    """A DAGSTER_HOME with the production config, its Kubernetes run launcher replaced by the default."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.production.yaml").read_text())
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    del config["run_launcher"]
    folder.mkdir()
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_the_data_group_runs_on_the_production_instance(monkeypatch, postgres_url, landed_storage, tmp_path):
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    home = production_home(tmp_path / "dagster")
    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        started = time.monotonic()
        result = run_data_group(defs, instance)
        assert result.success, f"data group failed after {time.monotonic() - started:.0f} s"
    # A second instance (another webserver, the daemon) sees the same runs and assets from Postgres.
    with dg.DagsterInstance.from_config(str(home)) as other:
        [run] = other.get_runs()
        assert run.run_id == result.run_id and run.is_success
        event = other.get_latest_materialization_event(dg.AssetKey("training_splits"))
        assert event is not None and event.run_id == result.run_id

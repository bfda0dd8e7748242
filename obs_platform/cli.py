"""`obs-platform`: the command line a new user and an operator start from."""

import datetime as dt
import os
import shutil
import sys
import time
import warnings
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from obs_platform.data.raw import SUPPORTED_SUFFIXES
from obs_platform.settings import LANDING_PREFIX, Settings
from obs_platform.storage import LocalStorage, StorageError, storage_from_uri

if TYPE_CHECKING:  # the CLI imports Dagster only in the commands that use it
    from obs_platform.defs.training.job_log import JobRecord

app = typer.Typer(help="Tag early-years observations with curriculum learning domains.", no_args_is_help=True)
DEFAULT_DAGSTER_HOME = Path("~/.local/share/obs-platform/dagster").expanduser()
SAMPLE_SUFFIXES = (".csv", ".jsonl", ".json")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def sample_data_files() -> list[Path]:
    """The corpus shipped in the package: two raw exports and the deliberately malformed records."""
    folder = Path(str(resources.files("obs_platform") / "sample_data"))
    return sorted(p for p in folder.iterdir() if p.suffix in SAMPLE_SUFFIXES)


@app.command()
def init(
    with_sample_data: Annotated[
        bool, typer.Option("--with-sample-data", help="Copy the sample corpus into the landing area.")
    ] = False,
) -> None:
    """Create the storage root (OBS_PLATFORM_HOME) and, optionally, land the sample corpus."""
    settings = Settings.from_env()
    storage = storage_from_uri(settings.home)
    try:
        storage.write_bytes(f"{LANDING_PREFIX}/.keep", b"")
        if with_sample_data:
            for file in sample_data_files():
                storage.write_bytes(f"{LANDING_PREFIX}/{file.name}", file.read_bytes())
                typer.echo(f"landed {storage.uri(f'{LANDING_PREFIX}/{file.name}')}")
    except StorageError as exc:
        _fail(str(exc))
    typer.echo(f"storage root: {storage.root_uri}")
    typer.echo(f"taxonomy:     {settings.taxonomy_path}")


def _dagster_home() -> Path:
    """DAGSTER_HOME, created on first use with the project's instance config (sqlite, no telemetry)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    project_config = Path(__file__).resolve().parent.parent / "dagster.yaml"
    if not (home / "dagster.yaml").exists() and project_config.exists():
        shutil.copyfile(project_config, home / "dagster.yaml")
    return home


@app.command()
def run() -> None:
    """Run the whole local asset graph (train → tuning job → evaluation → endpoint) without a daemon, recorded in
    DAGSTER_HOME so the UI shows it."""
    import dagster as dg

    from obs_platform.definitions import defs
    from obs_platform.local_run import run_whole_graph
    from obs_platform.run_summary import print_summary
    from obs_platform.training.progress import ProgressDisplay

    home = _dagster_home()
    settings = Settings.from_env()
    storage = storage_from_uri(settings.home)
    if not any(path.lower().endswith(SUPPORTED_SUFFIXES) for path in storage.list_files(LANDING_PREFIX)):
        _fail(f"nothing in {storage.uri(LANDING_PREFIX)}: run `obs-platform init --with-sample-data` first")
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with dg.DagsterInstance.get() as instance:
        display = ProgressDisplay(typer.echo, terminal=sys.stdout)  # redrawn in place on a terminal
        result = run_whole_graph(defs, instance, echo=typer.echo, run_config=quiet, display=display)
        outcome = "succeeded" if result.success else f"FAILED: {result.failure}"
        typer.echo(f"runs {', '.join(result.run_ids)} {outcome} (DAGSTER_HOME={home})")
        print_summary(instance, defs, echo=typer.echo)
    if not result.success:
        raise typer.Exit(code=1)


@app.command()
def evaluate() -> None:
    """Evaluate the newest model again: calibration, baselines and the report on the test split and the external
    set, printed as a table with the promotion decision. Moves no alias and restarts no endpoint."""
    import dagster as dg

    from obs_platform.definitions import defs
    from obs_platform.defs.event_log import latest_materialization_metadata, metadata_values
    from obs_platform.defs.jobs import EVALUATE_JOB

    _dagster_home()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    with dg.DagsterInstance.get() as instance:
        if latest_materialization_metadata(instance, dg.AssetKey("tuned_oss_model")) is None:
            _fail("there is no model to evaluate yet: `obs-platform run` trains one")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        result = defs.resolve_job_def(EVALUATE_JOB).execute_in_process(
            instance=instance, run_config=quiet, raise_on_error=False
        )
        reports = [
            event.materialization
            for event in result.get_asset_materialization_events()
            if event.asset_key == dg.AssetKey("evaluation_report")
        ]
        if not reports:
            _fail(f"the evaluation run {result.run_id} failed before its report: see it in the Dagster UI")
        metadata = metadata_values(reports[0])
    typer.echo(str(metadata["summary"]))
    typer.echo(f"\npromotion: {metadata['promotion']} ({metadata['promotion_reason']})")


endpoint_app = typer.Typer(help="The local endpoint serving the champion model.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")


def _local_root() -> Path:
    storage = storage_from_uri(Settings.from_env().home)
    if not isinstance(storage, LocalStorage):
        _fail("the local endpoint needs a local OBS_PLATFORM_HOME")
    return storage.root


@endpoint_app.command("start")
def endpoint_start(
    version: Annotated[int | None, typer.Option(help="registry version to serve (default: the champion)")] = None,
) -> None:
    """Start (or restart) the endpoint on 127.0.0.1."""
    from obs_platform.serving import endpoint
    from obs_platform.training.registry import ModelRegistry, RegistryError, oss_model_name

    root = _local_root()
    registry = ModelRegistry(LocalStorage(root))
    name = oss_model_name(Settings.from_env().train_mode)
    try:
        chosen = registry.get(name, version) if version else registry.resolve(name, "champion")
    except RegistryError as exc:
        _fail(f"{exc.args[0]}: run `obs-platform run` to train one")
    try:
        state = endpoint.start(root, chosen.uri, chosen.label, Settings.from_env().taxonomy_path)
    except endpoint.EndpointError as exc:
        _fail(str(exc))
    typer.echo(f"serving {state.model_version} at {state.url} (pid {state.pid})")


@endpoint_app.command("stop")
def endpoint_stop() -> None:
    """Stop the endpoint."""
    from obs_platform.serving import endpoint

    try:
        stopped = endpoint.stop(_local_root())
    except endpoint.EndpointError as exc:
        _fail(str(exc))
    typer.echo(f"stopped {stopped.url} (pid {stopped.pid})" if stopped else "no endpoint was running")


@endpoint_app.command("status")
def endpoint_status() -> None:
    """URL, model version, PID and where the token is."""
    from obs_platform.serving import endpoint

    try:
        state = endpoint.status(_local_root())
    except endpoint.EndpointError as exc:
        _fail(str(exc))
    if state is None:
        typer.echo("no endpoint is running: `obs-platform endpoint start`")
        raise typer.Exit(code=1)
    typer.echo(f"url:           {state.url}\nmodel version: {state.model_version}\npid:           {state.pid}")
    typer.echo(f"token:         {state.token_file}\nlog:           {state.log_file}")


@app.command()
def classify(
    notes: Annotated[str, typer.Argument(help="the observation text")],
    age_months: Annotated[float | None, typer.Option("--age-months", help="the child's age in months")] = None,
    date: Annotated[
        dt.datetime | None, typer.Option("--date", formats=["%Y-%m-%d"], help="the day of the observation")
    ] = None,
) -> None:
    """Ask the running endpoint for a suggestion."""
    from obs_platform.serving import endpoint
    from obs_platform.serving.client import ClassifierError, ObservationClassifier

    root = _local_root()
    try:
        state = endpoint.status(root)
    except endpoint.EndpointError as exc:
        _fail(str(exc))
    if state is None:
        _fail("no endpoint is running: `obs-platform endpoint start`")
    token, _ = endpoint.endpoint_token(root)
    try:
        result = ObservationClassifier.for_local_endpoint(state.url, token).classify(
            notes, child_age_months=age_months, observation_date=date.date() if date else None
        )
    except ClassifierError as exc:
        _fail(str(exc))
    typer.echo(f"{result.domain_name} → {result.attribute} · {result.level}  (confidence {result.confidence:.2f})")
    for suggestion in result.top_k[1:]:
        typer.echo(f"  or {suggestion.domain_name} → {suggestion.attribute}  ({suggestion.probability:.2f})")


@app.command()
def jobs(
    status: Annotated[
        str | None, typer.Option("--status", help="one job's state and progress bar, and a failed one's log tail")
    ] = None,
    list_jobs: Annotated[bool, typer.Option("--list", help="every job, a line each (the default)")] = False,
) -> None:
    """List every tuning and batch job, local and Vertex alike, as the job-status sensor sees them in the Dagster
    event log: state, backend, dataset version, model version, estimated cost and submission time."""
    if status is not None and list_jobs:
        _fail("--status and --list are alternatives")
    if status is not None:
        _echo_job_status(status)
        return
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # before the definitions' modules are imported
    from obs_platform.defs.training.job_log import job_records

    _dagster_home()
    with dg.DagsterInstance.get() as instance:
        records = job_records(instance)
    if not records:
        typer.echo("no tuning jobs yet: `obs-platform run` submits one")
        return
    rows = [
        (
            record.job_id,
            record.state,
            record.backend,
            record.dataset_version,
            record.model_version or "-",
            "-" if record.estimated_usd is None else f"{record.estimated_usd:.2f}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.submitted_at)),
        )
        for record in _with_local_states(records)
    ]
    _echo_table(("job", "state", "backend", "dataset", "model", "est. USD", "submitted"), rows)


def _echo_job_status(job_id: str) -> None:
    """A job's state and progress bar, as `obs-platform run` shows it: a local job's from the local job records
    (steps, epoch, the latest validation metric; a failed one's last trainer log lines), any other's (a Vertex job)
    found in the event log, its state asked of its backend while it is open."""
    from obs_platform.training.backend import JobError
    from obs_platform.training.local import LocalSubprocessBackend
    from obs_platform.training.progress import status_line

    storage = storage_from_uri(Settings.from_env().home)
    if isinstance(storage, LocalStorage):
        try:
            current = LocalSubprocessBackend(storage.root).status(job_id)
        except JobError:
            pass  # no local job: the event log may know it
        else:
            typer.echo(f"{job_id}: {current.state.value}")
            typer.echo(status_line(current, elapsed=0.0))  # a local status carries its own elapsed time
            if current.message:
                typer.echo(current.message)
            return
    _echo_logged_job_status(job_id)


def _echo_logged_job_status(job_id: str) -> None:
    """A job the event log names: an ended one's state; an open one's progress line, from its backend's state."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # before the definitions' modules are imported
    from obs_platform.defs.training.job_log import job_records

    _dagster_home()
    with dg.DagsterInstance.get() as instance:
        record = next((record for record in job_records(instance) if record.job_id == job_id), None)
    if record is None:
        _fail(f"no local job {job_id!r}, and none of that id in the event log: `obs-platform jobs` lists them")
    typer.echo(f"{job_id}: {record.state} ({record.backend})")
    if record.open:
        from obs_platform.definitions import defs
        from obs_platform.local_run import job_backends, progress_line, tuning_resources

        with tuning_resources(defs) as resources:
            backend = job_backends(resources).get(record.backend)
            typer.echo(progress_line(backend, job_id, record.submitted_at))


def _with_local_states(records: "list[JobRecord]") -> "list[JobRecord]":
    """The records, each open local job with the state its backend reports now: the sensor records an ending only
    at its next tick, and asking the local job records costs nothing. Vertex jobs are left to the sensor."""
    from obs_platform.training.backend import BackendUnavailable, JobError
    from obs_platform.training.local import LocalSubprocessBackend

    storage = storage_from_uri(Settings.from_env().home)
    open_local = [record for record in records if record.open and record.backend == LocalSubprocessBackend.name]
    if not open_local or not isinstance(storage, LocalStorage):
        return records
    backend, states = LocalSubprocessBackend(storage.root), {}
    for record in open_local:
        try:
            states[record.job_id] = backend.status(record.job_id).state.value
        except (JobError, BackendUnavailable):  # no local record of it (wiped): what the event log says stands
            continue
    return [replace(record, state=states.get(record.job_id, record.state)) for record in records]


def _echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@app.command("feedback-stats")
def feedback_stats() -> None:
    """Educators' feedback so far, per model version and domain: accepted at top-1 and within the top 3,
    corrected, none of these."""
    from obs_platform.serving.monitor import feedback_table
    from obs_platform.taxonomy import load_taxonomy

    table = feedback_table(LocalStorage(_local_root()), load_taxonomy(Settings.from_env().taxonomy_path))
    if table.empty:
        typer.echo("no feedback yet: educators send it through the endpoint (`POST /v1/feedback`)")
        return
    typer.echo(table.to_markdown(index=False))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

"""The local endpoint as a managed background process: start (or restart on a new model), stop, status.

Its state lives under the storage root (`endpoint/state.json`: URL, PID, model version; `endpoint/server.log`),
so the CLI, a Dagster run and a sensor all see the same endpoint. The process holds `endpoint/endpoint.lock` for
its lifetime: a PID in the state counts only while the process of that PID and start time holds this root's lock,
so neither a PID the system gave to another process since, nor the state of a copied storage root (the original's
endpoint holds the original's lock) is ever reported or signalled. Evaluation serves a candidate model beside
it under another name (`endpoint-evaluation/`), so the champion keeps answering meanwhile. The bearer token is
`OBS_PLATFORM_ENDPOINT_TOKEN`, or one generated once and kept in `endpoint/token` with owner-only permissions.
The ONNX export of a model is kept beside its files (`onnx/` next to the version's `files/`), built once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from pydantic import TypeAdapter, ValidationError

from obs_platform.processes import (
    LockHeld,
    NotOurProcess,
    lock_held,
    owned_process,
    spawn_holding_lock,
    stop_process_group,
)
from obs_platform.training.registry import CALIBRATION_FILE

STARTUP_SECONDS = 120
STOP_GRACE_SECONDS = 20  # for the endpoint to finish the requests it holds before SIGKILL
SERVING = "endpoint"
EVALUATION = "endpoint-evaluation"
ONNX_DIR_VARIABLE = "OBS_PLATFORM_ONNX_DIR"  # where the endpoint process keeps the model's ONNX export


@dataclass(frozen=True)
class EndpointState:
    url: str
    pid: int
    model_version: str
    model_dir: str
    token_file: str
    log_file: str
    started_at: float  # the process's start time: with the lock, what tells it from a later process of its PID
    revision: str = ""  # the model's calibration: a re-calibrated version is served again


def model_revision(model_dir: str) -> str:
    """What besides the version decides the answers: the calibration file, when the version has one."""
    calibration = Path(model_dir, CALIBRATION_FILE)
    return calibration_revision(calibration.read_bytes() if calibration.exists() else None)


def calibration_revision(calibration: bytes | None) -> str:
    return hashlib.sha256(calibration).hexdigest()[:16] if calibration is not None else ""


_STATE = TypeAdapter(EndpointState)


class EndpointError(RuntimeError):
    pass


class EndpointStateError(EndpointError):
    """The state file cannot be read (truncated, edited, written by another version)."""


class StaleEndpointState(EndpointError):
    """The state names a live process that is not this endpoint: a reused PID, or a copied storage root's."""


def onnx_dir(model_dir: str) -> Path:
    """Where a model's ONNX export is kept: beside its folder (a registry version's `onnx/` next to its `files/`)."""
    return Path(model_dir).parent / "onnx"


def _folder(root: Path, name: str = SERVING) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def endpoint_token(root: Path) -> tuple[str, Path | None]:
    """The token and, when generated, the file holding it."""
    if os.environ.get("OBS_PLATFORM_ENDPOINT_TOKEN"):
        return os.environ["OBS_PLATFORM_ENDPOINT_TOKEN"], None
    path = _folder(root) / "token"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip(), path


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _state_file(root: Path, name: str) -> Path:
    return _folder(root, name) / "state.json"


def _lock_file(root: Path, name: str) -> Path:
    return _folder(root, name) / "endpoint.lock"


def _read_state(root: Path, name: str) -> EndpointState | None:
    path = _state_file(root, name)
    if not path.exists():
        return None
    try:
        return _STATE.validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc.strerror
        lock = _lock_file(root, name)
        running = (
            f"an endpoint process still holds {lock}"
            if lock_held(lock)
            else "no endpoint process holds its lock: starting the endpoint replaces the state"
        )
        raise EndpointStateError(f"{path} is unreadable ({reason}); {running}") from None


def _running(root: Path, name: str) -> EndpointState | None:
    """The state of the endpoint that runs, or None once it has ended (its state removed)."""
    state = _read_state(root, name)
    if state is None:
        return None
    try:
        process = owned_process(state.pid, state.started_at, _lock_file(root, name))
    except NotOurProcess as exc:
        path = _state_file(root, name)
        raise StaleEndpointState(f"stale state in {path}: pid {state.pid} is not this endpoint ({exc})") from None
    if process is None:
        _state_file(root, name).unlink(missing_ok=True)
        return None
    return state


def status(root: Path, name: str = SERVING) -> EndpointState | None:
    """The running endpoint, or None. `StaleEndpointState` when the state names another process;
    `EndpointStateError` when it cannot be read."""
    try:
        return _running(root, name)
    except StaleEndpointState as exc:
        raise StaleEndpointState(f"{exc}; stopping the endpoint removes the state") from None


def stop(root: Path, timeout: float = STOP_GRACE_SECONDS, name: str = SERVING) -> EndpointState | None:
    """Stop the endpoint (its process group) and remove its state. A state naming another process is removed
    without signalling anything, and reported (`StaleEndpointState`)."""
    try:
        state = _running(root, name)
    except StaleEndpointState as exc:
        _state_file(root, name).unlink(missing_ok=True)
        raise StaleEndpointState(f"{exc}; removed the state, signalled nothing") from None
    if state is None:
        return None
    stop_process_group(state.pid, grace_seconds=timeout)
    _state_file(root, name).unlink(missing_ok=True)
    return state


def _write_state(root: Path, name: str, state: EndpointState) -> None:
    """Atomically (a file beside it, renamed): a crash mid-write leaves the old state, never a truncated one."""
    path = _state_file(root, name)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(state), indent=2))
    os.replace(partial, path)


def start(
    root: Path,
    model_dir: str,
    model_version: str,
    taxonomy_path: str,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = SERVING,
    storage_root: str = "",
) -> EndpointState:
    """Serve `model_dir`; an endpoint already running is replaced (stopped first, then the new one started). Its
    state lives under the local `root`; `storage_root` (default: `root`) is where the roster is read from, a
    folder or `gs://`. Stale or unreadable state is replaced: taking the lock shows no endpoint of this root runs."""
    # Nothing of ours to stop, or nothing known: the lock refuses to start beside an endpoint still running.
    with contextlib.suppress(StaleEndpointState, EndpointStateError):
        stop(root, name=name)
    token, token_file = endpoint_token(root)
    port = port or _free_port(host)
    log_file = _folder(root, name) / "server.log"
    command = [
        sys.executable,
        "-m",
        "obs_platform.serving",
        "--model-dir",
        model_dir,
        "--model-version",
        model_version,
        "--taxonomy",
        taxonomy_path,
        "--host",
        host,
        "--port",
        str(port),
        "--storage-root",
        storage_root or str(root),
        *(["--log-predictions"] if name == SERVING else []),  # evaluation's requests are no educator's traffic
    ]
    environment = {**os.environ, "OBS_PLATFORM_ENDPOINT_TOKEN": token, ONNX_DIR_VARIABLE: str(onnx_dir(model_dir))}
    try:
        spawned = spawn_holding_lock(command, _lock_file(root, name), log_file, environment)
    except LockHeld as exc:
        raise EndpointError(f"{exc}: an endpoint of this root still runs without a readable state") from None
    process = spawned.process
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EndpointError(f"endpoint exited with code {process.returncode}; see {log_file}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        stop_process_group(process.pid, grace_seconds=STOP_GRACE_SECONDS)
        raise EndpointError(f"endpoint did not answer /health within {STARTUP_SECONDS} s; see {log_file}")
    state = EndpointState(
        url,
        process.pid,
        model_version,
        model_dir,
        str(token_file or "$OBS_PLATFORM_ENDPOINT_TOKEN"),
        str(log_file),
        spawned.started_at,
        model_revision(model_dir),
    )
    _write_state(root, name, state)
    return state

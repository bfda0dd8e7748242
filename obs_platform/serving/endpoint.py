"""The local endpoint as a managed background process: start (or restart on a new model), stop, status.

Its state lives under the storage root (`endpoint/state.json`: URL, PID, model version; `endpoint/server.log`),
so the CLI, a Dagster run and a sensor all see the same endpoint. Evaluation serves a candidate model beside
it under another name (`endpoint-evaluation/`), so the champion keeps answering meanwhile. The bearer token is
`OBS_PLATFORM_ENDPOINT_TOKEN`, or one generated once and kept in `endpoint/token` with owner-only permissions.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from obs_platform.evaluation.calibration import CALIBRATION_FILE
from obs_platform.processes import process_alive

STARTUP_SECONDS = 120
SERVING = "endpoint"
EVALUATION = "endpoint-evaluation"


@dataclass(frozen=True)
class EndpointState:
    url: str
    pid: int
    model_version: str
    model_dir: str
    token_file: str
    log_file: str
    started_at: float
    revision: str = ""  # the model's calibration: a re-calibrated version is served again


def model_revision(model_dir: str) -> str:
    """What besides the version decides the answers: the calibration file, when the version has one."""
    calibration = Path(model_dir, CALIBRATION_FILE)
    return calibration_revision(calibration.read_bytes() if calibration.exists() else None)


def calibration_revision(calibration: bytes | None) -> str:
    return hashlib.sha256(calibration).hexdigest()[:16] if calibration is not None else ""


class EndpointError(RuntimeError):
    pass


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


def status(root: Path, name: str = SERVING) -> EndpointState | None:
    """The running endpoint, or None (a stale state file of a dead process is removed)."""
    path = _folder(root, name) / "state.json"
    if not path.exists():
        return None
    state = EndpointState(**json.loads(path.read_text()))
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    return state


def stop(root: Path, timeout: float = 20, name: str = SERVING) -> EndpointState | None:
    state = status(root, name)
    if state is None:
        return None
    try:
        os.killpg(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(state.pid):
        time.sleep(0.2)
    if process_alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
    (_folder(root, name) / "state.json").unlink(missing_ok=True)
    return state


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
    folder or `gs://`."""
    stop(root, name=name)
    token, token_file = endpoint_token(root)
    port = port or _free_port(host)
    log_file = _folder(root, name) / "server.log"
    command = [
        sys.executable, "-m", "obs_platform.serving", "--model-dir", model_dir, "--model-version", model_version,
        "--taxonomy", taxonomy_path, "--host", host, "--port", str(port), "--storage-root", storage_root or str(root),
    ]  # fmt: skip
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "OBS_PLATFORM_ENDPOINT_TOKEN": token},
        )  # fmt: skip
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
        os.killpg(process.pid, signal.SIGTERM)
        raise EndpointError(f"endpoint did not answer /health within {STARTUP_SECONDS} s; see {log_file}")
    state = EndpointState(url, process.pid, model_version, model_dir, str(token_file or "$OBS_PLATFORM_ENDPOINT_TOKEN"),
                          str(log_file), time.time(), model_revision(model_dir))  # fmt: skip
    (_folder(root, name) / "state.json").write_text(json.dumps(asdict(state), indent=2))
    return state

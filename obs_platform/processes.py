"""Background processes the platform starts (tuning jobs, the endpoint) and later checks on.

A recorded PID alone names no process for sure: the system reuses it once the process ends, and a storage root
copied with its state files names the original's processes. So a process that must be found again later is
started by `spawn_holding_lock`: it holds an exclusive lock on a file of the folder it belongs to for its whole
life, and `owned_process` accepts a recorded PID only while that very process (the same start time) holds that very
file (this folder's, not a copy's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

START_TIME_TOLERANCE_SECONDS = 1.0  # the start time is read from the clock at boot plus ticks since: ~10 ms apart


class LockHeld(RuntimeError):
    """Another process holds the lock file: one process per folder."""


class NotOurProcess(RuntimeError):
    """A live process has the recorded PID but is not the one started here: it is never signalled."""


@dataclass(frozen=True)
class Spawned:
    process: subprocess.Popen
    started_at: float  # the process's start time, as `owned_process` checks it later


def process_alive(pid: int) -> bool:
    """True while `pid` runs. A finished child of this process is reaped here, so it reads as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:  # not our child: kill(0) already said it runs
        return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group `pgid` runs: its leader (reaped here when it is this process's child, so
    a finished one reads as gone) or any other member."""
    if process_alive(pgid):
        return True
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pgid: int, grace_seconds: float, kill_wait_seconds: float = 5) -> None:
    """SIGTERM to the group `pgid`, SIGKILL to what of it still runs `grace_seconds` later, and back once it is gone
    (or `kill_wait_seconds` after the SIGKILL: a killed process is not gone at once either). A process can be deaf
    to SIGTERM: a handler, or the signal ignored where it was started (a supervisor's setting, a shell's background
    job), which every process it starts inherits; a trainer so started trained on through its cancel, for minutes."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if _gone_within(pgid, grace_seconds):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _gone_within(pgid, kill_wait_seconds)


def _gone_within(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def spawn_holding_lock(command: list[str], lock_file: Path, log_file: Path, env: dict[str, str]) -> Spawned:
    """Start `command` in a session of its own, output to `log_file`, holding an exclusive lock on `lock_file` until
    it exits. The lock is taken here and handed over as an open descriptor, so the command need not know of it; a
    lock already held (the previous process still running, or another start under way) raises `LockHeld`."""
    with open(lock_file, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another process holds {lock_file}") from None
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                pass_fds=(lock.fileno(),),
            )
    # The child's copy of the descriptor keeps the lock now that ours is closed.
    return Spawned(process, psutil.Process(process.pid).create_time())


def lock_held(lock_file: Path) -> bool:
    """Whether a process holds `lock_file` now (a shared lock is refused only while the exclusive one is held)."""
    if not lock_file.exists():
        return False
    with open(lock_file) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def owned_process(pid: int, started_at: float, lock_file: Path) -> psutil.Process | None:
    """The process `spawn_holding_lock` started as `pid` at `started_at` holding `lock_file`, or None once it has
    ended; `NotOurProcess`, saying why, when `pid` now belongs to another process."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        command = " ".join(process.cmdline())[:80] or process.name()
        if abs(process.create_time() - started_at) > START_TIME_TOLERANCE_SECONDS:
            started = datetime.fromtimestamp(process.create_time()).isoformat(timespec="seconds")
            recorded = datetime.fromtimestamp(started_at).isoformat(timespec="seconds")
            raise NotOurProcess(f"`{command}` started at {started}, not at {recorded} as recorded")
        lock = os.path.realpath(lock_file)
        if not any(os.path.realpath(opened.path) == lock for opened in process.open_files()):
            raise NotOurProcess(f"`{command}` does not hold {lock_file}")
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        raise NotOurProcess("it belongs to another user") from None
    return process

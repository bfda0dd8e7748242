"""Background processes the platform starts (tuning jobs, the endpoint) and later checks on."""

from __future__ import annotations

import os


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

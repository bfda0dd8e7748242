"""A tuning job's progress as one line of text: what `obs-platform run` shows while it waits for the job, and what
`obs-platform jobs --status JOB` prints.

    [#########-----------] 45% epoch 2/3 step 270/600 valid attribute acc 0.812 ETA 1m40s

A local job's steps, epochs and latest validation metric come from the trainer's progress file; a Vertex job tells
only its state, so its line is that state and the time since the job started: `RUNNING for 12m03s`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO

from obs_platform.training.backend import JobState, JobStatus, TrainingProgress

BAR_WIDTH = 20
LINE_EVERY = 30.0  # seconds between progress lines where the output is no terminal (a log file, CI)
OPEN_STATES = (JobState.PENDING, JobState.RUNNING, "SUBMITTED")  # SUBMITTED: the event log's open job


def progress_bar(progress: TrainingProgress, state: str = JobState.RUNNING, width: int = BAR_WIDTH) -> str:
    """One line: a bar `width` cells wide, the share of steps done, the epoch and step of the total, the latest
    validation metric and the time left (from the trainer's pace, else from the time per step so far; none before
    the first step); a finished job's state and how long it ran instead of the time left. Without steps (a Vertex
    job) the state and the time since the job started."""
    running = state in OPEN_STATES
    took = f"{state} {'for' if running else 'after'} {duration(progress.elapsed)}"
    total = progress.total_steps
    if total <= 0:
        return took
    done = min(max(progress.step, 0), total)
    filled = done * width // total
    parts = [f"[{'#' * filled}{'-' * (width - filled)}]", f"{done * 100 // total}%"]
    if progress.epochs:
        parts.append(f"epoch {progress.epoch}/{progress.epochs}")
    parts.append(f"{progress.unit} {progress.step}/{total}")
    if progress.metric and progress.value is not None:
        parts.append(f"valid {metric_label(progress.metric)} {progress.value:.3f}")
    pace = progress.seconds_per_step or (progress.elapsed / done if done else 0.0)
    if not running:
        parts.append(took)
    elif 0 < done < total and pace > 0:
        parts.append(f"ETA {duration(pace * (total - done))}")
    else:  # before the first step, or after the last one (the trainer evaluates and saves)
        parts.append(f"elapsed {duration(progress.elapsed)}")
    return " ".join(parts)


def status_line(status: JobStatus, elapsed: float) -> str:
    """The progress line of a backend's status: its steps where the backend counts them, else its state and
    `elapsed`, the seconds since the job was submitted."""
    return progress_bar(status.detail or TrainingProgress(elapsed=elapsed), status.state)


def metric_label(name: str) -> str:
    """A metric's name as the bar shows it: `attribute_accuracy` → `attribute acc`, `eval_loss` → `loss`."""
    name = name.removeprefix("eval_").removeprefix("valid_")
    if name.endswith("_accuracy"):
        name = name.removesuffix("_accuracy") + " acc"
    return name.replace("_", " ")


def duration(seconds: float) -> str:
    """`45s`, `1m40s`, `2h05m`."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class ProgressDisplay:
    """Where a waiting command shows a progress line: redrawn in place on a terminal (`\\r`), elsewhere (a log file,
    CI) printed through `echo` at most every `every` seconds."""

    def __init__(
        self,
        echo: Callable[[str], None] = print,
        terminal: TextIO | None = None,
        every: float = LINE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.echo, self.every, self.clock = echo, every, clock
        self.terminal = terminal if terminal is not None and terminal.isatty() else None
        self.next_line = 0.0
        self.drawn = False

    def due(self) -> bool:
        """Whether a line shown now would be seen (a caller asks a backend only then)."""
        return self.terminal is not None or self.clock() >= self.next_line

    def show(self, line: str) -> None:
        if self.terminal is not None:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be redrawn
            if len(line) > width and line.startswith("[") and "] " in line:  # the percentage says it without a bar
                line = line.split("] ", 1)[1]
            self.terminal.write(f"\r{line[:width]}\x1b[K")
            self.terminal.flush()
            self.drawn = True
        elif self.due():
            self.echo(line)
            self.next_line = self.clock() + self.every

    def end(self) -> None:
        """Ends the line being redrawn, so that what is printed next starts a line of its own."""
        if self.terminal is not None and self.drawn:
            self.terminal.write("\n")
            self.terminal.flush()
            self.drawn = False

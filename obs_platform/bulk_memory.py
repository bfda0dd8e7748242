"""How the processes doing bulk data work allocate memory: two settings measured on the 2-core VM this project is
benchmarked on (docs/benchmarks.md), where every page the kernel hands out must be faulted in and zeroed.

- Arrow's default allocator, mimalloc, backs its memory with transparent huge pages. Once worker processes had come
  and gone, reading the parts of a million rows back faulted in and zeroed 2 MB pages for a few bytes each: 2.4 s
  of a 2.5 s read went to the kernel. `arrow_from_jemalloc` has Arrow allocate from jemalloc while a bulk step runs
  (a buffer keeps the allocator it came from, so switching back is safe): that read takes about 1 s, and redaction
  is a few percent faster too.
- glibc gives big blocks back to the kernel as soon as they are freed, and mimalloc soon after, so a worker
  canonicalising one export after another faulted in every page again: 960k page faults and 5-6 s of system time
  for the parts of a million rows. A worker set up by `keep_freed_memory` serves big blocks from its heap, never
  trims it, and has Arrow allocate through glibc: the parts took 6.1-6.7 s instead of 8.0-9.5 s. The memory stays
  the worker's until it exits, so this is for short-lived workers only.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import pyarrow as pa

P = ParamSpec("P")
R = TypeVar("R")

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> None:
    """Make this process keep the memory it frees (a `ProcessPoolExecutor` initializer). Only with glibc, whose
    `mallopt` does it; elsewhere, or where glibc refuses, nothing changes."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    if libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM):
        pa.set_memory_pool(pa.system_memory_pool())


def arrow_from_jemalloc(function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` with Arrow allocating from jemalloc, where this build of Arrow has it (else as it was)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            jemalloc = pa.jemalloc_memory_pool()
        except NotImplementedError:
            return function(*args, **kwargs)
        previous = pa.default_memory_pool()
        pa.set_memory_pool(jemalloc)
        try:
            return function(*args, **kwargs)
        finally:
            pa.set_memory_pool(previous)

    return wrapper

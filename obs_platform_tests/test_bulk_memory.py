"""The memory settings of bulk data work: Arrow's allocator switched for a step and back, and workers that keep what
they free."""

import multiprocessing
import platform
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa
import pytest

from obs_platform.bulk_memory import arrow_from_jemalloc, keep_freed_memory


def test_arrow_allocates_from_jemalloc_during_a_step_and_as_before_after_it():
    before = pa.default_memory_pool().backend_name

    @arrow_from_jemalloc
    def step(fail: bool) -> str:
        pa.array(range(1000))  # allocates from the step's pool
        if fail:
            raise ValueError("the step failed")
        return pa.default_memory_pool().backend_name

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        assert step(fail=False) == before  # no jemalloc in this build: nothing changes
    else:
        assert step(fail=False) == "jemalloc"
    assert pa.default_memory_pool().backend_name == before
    with pytest.raises(ValueError, match="the step failed"):
        step(fail=True)
    assert pa.default_memory_pool().backend_name == before


def _pool_of_a_worker() -> str:
    return pa.default_memory_pool().backend_name


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_worker_keeps_what_it_frees_and_arrow_allocates_through_glibc():
    here = pa.default_memory_pool().backend_name
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork, initializer=keep_freed_memory) as pool:
        assert pool.submit(_pool_of_a_worker).result() == "system"
    assert pa.default_memory_pool().backend_name == here  # the worker's setting is its own

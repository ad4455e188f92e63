"""One measurement in a fresh process: its result, or its failure as a status; memory as this process sees it."""

import multiprocessing

import pytest
import torch

from usema.bench.measure import (
    _child,
    is_out_of_memory,
    memory_in_use,
    peak_memory,
    reset_peak_memory,
    run_isolated,
)


def test_a_measurement_returns_its_row_and_a_failure_becomes_a_status():
    # builtins pickle by name: dict(spec) is a measurement that returns its spec, int(spec) one that fails
    assert run_isolated(dict, {"status": "ok", "ms": 1.5}, time_limit_s=120) == {"status": "ok", "ms": 1.5}
    failed = run_isolated(int, {"status": "ok"}, time_limit_s=120)
    assert failed["status"] == "error" and failed["note"].startswith("TypeError")


def threads_in_use(spec: dict) -> dict:
    """A measurement that reports the torch threads it ran with."""
    return {"status": "ok", "threads": torch.get_num_threads()}


def test_a_measurement_runs_with_the_threads_it_is_given():
    # run_isolated hands the caller's torch.get_num_threads() to the child, which the fork server would
    # otherwise start with torch's default; here the child's side runs in this process
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            receive, send = multiprocessing.Pipe(duplex=False)
            _child(threads_in_use, {}, threads, send)
            assert receive.recv() == {"status": "ok", "threads": threads}
    finally:
        torch.set_num_threads(before)


def test_allocation_failures_are_told_from_other_errors():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(RuntimeError("CUDA out of memory. Tried ..."))
    assert not is_out_of_memory(RuntimeError("shapes do not match")) and not is_out_of_memory(ValueError("oom"))


def test_the_cpu_peak_covers_what_is_in_use():
    cpu = torch.device("cpu")
    if not reset_peak_memory(cpu):
        pytest.skip("no /proc to reset the peak with")
    block = torch.ones(32 * 2**20 // 4)  # 32 MB more resident after the reset
    assert peak_memory(cpu) >= memory_in_use(cpu) > block.numel() * 4

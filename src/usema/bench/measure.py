"""Shared by the benchmarks: run one measurement in a fresh process, under time and memory limits.

A fresh process per measurement makes its peak memory its own, and turns running out of memory or time into a
status ("oom", "timeout", "error") instead of taking the whole benchmark down.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence

import torch


def vm_kb(field: str) -> int:
    """A field of /proc/self/status in kB ("VmRSS:", "VmHWM:", "VmData:"); 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of unmapping them.

    By default blocks above 32 MB are mmapped and returned to the OS on free, so every iteration page-faults
    them back in: a cost that appears only above that size and would make time look super-linear in the grid
    size. With mmap off and trimming off, every size reuses its memory the same way.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the time the work took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_in_use(device: torch.device) -> int:
    """Bytes in use now: tensors allocated on a GPU, the resident size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return vm_kb("VmRSS:") * 1024


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak from the memory in use now; False where this is not possible (no /proc)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident size, to the current size
        return True
    except OSError:
        return False


def peak_memory(device: torch.device) -> int:
    """Bytes at the peak since the last `reset_peak_memory`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return vm_kb("VmHWM:") * 1024


def limit_memory(device: torch.device, limit_bytes: int | None) -> None:
    """Cap what this process may allocate from now on: `limit_bytes` more private memory on CPU, that much
    of the GPU in all on CUDA. Allocations past it raise an out-of-memory error."""
    if not limit_bytes:
        return
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_bytes / total), device)
        return
    import resource

    # RLIMIT_DATA caps private writable memory; it already holds the interpreter and torch, so add to it.
    limit = vm_kb("VmData:") * 1024 + limit_bytes
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure (CUDA OOM, MemoryError, or the CPU allocator's RuntimeError)."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err)
    # oneDNN reports an allocation that fails while it builds a convolution kernel as "could not create a
    # primitive" (seen under the benchmark's memory cap, when a process that imported more started the run).
    markers = ("can't allocate memory", "out of memory", "could not create a primitive", "bad_alloc")
    return isinstance(err, RuntimeError) and any(marker in text for marker in markers)


def _child(target: Callable[[dict], dict], spec: dict, threads: int, conn) -> None:
    import torch

    torch.set_num_threads(threads)  # the fork server's children start with torch's default, not the caller's
    try:
        conn.send(target(spec))
    except Exception as err:  # any failure becomes a status for the table, never a crash of the benchmark
        status = "oom" if is_out_of_memory(err) else "error"
        conn.send({"status": status, "note": f"{type(err).__name__}: {err}"[:200]})
    finally:
        conn.close()


def _context(preload: Sequence[str]):
    # A fork server imports torch and `preload` once, then forks a fresh process per measurement: seconds
    # saved per measurement over "spawn". It never touches CUDA, so the forked children can. Where there is
    # no fork server (Windows), every measurement spawns a new interpreter.
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", *preload])  # takes effect when the server starts (first use)
    return ctx


def run_isolated(target: Callable[[dict], dict], spec: dict, time_limit_s: float,
                 preload: Sequence[str] = ()) -> dict:
    """`target(spec)` in a fresh process; returns its dict, or a status when it fails.

    `target` must be a module-level function (it is pickled by name); `preload` names modules to import
    once for all measurements (the fork server's). The process uses the caller's number of torch threads.
    Statuses: what `target` returns (normally "ok"), "oom" (allocation failed, or the process was killed, most
    likely for memory), "timeout" (over `time_limit_s`; the process is killed) or "error".
    """
    ctx = _context(preload)
    parent, child = ctx.Pipe(duplex=False)
    import torch

    process = ctx.Process(target=_child, args=(target, spec, torch.get_num_threads(), child), daemon=True)
    process.start()
    child.close()
    if parent.poll(time_limit_s):
        try:
            result = parent.recv()
        except EOFError:
            result = {"status": "oom", "note": "process died (likely killed for memory)"}
        process.join(10)
    else:
        process.kill()
        process.join()
        result = {"status": "timeout", "note": f"over {time_limit_s:g} s"}
    if process.is_alive():
        process.kill()
        process.join()
    if result.get("status") is None:
        result = {"status": "error", "note": f"exit code {process.exitcode}"}
    return result


def default_memory_limit_gb() -> float:
    """Two thirds of this machine's memory, at most 16 GB: a measurement never takes the machine down."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return round(min(16.0, 0.66 * total), 1)

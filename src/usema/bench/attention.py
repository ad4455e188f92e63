"""`usema bench attention`: time and peak memory of every attention mode over growing token grids.

Each measurement runs in a fresh process, so that its peak memory is its own and a measurement that runs out
of memory or time is recorded as such instead of taking the benchmark down.
"""

from __future__ import annotations

import csv
import math
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from usema.bench.machine import provenance, provenance_markdown
from usema.nn.attention import (
    ATTENTION_MODES,
    DEFAULT_WINDOW,
    _partition,
    effective_window,
    full_attention_materialized,
    sema_attention,
)
from usema.utils.atomic import atomic_write_text

# Two baselines beside the modes: full attention with the n x n matrix built (as UNETR-style blocks do), and
# one plain SDPA call over the windows (the naive way to write window attention).
BASELINES = ("full-materialized", "window-sdpa")
DEFAULT_MODES = ATTENTION_MODES + BASELINES
DEFAULT_SIZES = {2: [28, 56, 112, 224, 448], 3: [16, 32, 48, 64, 96]}
FIELDS = ["dims", "size", "tokens", "mode", "status", "forward_ms", "forward_backward_ms", "peak_mb", "repeats"]


def window_sdpa(q, k, v, spatial_shape, window_size):
    """Naive window attention: partition, one scaled_dot_product_attention call, un-partition (no padding)."""
    window = effective_window(spatial_shape, window_size)
    if any(s % w for s, w in zip(spatial_shape, window)):
        raise ValueError("window-sdpa baseline needs sizes that are multiples of the window")
    b, h, n, d = q.shape
    parts = [_partition(t.reshape(b * h, *spatial_shape, d), spatial_shape, window) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*parts)
    from usema.nn.attention import _unpartition

    return _unpartition(out, spatial_shape, window).reshape(b, h, n, d)


def run_mode(q, k, v, spatial_shape, mode):
    """One forward pass of `mode` (an attention mode or a baseline)."""
    window = DEFAULT_WINDOW[len(spatial_shape)]
    if mode == "full-materialized":
        return full_attention_materialized(q, k, v)
    if mode == "window-sdpa":
        return window_sdpa(q, k, v, spatial_shape, window)
    return sema_attention(q, k, v, spatial_shape, window, mode)


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident size, to the current size
        return True
    except OSError:
        return False


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _measure(spec: dict) -> dict:
    """Runs in the child process: peak memory of one cold forward+backward, then timed repeats."""
    device = torch.device(spec["device"])
    keep_freed_memory()
    if device.type == "cpu" and spec.get("memory_limit_bytes"):
        import resource

        # RLIMIT_DATA caps private writable memory; it already holds the interpreter and torch, so add to it.
        limit = _vm_kb("VmData:") * 1024 + spec["memory_limit_bytes"]
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    torch.manual_seed(0)
    dims, size, mode = spec["dims"], spec["size"], spec["mode"]
    heads, head_dim = spec["channels"] // spec["head_dim"], spec["head_dim"]
    shape = (size,) * dims

    def inputs(grid):
        n = math.prod(grid)
        return [torch.randn(1, heads, n, head_dim, device=device, requires_grad=True) for _ in range(3)]

    def forward_backward(q, k, v, grid):
        run_mode(q, k, v, grid, mode).sum().backward()

    # warm the kernels up on a small grid so that one-time set-up does not count as the mode's memory
    small = (DEFAULT_WINDOW[dims] * 2,) * dims
    forward_backward(*inputs(small), small)
    q, k, v = inputs(shape)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _vm_kb("VmRSS:") * 1024 if _reset_peak_rss() else 0
    start = time.perf_counter()
    forward_backward(q, k, v, shape)
    _sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _vm_kb("VmHWM:") * 1024 - base if base else float("nan")

    # fewer repeats when one pass already eats a large part of the time limit
    repeats = spec["repeats"] if first * (2 * spec["repeats"] + 1) < spec["time_limit_s"] * 0.8 else 1
    fb_times, f_times = [], []
    for _ in range(repeats):
        q.grad = k.grad = v.grad = None
        start = time.perf_counter()
        forward_backward(q, k, v, shape)
        _sync(device)
        fb_times.append(time.perf_counter() - start)
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            run_mode(q, k, v, shape, mode)
            _sync(device)
            f_times.append(time.perf_counter() - start)
    return {
        "status": "ok",
        "forward_ms": 1000 * statistics.median(f_times),
        "forward_backward_ms": 1000 * statistics.median(fb_times),
        "peak_mb": peak / 2**20,
        "repeats": repeats,
    }


def _child(spec: dict, conn) -> None:
    try:
        conn.send(_measure(spec))
    except (torch.OutOfMemoryError, MemoryError) as err:
        conn.send({"status": "oom", "note": str(err)[:200]})
    except RuntimeError as err:
        status = "oom" if "can't allocate memory" in str(err) or "out of memory" in str(err) else "error"
        conn.send({"status": status, "note": str(err)[:200]})
    finally:
        conn.close()


def measure_in_subprocess(spec: dict) -> dict:
    """Measure one (dims, size, mode) in a fresh process; time-outs and crashes become statuses."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(spec, child), daemon=True)
    process.start()
    child.close()
    if parent.poll(spec["time_limit_s"]):
        try:
            result = parent.recv()
        except EOFError:
            result = {"status": "oom", "note": "process died (likely killed for memory)"}
        process.join(10)
    else:
        process.kill()
        process.join()
        result = {"status": "timeout", "note": f"over {spec['time_limit_s']} s"}
    if process.is_alive():
        process.kill()
    if result.get("status") is None:
        result = {"status": "error", "note": f"exit code {process.exitcode}"}
    return result


def _default_memory_limit_gb() -> float:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return round(min(16.0, 0.66 * total), 1)


def run_attention_benchmark(
    output: str | Path,
    dims=(2, 3),
    sizes_2d=None,
    sizes_3d=None,
    modes=None,
    channels: int = 64,
    head_dim: int = 32,
    repeats: int = 3,
    time_limit_s: float = 120.0,
    memory_limit_gb: float | None = None,
    device: str = "auto",
) -> list[dict]:
    """Run the benchmark; write attention.csv, attention.png and attention.md under `output`; return the rows."""
    from usema.utils.device import resolve_device

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    modes = list(modes or DEFAULT_MODES)
    unknown = set(modes) - set(DEFAULT_MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {DEFAULT_MODES}")
    memory_limit_gb = memory_limit_gb or _default_memory_limit_gb()
    sizes = {2: sizes_2d or DEFAULT_SIZES[2], 3: sizes_3d or DEFAULT_SIZES[3], 1: [256, 1024, 4096, 16384]}
    rows = []
    for d in dims:
        for mode in modes:
            failed = None
            for size in sorted(sizes[d]):
                row = {"dims": d, "size": size, "tokens": size**d, "mode": mode, "repeats": 0}
                if failed:
                    row.update(status="skipped", note=f"{failed} at a smaller size")
                else:
                    spec = dict(dims=d, size=size, mode=mode, channels=channels, head_dim=head_dim,
                                repeats=repeats, time_limit_s=time_limit_s, device=str(dev),
                                memory_limit_bytes=int(memory_limit_gb * 2**30))
                    row.update(measure_in_subprocess(spec))
                    if row["status"] in ("oom", "timeout"):
                        failed = row["status"]
                rows.append(row)
                print(_format_row(row), flush=True)
    prov = provenance(dev)
    prov["settings"] = dict(channels=channels, head_dim=head_dim, repeats=repeats, time_limit_s=time_limit_s,
                            memory_limit_gb=memory_limit_gb, device=str(dev))
    _write_csv(rows, output / "attention.csv")
    plot_attention(rows, output / "attention.png")
    atomic_write_text(output / "attention.md", attention_markdown(rows, prov))
    print(f"wrote {output / 'attention.csv'}, {output / 'attention.png'}, {output / 'attention.md'}")
    return rows


def _format_row(row: dict) -> str:
    grid = "x".join([str(row["size"])] * row["dims"])
    if row["status"] != "ok":
        return f"{row['dims']}D {grid:>10} {row['mode']:<18} {row['status']}"
    return (f"{row['dims']}D {grid:>10} {row['mode']:<18} fwd {row['forward_ms']:10.1f} ms   "
            f"fwd+bwd {row['forward_backward_ms']:10.1f} ms   peak {row['peak_mb']:9.1f} MB")


def _write_csv(rows: list[dict], path: Path) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS + ["note"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def read_attention_csv(path: str | Path) -> list[dict]:
    """Rows of attention.csv with numbers parsed."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("dims", "size", "tokens", "repeats"):
                row[key] = int(row[key])
            for key in ("forward_ms", "forward_backward_ms", "peak_mb"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


def attention_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, computed from one run's 2D rows (ratios measured side by side)."""

    def get(mode, size, key="forward_backward_ms"):
        for row in rows:
            if row["dims"] == 2 and row["mode"] == mode and row["size"] == size and row["status"] == "ok":
                return row[key]
        return None

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    targets = [
        ("SEMA time 448^2 / 224^2 (linear growth)", ratio(get("sema", 448), get("sema", 224)), "<=", 4.5),
        ("full / SEMA time at 224^2", ratio(get("full", 224), get("sema", 224)), ">=", 50),
        ("full / SEMA peak memory at 224^2", ratio(get("full", 224, "peak_mb"), get("sema", 224, "peak_mb")), ">=", 10),
        ("full-materialized / SEMA peak memory at 224^2",
         ratio(get("full-materialized", 224, "peak_mb"), get("sema", 224, "peak_mb")), ">=", 10),
        ("SEMA / window time at 224^2 (mean term cost)", ratio(get("sema", 224), get("window", 224)), "<=", 1.15),
        ("window-sdpa / SEMA time at 224^2", ratio(get("window-sdpa", 224), get("sema", 224)), ">=", 2),
    ]
    out = []
    for name, value, op, bound in targets:
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": f"{name} {op} {bound}", "value": value, "met": met})
    return out


def attention_markdown(rows: list[dict], prov: dict) -> str:
    """Markdown report: provenance, the targets, and the full table."""
    lines = ["# Attention benchmark", "", provenance_markdown(prov), ""]
    settings = prov.get("settings", {})
    if settings:
        lines += [", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for t in attention_targets(rows):
        value = "n/a (not measured)" if t["value"] is None else f"{t['value']:.2f}"
        met = {True: "yes", False: "no", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {value} | {met} |")
    lines += ["", "| dims | grid | tokens | mode | status | forward ms | fwd+bwd ms | peak MB |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        grid = "x".join([str(row["size"])] * row["dims"])

        def num(key, row=row):
            value = row.get(key)
            return f"{value:.1f}" if isinstance(value, float) and not math.isnan(value) else "-"

        lines.append(f"| {row['dims']}D | {grid} | {row['tokens']} | {row['mode']} | {row['status']} | "
                     f"{num('forward_ms')} | {num('forward_backward_ms')} | {num('peak_mb')} |")
    return "\n".join(lines) + "\n"


def plot_attention(rows: list[dict], path: Path) -> None:
    """Log-log plot of forward+backward time and peak memory against the number of tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usema.utils.atomic import atomic_path

    dims = sorted({row["dims"] for row in rows})
    fig, axes = plt.subplots(len(dims), 2, figsize=(11, 4.2 * len(dims)), squeeze=False)
    for i, d in enumerate(dims):
        for j, (key, label) in enumerate([("forward_backward_ms", "forward+backward (ms)"), ("peak_mb", "peak memory (MB)")]):
            ax = axes[i][j]
            for mode in dict.fromkeys(row["mode"] for row in rows if row["dims"] == d):
                points = [(r["tokens"], r[key]) for r in rows
                          if r["dims"] == d and r["mode"] == mode and r["status"] == "ok" and r.get(key) and r[key] > 0]
                if points:
                    ax.plot(*zip(*points), marker="o", label=mode)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"tokens ({d}D grid)")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

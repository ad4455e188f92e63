"""`usema bench attention`: time and peak memory of every attention mode over growing token grids.

Each measurement runs in a fresh process, so that its peak memory is its own and a measurement that runs out
of memory or time is recorded as such instead of taking the benchmark down.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from usema.bench.measure import (
    default_memory_limit_gb,
    keep_freed_memory,
    limit_memory,
    memory_in_use,
    peak_memory,
    reset_peak_memory,
    run_isolated,
    sync,
)
from usema.nn.attention import (
    ATTENTION_MODES,
    DEFAULT_WINDOW,
    effective_window,
    from_window_layout,
    full_attention_materialized,
    sema_attention,
    to_window_layout,
    window_padding,
    window_token_mask,
)
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance, provenance_from_markdown, provenance_markdown

# Two baselines beside the modes: full attention with the n x n matrix built (as UNETR-style blocks do), and
# one plain SDPA call over the windows (the naive way to write window attention).
BASELINES = ("full-materialized", "window-sdpa")
DEFAULT_MODES = ATTENTION_MODES + BASELINES
DEFAULT_SIZES = {2: [28, 56, 112, 224, 448], 3: [16, 32, 48, 64, 96]}
FIELDS = ["dims", "size", "tokens", "mode", "status", "forward_ms", "forward_backward_ms", "peak_mb", "gflop",
          "roofline_ms", "repeats"]
MATMUL_SIDE = 2048  # the roofline's matrix product: (2048 x 2048) @ (2048 x 2048), 17 GFLOP


def window_sdpa(q, k, v, spatial_shape, window_size):
    """Naive window attention: pad, partition, one scaled_dot_product_attention call that always passes the
    padding mask (all True where nothing is padded), un-partition."""
    window = effective_window(spatial_shape, window_size)
    b, h, n, d = q.shape

    def windows(t):  # (B, H, N, d) -> (B * H, num_windows, window_tokens, d), zero-padded
        return to_window_layout(t.reshape(b * h, *spatial_shape, d), spatial_shape, window).unflatten(0, (b * h, -1))

    parts = [windows(t) for t in (q, k, v)]
    mask = window_token_mask(spatial_shape, window, q.device)
    if mask is None:
        mask = torch.ones(parts[0].shape[1:3], dtype=torch.bool, device=q.device)
    out = F.scaled_dot_product_attention(*parts, attn_mask=mask[:, None, :])
    return from_window_layout(out.flatten(0, 1), b * h, spatial_shape, window).reshape(b, h, n, d)


def run_mode(q, k, v, spatial_shape, mode):
    """One forward pass of `mode` (an attention mode or a baseline)."""
    window = DEFAULT_WINDOW[len(spatial_shape)]
    if mode == "full-materialized":
        return full_attention_materialized(q, k, v)
    if mode == "window-sdpa":
        return window_sdpa(q, k, v, spatial_shape, window)
    return sema_attention(q, k, v, spatial_shape, window, mode)


def _measure(spec: dict) -> dict:
    """Runs in the child process: peak memory of one cold forward+backward, then timed repeats."""
    device = torch.device(spec["device"])
    keep_freed_memory()
    limit_memory(device, spec.get("memory_limit_bytes"))
    torch.manual_seed(0)
    dims, size, mode = spec["dims"], spec["size"], spec["mode"]
    heads, head_dim = spec["channels"] // spec["head_dim"], spec["head_dim"]
    shape = (size,) * dims

    def inputs(grid):
        # token-major memory, (batch, N, heads, head_dim) seen as (batch, heads, N, head_dim), as a projection
        # of (batch, N, channels) tokens hands them over
        n = math.prod(grid)
        return [torch.randn(1, n, heads, head_dim, device=device, requires_grad=True) for _ in range(3)]

    def forward_backward(q, k, v, grid):
        run_mode(*(t.transpose(1, 2) for t in (q, k, v)), grid, mode).sum().backward()

    # warm the kernels up on a small grid so that one-time set-up does not count as the mode's memory
    small = (DEFAULT_WINDOW[dims] * 2,) * dims
    forward_backward(*inputs(small), small)
    q, k, v = inputs(shape)
    sync(device)
    base = memory_in_use(device) if reset_peak_memory(device) else None
    start = time.perf_counter()
    forward_backward(q, k, v, shape)
    sync(device)
    first = time.perf_counter() - start
    peak = peak_memory(device) - base if base is not None else float("nan")

    # fewer repeats when one pass already eats a large part of the time limit
    repeats = spec["repeats"] if first * (2 * spec["repeats"] + 1) < spec["time_limit_s"] * 0.8 else 1
    fb_times, f_times = [], []
    for _ in range(repeats):
        q.grad = k.grad = v.grad = None
        start = time.perf_counter()
        forward_backward(q, k, v, shape)
        sync(device)
        fb_times.append(time.perf_counter() - start)
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            run_mode(*(t.transpose(1, 2) for t in (q, k, v)), shape, mode)
            sync(device)
            f_times.append(time.perf_counter() - start)
    return {
        "status": "ok",
        "forward_ms": 1000 * statistics.median(f_times),
        "forward_backward_ms": 1000 * statistics.median(fb_times),
        "peak_mb": peak / 2**20,
        "gflop": matmul_gflop(mode, shape, heads, head_dim),
        "repeats": repeats,
    }


def matmul_gflop(mode: str, shape: tuple[int, ...], heads: int, head_dim: int) -> float | None:
    """GFLOP of a mode's matrix products in one forward+backward over a `shape` grid: QK^T and AV forward
    (2 FLOPs per multiply-add), twice that backward; windows padded as computed. None for `mean`, which has
    none. Counted here because torch's FLOP counter does not count the CPU's fused attention kernel."""
    tokens = math.prod(shape)
    if mode == "mean":
        return None
    if mode == "linear":
        pairs = tokens * head_dim  # K^T V and Q (K^T V): head_dim x head_dim per token
    elif mode in ("full", "full-materialized"):
        pairs = tokens * tokens
    else:
        window = effective_window(shape, DEFAULT_WINDOW[len(shape)])
        pairs = math.prod(window_padding(shape, window)[0]) * math.prod(window)
    return 3 * 2 * 2 * pairs * head_dim * heads / 1e9


def _matmul_rate(spec: dict) -> dict:
    """Runs in the child process: the machine's fp32 matrix-product rate (GFLOP/s), the roofline's ceiling."""
    device = torch.device(spec["device"])
    a, b = (torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device) for _ in range(2))
    torch.matmul(a, b)
    times = []
    for _ in range(spec["repeats"]):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return {"status": "ok", "gflops": 2 * MATMUL_SIDE**3 / min(times) / 1e9}


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
    memory_limit_gb = memory_limit_gb or default_memory_limit_gb()
    sizes = {2: sizes_2d or DEFAULT_SIZES[2], 3: sizes_3d or DEFAULT_SIZES[3], 1: [256, 1024, 4096, 16384]}
    rate = run_isolated(_matmul_rate, dict(device=str(dev), repeats=max(3, repeats)), time_limit_s)
    matmul_gflops = rate.get("gflops")
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
                    row.update(run_isolated(_measure, spec, time_limit_s, preload=["usema.nn.attention"]))
                    if row.get("gflop") and matmul_gflops:
                        row["roofline_ms"] = 1000 * row["gflop"] / matmul_gflops
                    if row["status"] in ("oom", "timeout"):
                        failed = row["status"]
                rows.append(row)
                print(_format_row(row), flush=True)
    prov = provenance(dev)
    prov["settings"] = dict(channels=channels, head_dim=head_dim, repeats=repeats, time_limit_s=time_limit_s,
                            memory_limit_gb=memory_limit_gb, device=str(dev),
                            matmul_gflops=round(matmul_gflops, 1) if matmul_gflops else None)
    _write_csv(rows, output / "attention.csv")
    atomic_write_text(output / "attention.json", json.dumps(prov, indent=1) + "\n")
    plot_attention(rows, output / "attention.png")
    atomic_write_text(output / "attention.md", attention_markdown(rows, prov))
    print(f"wrote {output / 'attention.csv'}, {output / 'attention.png'}, {output / 'attention.md'}")
    return rows


def render_attention_report(output: str | Path) -> Path:
    """Re-render attention.md and attention.png from a finished run's CSV and provenance (no re-measuring).

    The provenance comes from attention.json, or, for runs made before that file existed, from the header of
    the previous attention.md.
    """
    output = Path(output)
    rows = read_attention_csv(output / "attention.csv")
    if (output / "attention.json").is_file():
        prov = json.loads((output / "attention.json").read_text())
    else:
        prov = _provenance_from_markdown((output / "attention.md").read_text())
        atomic_write_text(output / "attention.json", json.dumps(prov, indent=1) + "\n")
    plot_attention(rows, output / "attention.png")
    return atomic_write_text(output / "attention.md", attention_markdown(rows, prov))


def _provenance_from_markdown(text: str) -> dict:
    import re

    prov = provenance_from_markdown(text)
    settings_line = re.search(r"^(channels=.*)$", text, re.MULTILINE).group(1)
    settings = {}
    for item in settings_line.split(", "):
        key, value = item.split("=", 1)
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return {**prov, "settings": settings}


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
            for key in ("forward_ms", "forward_backward_ms", "peak_mb", "gflop", "roofline_ms"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


def attention_targets(rows: list[dict], memory_limit_mb: float | None = None) -> list[dict]:
    """The issue's targets, computed from one run's 2D rows (ratios measured side by side).

    Where the baseline ran out of memory under the cap, its memory ratio is reported as the lower bound
    cap / SEMA's peak.
    """

    def find(mode, size):
        for row in rows:
            if row["dims"] == 2 and row["mode"] == mode and row["size"] == size:
                return row
        return None

    def get(mode, size, key="forward_backward_ms"):
        row = find(mode, size)
        return row.get(key) if row is not None and row["status"] == "ok" else None

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    def memory_ratio(baseline):
        row, sema = find(baseline, 224), get("sema", 224, "peak_mb")
        if row is not None and row["status"] in ("oom", "skipped") and memory_limit_mb and sema:
            return memory_limit_mb / sema, True
        return ratio(get(baseline, 224, "peak_mb"), sema), False

    full_memory, full_bound = memory_ratio("full")
    materialized_memory, materialized_bound = memory_ratio("full-materialized")
    targets = [
        ("SEMA time 448^2 / 224^2 (linear growth)", ratio(get("sema", 448), get("sema", 224)), "<=", 4.5, False),
        ("full / SEMA time at 224^2", ratio(get("full", 224), get("sema", 224)), ">=", 50, False),
        ("full / SEMA peak memory at 224^2", full_memory, ">=", 10, full_bound),
        ("full-materialized / SEMA peak memory at 224^2", materialized_memory, ">=", 10, materialized_bound),
        ("SEMA / window time at 224^2 (mean term cost)", ratio(get("sema", 224), get("window", 224)), "<=", 1.10,
         False),
        ("window-sdpa / SEMA time at 224^2", ratio(get("window-sdpa", 224), get("sema", 224)), ">=", 2, False),
        ("SEMA time / its matmul roofline at 224^2", ratio(get("sema", 224), get("sema", 224, "roofline_ms")),
         "<=", 3, False),
    ]
    out = []
    for name, value, op, bound, lower_bound in targets:
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": f"{name} {op} {bound}", "value": value, "met": met, "lower_bound": lower_bound})
    return out


def attention_markdown(rows: list[dict], prov: dict) -> str:
    """Markdown report: provenance, the targets, and the full table."""
    lines = ["# Attention benchmark", "", provenance_markdown(prov), ""]
    settings = prov.get("settings", {})
    if settings:
        lines += [", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    lines += ["![attention](attention.png)", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for t in attention_targets(rows, settings.get("memory_limit_gb", 0) * 1024 or None):
        value = "n/a (not measured)" if t["value"] is None else f"{t['value']:.2f}"
        if t["lower_bound"]:
            value = f"> {value} (out of memory at the {settings['memory_limit_gb']} GB cap)"
        met = {True: "yes", False: "no", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {value} | {met} |")
    lines += ["", "Roofline: the time the forward+backward's matrix products (GFLOP, `matmul_gflop`) would take "
              f"at the rate of one {MATMUL_SIDE}x{MATMUL_SIDE} fp32 matrix product measured in the same run "
              f"({settings.get('matmul_gflops')} GFLOP/s).",
              "", "| dims | grid | tokens | mode | status | forward ms | fwd+bwd ms | peak MB | GFLOP | roofline ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        grid = "x".join([str(row["size"])] * row["dims"])

        def num(key, row=row):
            value = row.get(key)
            return f"{value:.1f}" if isinstance(value, float) and not math.isnan(value) else "-"

        lines.append(f"| {row['dims']}D | {grid} | {row['tokens']} | {row['mode']} | {row['status']} | "
                     f"{num('forward_ms')} | {num('forward_backward_ms')} | {num('peak_mb')} | {num('gflop')} | "
                     f"{num('roofline_ms')} |")
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

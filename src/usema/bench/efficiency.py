"""`usema bench efficiency`: parameters, FLOPs, latency, training-step time and peak memory of every model.

For each model, 2D and 3D input sizes, batch sizes and precisions (fp32, bf16 autocast), one measurement runs
in a fresh process (usema.bench.measure) under time and memory limits: a model that runs out of either is
recorded as "oom" / "timeout", and the larger inputs after it as "skipped".
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from usema.bench.machine import provenance, provenance_markdown
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
from usema.errors import UsemaError
from usema.utils.atomic import atomic_path, atomic_write_text

DEFAULT_SIZES = {2: [128, 256, 512, 1024], 3: [32, 64, 96, 128]}
PRECISIONS = ("fp32", "bf16")
FIELDS = ["model", "dims", "size", "voxels", "batch", "precision", "status", "params", "gflops", "forward_ms",
          "train_step_ms", "forward_peak_mb", "train_peak_mb", "repeats", "note"]
FAILED = ("oom", "timeout")
# (dims, size) at which USEMA's training step should be at least 2x faster than the transformer baselines'
SPEED_TARGETS = [(2, 512), (2, 1024), (3, 96)]
TRANSFORMER_BASELINES = ("unetr", "swinunetr")
# imported once by the fork server rather than by every measurement (missing optional ones are passed over)
PRELOAD = ("usema.bench.efficiency", "usema.models.registry", "usema.models.usema", "usema.models.baselines",
           "torch.utils.flop_counter", "monai.networks.nets", "dynamic_network_architectures.architectures.unet",
           "mambapy.mamba")


def model_overrides(name: str, shape: tuple[int, ...]) -> dict:
    """Settings a preset needs from the input: the patch size for networks whose input size is fixed (UNETR)."""
    from usema.models.registry import load_presets

    return {"patch_size": list(shape)} if load_presets()[name].get("needs_patch_size") else {}


def measure_model(spec: dict) -> dict:
    """Runs in the child process: build the model, then measure one cold forward (peak memory and FLOPs under
    the FLOP counter) and one cold training step (peak memory), then time warm repeats of both."""
    from torch.utils.flop_counter import FlopCounterMode

    from usema.models.registry import build_model
    from usema.models.summary import count_parameters

    device = torch.device(spec["device"])
    keep_freed_memory()
    torch.manual_seed(0)
    shape = (spec["size"],) * spec["dims"]
    reset_peak_memory(device)
    base = memory_in_use(device)
    model = build_model(spec["model"], spec["dims"], spec["in_channels"], spec["num_classes"],
                        **model_overrides(spec["model"], shape)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    limit_memory(device, spec.get("memory_limit_bytes"))
    x = torch.randn(spec["batch"], spec["in_channels"], *shape, device=device)
    target = torch.randint(0, spec["num_classes"], (spec["batch"], *shape), device=device)
    bf16 = spec["precision"] == "bf16"

    def forward():
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), target)
        loss.backward()
        optimizer.step()

    def timed(step) -> float:
        start = time.perf_counter()
        step()
        sync(device)
        return time.perf_counter() - start

    reset_peak_memory(device)
    with FlopCounterMode(display=False) as counter:  # slows this pass down: its time is not reported
        forward()
    sync(device)
    forward_peak = peak_memory(device) - base
    reset_peak_memory(device)
    first = timed(train_step)
    train_peak = peak_memory(device) - base
    # fewer repeats when one step already takes a large part of the time limit
    repeats = spec["repeats"] if first * (2 * spec["repeats"] + 1) < spec["time_limit_s"] * 0.7 else 1
    train_times = [timed(train_step) for _ in range(repeats)]
    forward_times = [timed(forward) for _ in range(repeats)]
    return {
        "status": "ok",
        "params": count_parameters(model),
        "gflops": counter.get_total_flops() / spec["batch"] / 1e9,
        "forward_ms": 1000 * statistics.median(forward_times),
        "train_step_ms": 1000 * statistics.median(train_times),
        "forward_peak_mb": forward_peak / 2**20,
        "train_peak_mb": train_peak / 2**20,
        "repeats": repeats,
    }


def run_efficiency_benchmark(
    output: str | Path,
    models=None,
    dims=(2, 3),
    sizes_2d=None,
    sizes_3d=None,
    batch_sizes=(1, 2),
    precisions=PRECISIONS,
    in_channels: int = 1,
    num_classes: int = 3,
    repeats: int = 3,
    time_limit_s: float = 300.0,
    memory_limit_gb: float | None = None,
    device: str = "auto",
) -> list[dict]:
    """Run the benchmark; write efficiency.csv, efficiency.png and efficiency.md under `output`; return rows."""
    from usema.models.registry import list_models
    from usema.utils.device import resolve_device

    output = Path(output)
    dev = resolve_device(device)
    models = list(models or list_models())
    for name, given, allowed in [("models", models, list_models()), ("precisions", precisions, PRECISIONS),
                                 ("dims", dims, (2, 3))]:
        unknown = [str(v) for v in given if v not in allowed]
        if unknown:
            raise UsemaError(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(map(str, allowed))}")
    if memory_limit_gb is None and dev.type == "cpu":
        memory_limit_gb = default_memory_limit_gb()
    sizes = {2: sizes_2d or DEFAULT_SIZES[2], 3: sizes_3d or DEFAULT_SIZES[3]}
    rows = []
    for d in dims:
        for name in models:
            for precision in precisions:
                failures: list[tuple[int, int, str]] = []  # (batch, size, status) of oom/timeout
                for batch in sorted(batch_sizes):
                    for size in sorted(sizes[d]):
                        row = {"model": name, "dims": d, "size": size, "voxels": size**d, "batch": batch,
                               "precision": precision, "repeats": 0}
                        earlier = [f for f in failures if f[0] <= batch and f[1] <= size]
                        if earlier:
                            b, s, status = earlier[0]
                            row.update(status="skipped", note=f"{status} at size {s}, batch {b}")
                        else:
                            spec = dict(model=name, dims=d, size=size, batch=batch, precision=precision,
                                        in_channels=in_channels, num_classes=num_classes, repeats=repeats,
                                        time_limit_s=time_limit_s, device=str(dev),
                                        memory_limit_bytes=int(memory_limit_gb * 2**30) if memory_limit_gb else None)
                            row.update(run_isolated(measure_model, spec, time_limit_s, preload=PRELOAD))
                            if row["status"] in FAILED:
                                failures.append((batch, size, row["status"]))
                        rows.append(row)
                        print(_format_row(row), flush=True)
    _fill_model_costs(rows)
    prov = provenance(dev)
    prov["settings"] = dict(in_channels=in_channels, num_classes=num_classes, repeats=repeats,
                            time_limit_s=time_limit_s, memory_limit_gb=memory_limit_gb, device=str(dev),
                            optimizer="AdamW", loss="cross-entropy")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "efficiency.csv", efficiency_csv(rows))
    plot_efficiency(rows, output / "efficiency.png")
    atomic_write_text(output / "efficiency.md", efficiency_markdown(rows, prov))
    print(f"wrote {output / 'efficiency.csv'}, {output / 'efficiency.png'}, {output / 'efficiency.md'}")
    return rows


def _fill_model_costs(rows: list[dict]) -> None:
    """Parameters and FLOPs per sample depend on the model and input size only: copy them to the rows that
    failed or were skipped, from a measured row of the same model and size."""
    known = {(r["model"], r["dims"], r["size"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        source = known.get((row["model"], row["dims"], row["size"]))
        if source is not None:
            row.setdefault("params", source["params"])
            row.setdefault("gflops", source["gflops"])


def _grid(row: dict) -> str:
    return "x".join([str(row["size"])] * row["dims"])


def _format_row(row: dict) -> str:
    head = f"{row['model']:<14} {row['dims']}D {_grid(row):>14} b{row['batch']} {row['precision']:<4}"
    if row["status"] != "ok":
        return f"{head} {row['status']} {row.get('note', '')}"
    return (f"{head} fwd {row['forward_ms']:9.1f} ms  train {row['train_step_ms']:9.1f} ms  "
            f"peak {row['train_peak_mb']:8.1f} MB  {row['gflops']:8.1f} GFLOP")


def efficiency_csv(rows: list[dict]) -> str:
    """The rows as CSV text (columns FIELDS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_efficiency_csv(path: str | Path) -> list[dict]:
    """Rows of efficiency.csv with numbers parsed (empty cells become None)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("dims", "size", "voxels", "batch", "repeats", "params"):
                row[key] = int(row[key]) if row.get(key) not in (None, "") else None
            for key in ("gflops", "forward_ms", "train_step_ms", "forward_peak_mb", "train_peak_mb"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


def efficiency_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, from one run's batch-1 rows, for each precision measured.

    Each target: {"target", "value" (a ratio, or None), "detail", "met" (True/False, None if not measured)}.
    """
    status = {(r["model"], r["dims"], r["size"], r["precision"]): r for r in rows if r["batch"] == 1}
    targets = []
    for precision in [p for p in PRECISIONS if any(r["precision"] == p for r in rows)]:
        for d, size in SPEED_TARGETS:
            grid = "x".join([str(size)] * d)
            ours = status.get(("usema", d, size, precision))
            for baseline in TRANSFORMER_BASELINES:
                other = status.get((baseline, d, size, precision))
                name = f"USEMA training step >= 2x faster than {baseline} at {grid} ({precision}, batch 1)"
                value, met, detail = None, None, "not measured"
                if ours and other and ours["status"] == "ok":
                    if other["status"] == "ok":
                        value = other["train_step_ms"] / ours["train_step_ms"]
                        met, detail = value >= 2, f"{value:.2f}x"
                    elif other["status"] in (*FAILED, "skipped"):
                        met, detail = True, f"{baseline} {other['status']}, usema runs"
                elif ours and ours["status"] != "ok":
                    met, detail = False, f"usema {ours['status']}"
                targets.append({"target": name, "value": value, "detail": detail, "met": met})
        for d in sorted({r["dims"] for r in rows}):
            runs = [(r["size"], r["status"]) for r in rows
                    if r["model"] == "usema" and r["dims"] == d and r["precision"] == precision and r["batch"] == 1]
            full = {r["size"]: r["status"] for r in rows if r["model"] == "usema-full" and r["dims"] == d
                    and r["precision"] == precision and r["batch"] == 1}
            name = f"usema-full runs out of memory or time where usema runs ({d}D, {precision}, batch 1)"
            both = [(s, full[s]) for s, st in runs if st == "ok" and s in full]
            if not both:
                targets.append({"target": name, "value": None, "detail": "not measured", "met": None})
                continue
            where = [s for s, st in both if st in (*FAILED, "skipped")]
            detail = (f"usema-full fails at {', '.join('x'.join([str(s)] * d) for s in where)}" if where
                      else "usema-full ran at every size usema ran")
            targets.append({"target": name, "value": None, "detail": detail, "met": bool(where)})
    return targets


def _num(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float | int) and not math.isnan(value) else "-"


def efficiency_markdown(rows: list[dict], prov: dict) -> str:
    """Markdown report: provenance, settings, the targets and the full table."""
    lines = ["# Efficiency benchmark", "", provenance_markdown(prov), ""]
    settings = prov.get("settings", {})
    if settings:
        lines += [", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    lines += ["FLOPs: forward pass per sample, matrix products and convolutions only (torch FlopCounterMode: "
              "element-wise work such as Mamba's scan is not counted). Peak memory: above the process's "
              "memory before the model was built (CPU: resident size; GPU: allocated tensors).", ""]
    lines += ["![efficiency](efficiency.png)", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in efficiency_targets(rows):
        met = {True: "yes", False: "no", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['detail']} | {met} |")
    lines += ["", "## Measurements", "",
              "| model | dims | input | batch | precision | status | params (M) | GFLOPs/sample | forward ms | "
              "train step ms | forward peak MB | train peak MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        params = row.get("params")
        lines.append(
            f"| {row['model']} | {row['dims']}D | {_grid(row)} | {row['batch']} | {row['precision']} | "
            f"{row['status']} | {_num(params / 1e6, 2) if params else '-'} | {_num(row.get('gflops'))} | "
            f"{_num(row.get('forward_ms'))} | {_num(row.get('train_step_ms'))} | "
            f"{_num(row.get('forward_peak_mb'))} | {_num(row.get('train_peak_mb'))} |")
    return "\n".join(lines) + "\n"


PLOTTED = [("train_step_ms", "training step (ms)"), ("forward_ms", "forward (ms)"),
           ("train_peak_mb", "training peak memory (MB)"), ("gflops", "GFLOPs per sample (forward)")]


def plot_efficiency(rows: list[dict], path: Path) -> None:
    """Log-log plots of each cost against the pixel/voxel count: one row per (dims, precision), one line per
    model (solid: batch 1, dashed: larger batches)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dims"], r["precision"]) for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    palette = plt.get_cmap("tab20")
    colors = {m: palette((2 * i) % 20 + (2 * i) // 20 % 2) for i, m in enumerate(models)}  # distinct first
    fig, axes = plt.subplots(len(panels), len(PLOTTED), figsize=(5 * len(PLOTTED), 4 * len(panels)),
                             squeeze=False)
    for i, (d, precision) in enumerate(panels):
        for j, (key, label) in enumerate(PLOTTED):
            ax = axes[i][j]
            for model in models:
                for batch in sorted({r["batch"] for r in rows}):
                    points = sorted((r["voxels"], r[key]) for r in rows
                                    if (r["dims"], r["precision"], r["model"], r["batch"]) == (d, precision, model, batch)
                                    and r["status"] == "ok" and r.get(key) and r[key] > 0)
                    if points:
                        ax.plot(*zip(*points), marker="o", linestyle="-" if batch == 1 else "--",
                                color=colors[model], label=model if batch == min(r["batch"] for r in rows) else None)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("pixels" if d == 2 else "voxels")
            ax.set_ylabel(label)
            ax.set_title(f"{d}D, {precision}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("solid: batch 1; dashed: larger batches", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

"""`usema bench efficiency`: parameters, FLOPs, latency, training-step time and peak memory of every model.

For each model, 2D and 3D input sizes, batch sizes and precisions (fp32, bf16 autocast), one measurement runs
in a fresh process (usema.bench.measure) under time and memory limits: a model that runs out of either is
recorded as "oom" / "timeout", and the larger inputs after it as "skipped". Every network is built as a plan
would build it for a patch of that size: the planner's strides for the conv UNets, its SEMA windows for USEMA.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from usema.bench.efficiency_report import (
    FAILED,
    PRECISIONS,
    efficiency_csv,
    efficiency_markdown,
    fill_model_costs,
    format_row,
    plot_efficiency,
)
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
from usema.bench.variants import expand_placements
from usema.errors import UsemaError
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance

DEFAULT_SIZES = {2: [128, 256, 512, 1024], 3: [32, 64, 96, 128]}
# imported once by the fork server rather than by every measurement (missing optional ones are passed over)
PRELOAD = ("usema.bench.efficiency", "usema.models.registry", "usema.models.usema", "usema.models.baselines",
           "torch.utils.flop_counter", "monai.networks.nets", "dynamic_network_architectures.architectures.unet",
           "mambapy.mamba")


def parse_size(text: str | int, dims: int) -> tuple[int, ...]:
    """A size given as one side (96) or per axis (40x56x40)."""
    parts = [int(p) for p in str(text).lower().split("x")]
    if len(parts) == 1:
        parts *= dims
    if len(parts) != dims or min(parts) < 1:
        raise UsemaError(f"size {text!r} is not {dims} positive sides (e.g. 96 or {'x'.join(['40'] * dims)})")
    return tuple(parts)


def grid_name(shape: tuple[int, ...]) -> str | int:
    """The size as the reports name it: one side for a cube, the sides joined by x otherwise."""
    return shape[0] if len(set(shape)) == 1 else "x".join(map(str, shape))


def measure_model(spec: dict) -> dict:
    """Runs in the child process: build the model, then measure one cold forward (peak memory and FLOPs under
    the FLOP counter) and one cold training step (peak memory), then time warm repeats of both."""
    from torch.utils.flop_counter import FlopCounterMode

    from usema.models import NetworkSpec
    from usema.models.summary import count_parameters

    device = torch.device(spec["device"])
    keep_freed_memory()
    torch.manual_seed(0)
    shape = tuple(spec["shape"])
    reset_peak_memory(device)
    base = memory_in_use(device)
    model = NetworkSpec.from_dict(spec["network"]).build().to(device)
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
    network_settings: dict[str, dict[str, Any]] | None = None,
    placements: list[str] | None = None,
    network: dict[str, Any] | None = None,
) -> list[dict]:
    """Run the benchmark; write efficiency.csv, efficiency.png and efficiency.md under `output`; return rows.

    Sizes are sides (96) or per-axis shapes (40x56x40). `network_settings` maps a model to network settings
    given on top of the planned ones (e.g. the compact widths of the CPU runs); the report then holds the
    compact targets. `placements`: time every SEMA preset once per placement of its SEMA blocks (rows
    "usema@deepest-2"). `network` (deprecated, for one release): the same settings for every model.
    """
    from usema.models import list_models
    from usema.planning import network_for_patch
    from usema.utils.device import resolve_device

    output = Path(output)
    dev = resolve_device(device)
    models = list(models or list_models())
    variants = expand_placements(models, placements)
    if network is not None:
        warnings.warn("run_efficiency_benchmark(network=...) is deprecated: use network_settings={MODEL: ...}",
                      FutureWarning, stacklevel=2)
    per_model = {model: {**(network or {}), **(network_settings or {}).get(model, {})} for model in models}
    unknown = sorted(set(network_settings or {}) - set(models))
    if unknown:
        raise UsemaError(f"--network-settings names {', '.join(unknown)}, which this run does not measure")
    for name, given, allowed in [("precisions", precisions, PRECISIONS), ("dims", dims, (2, 3))]:
        unknown = [str(v) for v in given if v not in allowed]
        if unknown:
            raise UsemaError(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(map(str, allowed))}")
    shapes = {d: sorted((parse_size(s, d) for s in ({2: sizes_2d, 3: sizes_3d}[d] or DEFAULT_SIZES[d])),
                        key=math.prod) for d in dims}
    # every network as a plan for a patch of that size (1 mm spacing) builds it; bad settings fail before measuring
    planned = {(v.label, d, shape): network_for_patch(v.model, shape, in_channels, num_classes,
                                                      {**per_model[v.model], **v.settings})
               for d in dims for v in variants for shape in shapes[d]}
    if memory_limit_gb is None and dev.type == "cpu":
        memory_limit_gb = default_memory_limit_gb()
    rows = []
    for d in dims:
        for variant in variants:
            name = variant.label
            for precision in precisions:
                failures: list[tuple[int, int, str]] = []  # (batch, voxels, status) of oom/timeout
                for batch in sorted(batch_sizes):
                    for shape in shapes[d]:
                        voxels = math.prod(shape)
                        row = {"model": name, "dims": d, "size": grid_name(shape), "voxels": voxels,
                               "batch": batch, "precision": precision, "repeats": 0}
                        earlier = [f for f in failures if f[0] <= batch and f[1] <= voxels]
                        if earlier:
                            b, v, status = earlier[0]
                            row.update(status="skipped", note=f"{status} at {v} voxels, batch {b}")
                        else:
                            spec = dict(model=variant.model, dims=d, shape=list(shape), batch=batch,
                                        precision=precision,
                                        in_channels=in_channels, num_classes=num_classes, repeats=repeats,
                                        time_limit_s=time_limit_s, device=str(dev),
                                        network=planned[(name, d, shape)].to_dict(),
                                        memory_limit_bytes=int(memory_limit_gb * 2**30) if memory_limit_gb else None)
                            row.update(run_isolated(measure_model, spec, time_limit_s, preload=PRELOAD))
                            if row["status"] in FAILED:
                                failures.append((batch, voxels, row["status"]))
                        rows.append(row)
                        print(format_row(row), flush=True)
    fill_model_costs(rows)
    prov = provenance(dev)
    prov["settings"] = dict(in_channels=in_channels, num_classes=num_classes, repeats=repeats,
                            time_limit_s=time_limit_s, memory_limit_gb=memory_limit_gb, device=str(dev),
                            optimizer="AdamW", loss="cross-entropy")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "efficiency.csv", efficiency_csv(rows))
    plot_efficiency(rows, output / "efficiency.png")
    atomic_write_text(output / "efficiency.md", efficiency_markdown(rows, prov, per_model))
    print(f"wrote {output / 'efficiency.csv'}, {output / 'efficiency.png'}, {output / 'efficiency.md'}")
    return rows

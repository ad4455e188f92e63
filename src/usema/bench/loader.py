"""`usema bench loader`: how fast the training loader samples and augments patches with 0, 2 and N worker
processes, and how much the training process's peak memory grows with the dataset.

Both run on generated phantoms (192x192x160 by default), planned and preprocessed as `usema train` does.
Throughput: the loader of the largest dataset, timed from its first batch (worker start-up excluded). Memory:
`usema train` (a compact network, loader workers off so that every patch passes through the one process, one
validation case) in a fresh process per dataset size; its peak resident size (VmHWM) is reported, and the
growth from the smallest to the largest dataset. Preprocessed cases are streamed from disk, so the growth
should stay far below the data added.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usema.errors import UsemaError
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance, provenance_markdown

DEFAULT_SHAPE = (192, 192, 160)
DEFAULT_CASES = (4, 24)
# The network of the memory runs: small, so that the data, not the activations, decide what grows.
COMPACT_NETWORK = {"base_features": 4, "max_features": 16, "blocks_per_stage": 1}
MEMORY_MODEL = "usema-nosema"
MEMORY_FOLDS = 4
# The target: the peak may grow by less than this from 4 to 24 volumes of 192x192x160.
GROWTH_TARGET_MB = 150.0
FIELDS = [
    "measurement",
    "cases",
    "workers",
    "batch_size",
    "patch_size",
    "batches",
    "samples_per_second",
    "peak_rss_mb",
    "status",
    "note",
]


def _prepared_run(data: Path, run: Path, num_cases: int, patch_size: Sequence[int] | None):
    """The plan of the first `num_cases` phantoms in `run` (made once), preprocessed."""
    from usema.data import load_dataset
    from usema.planning import PLANS_NAME, Plans
    from usema.planning.planner import plan_dataset  # the planner itself: the benchmark fixes every choice
    from usema.preprocessing import preprocess_dataset

    if (run / PLANS_NAME).is_file():
        plans = Plans.load(run)
    else:
        case_ids = [case.case_id for case in load_dataset(data).cases[:num_cases]]
        # one batch size for every dataset size (the planner's grows with the dataset): only the data differ
        plans = plan_dataset(
            data,
            run,
            model=MEMORY_MODEL,
            device="cpu",
            case_ids=case_ids,
            batch_size=2,
            network_settings=COMPACT_NETWORK,
            num_workers=0,
            val_max_cases=1,
            patch_size=list(patch_size) if patch_size else None,
        )
    preprocess_dataset(plans, run)
    return plans


def loader_throughput(run: Path, workers: int, batches: int) -> dict[str, Any]:
    """Samples per second of the training loader over every preprocessed case of `run` with `workers` worker
    processes, timed over `batches` batches after the first."""
    import torch

    from usema.planning import Plans

    # the training loader itself is what this benchmark measures
    from usema.training.batches import EpochBatches, epoch_loader, load_training_cases
    from usema.training.patches import PatchSampler

    plans = Plans.load(run)
    settings = plans.training
    sampler = PatchSampler(
        load_training_cases(run, plans.dataset.case_ids), plans.patch_size, settings.oversample_foreground
    )
    loader = epoch_loader(
        EpochBatches(sampler, plans.batch_size, batches + 1, seed=0, rank=0, epoch=1), workers
    )
    stream = iter(loader)
    next(stream)  # the workers have started and the first batch is out
    started = time.perf_counter()
    samples = sum(int(images.shape[0]) for images, _ in stream)
    seconds = time.perf_counter() - started
    del stream, loader
    return {
        "measurement": "throughput",
        "workers": workers,
        "batch_size": plans.batch_size,
        "patch_size": "x".join(map(str, plans.patch_size)),
        "batches": batches,
        "samples_per_second": samples / seconds,
        "torch_threads": torch.get_num_threads(),
        "status": "ok",
    }


def training_peak_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: `usema train` on the prepared run `spec["run"]`; its peak resident size."""
    import usema
    from usema.bench.measure import vm_kb

    started = time.perf_counter()
    usema.train(
        spec["data"],
        spec["run"],
        fold=0,
        folds=MEMORY_FOLDS,
        epochs=1,
        iters_per_epoch=spec["iterations"],
        device="cpu",
        overwrite=True,
    )
    return {"status": "ok", "peak_rss_mb": vm_kb("VmHWM:") / 1024, "seconds": time.perf_counter() - started}


def run_loader_benchmark(
    output: str | Path = "benchmarks/loader",
    work_dir: str | Path = "runs/bench/loader",
    shape: Sequence[int] = DEFAULT_SHAPE,
    cases: Sequence[int] = DEFAULT_CASES,
    workers: Sequence[int] | None = None,
    batches: int = 20,
    iterations: int = 24,
    patch_size: Sequence[int] | None = None,
    time_limit_s: float = 1800.0,
) -> list[dict[str, Any]]:
    """Measure loader throughput (with 0, 2 and the planned number of workers unless `workers` says) on the
    largest of `cases` phantom datasets of `shape`, and the training process's peak memory on each; write
    loader.csv and loader.md under `output`. Data and runs go to `work_dir` (made once, reused)."""
    from usema.bench.measure import run_isolated
    from usema.data import make_phantom_dataset
    from usema.planning.settings import planned_loader_workers  # the worker count a plan trains with

    counts = sorted({int(c) for c in cases})
    if not counts or counts[0] < MEMORY_FOLDS:
        raise UsemaError(f"--cases: every dataset needs at least {MEMORY_FOLDS} cases (one per fold)")
    workers = sorted({0, 2, planned_loader_workers()} if workers is None else {int(w) for w in workers})
    if workers[0] < 0:
        raise UsemaError("--workers: worker counts are 0 or more")
    work_dir = Path(work_dir)
    shape = tuple(int(s) for s in shape)
    data = make_phantom_dataset(
        work_dir / f"phantoms_{'x'.join(map(str, shape))}_{counts[-1]}", 3, counts[-1], shape, seed=0
    )
    runs = {count: work_dir / f"run_{count}" for count in counts}
    plans = {count: _prepared_run(data, runs[count], count, patch_size) for count in counts}
    rows: list[dict[str, Any]] = []
    for count in workers:
        row = {**loader_throughput(runs[counts[-1]], count, batches), "cases": counts[-1]}
        rows.append(row)
        print(f"loader, {count} workers: {row['samples_per_second']:.2f} samples/s", flush=True)
    for count in counts:
        spec = {"data": str(data), "run": str(runs[count]), "iterations": iterations}
        result = run_isolated(
            training_peak_memory, spec, time_limit_s, preload=("usema.training.run_training",)
        )
        rows.append(
            {
                "measurement": "training_memory",
                "cases": count,
                "workers": 0,
                "batch_size": plans[count].batch_size,
                "batches": iterations,
                "patch_size": "x".join(map(str, plans[count].patch_size)),
                **result,
            }
        )
        print(
            f"training, {count} cases: peak {result.get('peak_rss_mb', float('nan')):.0f} MB "
            f"({result['status']})",
            flush=True,
        )
    prov = provenance()
    prov["settings"] = {
        "shape": list(shape),
        "cases": counts,
        "workers": workers,
        "batches": batches,
        "iterations": iterations,
    }
    output = Path(output)
    atomic_write_text(output / "loader.csv", loader_csv(rows))
    atomic_write_text(output / "loader.md", loader_markdown(rows, prov, shape))
    print(f"wrote {output / 'loader.csv'}, {output / 'loader.md'}")
    return rows


def memory_growth(rows: Sequence[dict[str, Any]]) -> tuple[int, int, float] | None:
    """(fewest cases, most cases, peak MB growth between them) of the memory rows; None without two."""
    measured = sorted(
        (int(r["cases"]), float(r["peak_rss_mb"]))
        for r in rows
        if r["measurement"] == "training_memory" and r.get("status") == "ok"
    )
    if len(measured) < 2:
        return None
    return measured[0][0], measured[-1][0], measured[-1][1] - measured[0][1]


def loader_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV (FIELDS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def loader_markdown(rows: Sequence[dict[str, Any]], prov: dict, shape: Sequence[int]) -> str:
    """loader.md: throughput per worker count, peak memory per dataset size and its growth, provenance."""
    size = "x".join(map(str, shape))
    lines = [
        "# Training data loader",
        "",
        provenance_markdown(prov),
        "",
        f"Generated phantoms of {size} voxels, preprocessed once and read from disk patch by patch.",
        "",
        "| workers | cases | batch | patch | samples/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["measurement"] == "throughput":
            lines.append(
                f"| {r['workers']} | {r['cases']} | {r['batch_size']} | {r['patch_size']} | "
                f"{r['samples_per_second']:.2f} |"
            )
    lines += [
        "",
        f"Peak resident memory of `usema train` ({MEMORY_MODEL}, compact widths, {MEMORY_FOLDS} folds, "
        "one epoch, one validation case, no loader workers):",
        "",
        "| cases | iterations | patch | peak MB | status |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["measurement"] == "training_memory":
            peak = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
            lines.append(
                f"| {r['cases']} | {r['batches']} | {r['patch_size']} | {peak} | "
                f"{r['status']}{' ' + r['note'] if r.get('note') else ''} |"
            )
    growth = memory_growth(rows)
    if growth is not None:
        few, many, grown = growth
        verdict = "met" if grown < GROWTH_TARGET_MB else "not met"
        lines += [
            "",
            f"From {few} to {many} cases the peak grows by {grown:.0f} MB (target: under "
            f"{GROWTH_TARGET_MB:.0f} MB from 4 to 24 volumes of 192x192x160: {verdict}).",
        ]
    return "\n".join(lines) + "\n"

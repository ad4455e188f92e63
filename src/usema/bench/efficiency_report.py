"""The efficiency benchmark's files: CSV, the Markdown report with the issue's targets, and the plot."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from usema.utils.atomic import atomic_path
from usema.utils.provenance import provenance_markdown

FIELDS = ["model", "dims", "size", "voxels", "batch", "precision", "status", "params", "gflops", "forward_ms",
          "train_step_ms", "forward_peak_mb", "train_peak_mb", "repeats", "note"]
FAILED = ("oom", "timeout")
PRECISIONS = ("fp32", "bf16")
# USEMA's training step against its no-SEMA control: at most this many times as long (compact CPU networks
# at the sizes CPU runs train on; preset widths at 512^2 and 96^3)
CONTROL_RATIO = {"compact": 1.15, "preset": 1.2}
PRESET_CONTROL_SIZES = [(2, "512"), (3, "96")]
# (baseline, dims, size) at which USEMA's training step should be faster than the transformer baseline's
FASTER_THAN = [("swinunetr", 2, "512"), ("swinunetr", 2, "1024"), ("swinunetr", 3, "96"),
               ("unetr", 2, "512"), ("unetr", 2, "1024")]


def fill_model_costs(rows: list[dict]) -> None:
    """Parameters and FLOPs per sample depend on the model and input size only: copy them to the rows that
    failed or were skipped, from a measured row of the same model and size."""
    known = {(r["model"], r["dims"], r["size"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        source = known.get((row["model"], row["dims"], row["size"]))
        if source is not None:
            row.setdefault("params", source["params"])
            row.setdefault("gflops", source["gflops"])


def _grid(row: dict) -> str:
    size = str(row["size"])
    return size if "x" in size else "x".join([size] * row["dims"])


def format_row(row: dict) -> str:
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
            for key in ("dims", "voxels", "batch", "repeats", "params"):
                row[key] = int(row[key]) if row.get(key) not in (None, "") else None
            row["size"] = int(row["size"]) if row["size"].isdigit() else row["size"]
            for key in ("gflops", "forward_ms", "train_step_ms", "forward_peak_mb", "train_peak_mb"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


def efficiency_targets(rows: list[dict], compact: bool = False) -> list[dict]:
    """The issue's targets, from one run's rows, for each precision measured.

    USEMA's training step against usema-nosema (at every size both ran, at most 1.15x for `compact` networks;
    at preset widths at most 1.2x at 512^2 and 96^3, batch 1), and faster than the transformer baselines at
    the sizes of FASTER_THAN (batch 1; a baseline that runs out of memory or time where USEMA runs counts).
    Each target: {"target", "value" (a ratio, or None), "detail", "met" (True/False, None if not measured)}.
    """
    index = {(r["model"], r["dims"], str(r["size"]), r["batch"], r["precision"]): r for r in rows}
    targets = []
    for precision in [p for p in PRECISIONS if any(r["precision"] == p for r in rows)]:
        limit = CONTROL_RATIO["compact" if compact else "preset"]
        labels = list(dict.fromkeys(r["model"] for r in rows if r["model"] == "usema"
                                    or r["model"].startswith("usema@")))  # the preset, or each placement
        for label in labels:
            pairs = sorted({(r["dims"], str(r["size"]), r["batch"]) for r in rows if r["model"] == label},
                           key=lambda k: (k[0], k[2], k[1]))
            if not compact:
                pairs = [(d, s, 1) for d, s in PRESET_CONTROL_SIZES]
            for d, size, batch in pairs:
                grid = _grid({"size": size, "dims": d})
                name = f"{label} training step <= {limit}x usema-nosema at {batch} x {grid} ({precision})"
                targets.append(_ratio_target(name, index.get((label, d, size, batch, precision)),
                                             index.get(("usema-nosema", d, size, batch, precision)), limit))
        for baseline, d, size in FASTER_THAN:
            grid = _grid({"size": size, "dims": d})
            name = f"USEMA training step faster than {baseline} at {grid} ({precision}, batch 1)"
            ours, other = index.get(("usema", d, size, 1, precision)), index.get((baseline, d, size, 1, precision))
            target = _ratio_target(name, ours, other, 1.0)
            if ours and ours["status"] == "ok" and other and other["status"] in (*FAILED, "skipped"):
                target.update(met=True, detail=f"{baseline} {other['status']}, usema runs")
            targets.append(target)
    return targets


def _ratio_target(name: str, ours: dict | None, other: dict | None, limit: float) -> dict:
    """USEMA's step time over the other model's, met where at most `limit`."""
    target = {"target": name, "value": None, "detail": "not measured", "met": None}
    if ours and ours["status"] != "ok":
        target.update(met=False, detail=f"usema {ours['status']}")
    elif ours and other and other["status"] == "ok":
        value = ours["train_step_ms"] / other["train_step_ms"]
        target.update(value=value, met=value <= limit, detail=f"{value:.2f}x ({ours['train_step_ms']:.0f} "
                      f"against {other['train_step_ms']:.0f} ms)")
    return target


def _num(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float | int) and not math.isnan(value) else "-"


def _given_settings(per_model: dict[str, dict]) -> str:
    """The end of the report's sentence on the networks: the settings given, for every model or per model."""
    given = {model: settings for model, settings in per_model.items() if settings}
    if not given:
        return "."
    if len(given) == len(per_model) and all(settings == next(iter(given.values())) for settings in given.values()):
        return f"; with {next(iter(given.values()))} for every model."
    return "; with " + "; ".join(f"{settings} for {model}" for model, settings in given.items()) + "."


def efficiency_markdown(rows: list[dict], prov: dict, network_settings: dict[str, dict] | None = None) -> str:
    """Markdown report: provenance, settings, the targets and the full table. `network_settings`: those given
    per model on top of the planned ones (compact networks when any are given)."""
    lines = ["# Efficiency benchmark", "", provenance_markdown(prov), ""]
    settings = prov.get("settings", {})
    if settings:
        lines += [", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    lines += ["Networks as a plan builds them for a patch of each size: the planner's strides for the conv UNets "
              "and its SEMA windows for USEMA" + _given_settings(network_settings or {}), ""]
    lines += ["FLOPs: forward pass per sample, matrix products and convolutions only (torch FlopCounterMode: "
              "element-wise work such as Mamba's scan is not counted). Peak memory: above the process's "
              "memory before the model was built (CPU: resident size; GPU: allocated tensors).", ""]
    lines += ["![efficiency](efficiency.png)", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in efficiency_targets(rows, compact=any((network_settings or {}).values())):
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

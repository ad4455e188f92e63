"""Evaluation outputs: the per-case CSV, the summary JSON (written atomically) and the table printed to stdout."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usema.utils.atomic import atomic_write_text

PER_CASE_NAME = "per_case.csv"
SUMMARY_NAME = "summary.json"
# Columns that hold counts: summed over cases in the summary, besides their mean.
COUNT_METRICS = ("tp", "fp", "fn")


def write_per_case_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One row per (case, class) with its scores; columns in the order of the first row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def summarise(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    class_names: Mapping[int, str],
    **details: Any,
) -> dict[str, Any]:
    """Mean and (population) standard deviation of every metric per class, and the mean over classes.

    `details` (tolerances, mode, paths...) are stored as they are at the top of the summary.
    """
    per_class: dict[str, Any] = {}
    for label, name in class_names.items():
        class_rows = [r for r in rows if r["class"] == label]
        entry: dict[str, Any] = {"name": name}
        for metric in metrics:
            values = np.array([r[metric] for r in class_rows], dtype=np.float64)
            entry[metric] = {"mean": float(values.mean()), "std": float(values.std())}
            if metric in COUNT_METRICS:
                entry[metric]["total"] = int(values.sum())
        per_class[str(label)] = entry
    overall = {m: float(np.mean([per_class[str(c)][m]["mean"] for c in class_names])) for m in metrics}
    return {
        **details,
        "num_cases": len({r["case"] for r in rows}),
        "classes": per_class,
        "mean": overall,
    }


def write_summary_json(summary: Mapping[str, Any], path: Path) -> Path:
    """The summary as indented JSON (strict: a NaN would be a bug upstream and raises here)."""
    return atomic_write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")


def format_table(summary: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """A short text table: one line per class with mean +- std of each metric, then the mean over classes."""
    rows = [
        [entry["name"], *(f"{entry[m]['mean']:.4f} +- {entry[m]['std']:.4f}" for m in metrics)]
        for entry in summary["classes"].values()
    ]
    rows.append(["mean", *(f"{summary['mean'][m]:.4f}" for m in metrics)])
    table = [["class", *metrics], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)

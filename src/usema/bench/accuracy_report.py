"""The results files of `usema bench accuracy`: the CSV, its provenance history and the Markdown report.

A benchmark is often extended in several invocations (more models, more seeds). Each invocation's command,
machine and date is kept in accuracy_<dataset>.json with the rows it added, so the report names, for every
row, the command that produced it.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from usema.bench.accuracy_analysis import comparison_lines, curve_lines
from usema.planning import PLANS_NAME, Plans
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance_from_markdown, provenance_markdown


def load_history(path: Path, md_path: Path, rows: list[dict]) -> dict[str, Any]:
    """The invocations that made the rows so far: from `path`, else (results made before the history was kept)
    the single command in the existing report, credited with every row."""
    if path.is_file():
        history = json.loads(path.read_text())
    elif rows and md_path.is_file():
        try:
            prov = provenance_from_markdown(md_path.read_text())
        except ValueError:  # a report without its provenance lines: say so rather than guess
            prov = {"command": "not recorded", "date": "not recorded", "machine": {"description": "not recorded"}}
        history = {"invocations": [{**prov, "rows": [[r["model"], int(r["seed"])] for r in rows]}]}
    else:
        history = {"invocations": []}
    history["path"] = str(path)
    return history


def record_row(history: dict[str, Any], prov: dict, model: str, seed: int) -> None:
    """Credit the row (model, seed) to this invocation (`prov`: its command, machine and now), and save."""
    key = [model, int(seed)]
    for invocation in history["invocations"]:
        if key in invocation["rows"]:  # a row made again (its CSV line was deleted): the new run owns it
            invocation["rows"].remove(key)
    current = history.get("_current")
    if current is None or current["command"] != prov["command"]:
        current = {**prov, "rows": []}
        history["invocations"].append(current)
        history["_current"] = current
    current.update({k: v for k, v in prov.items() if k != "rows"})
    current["rows"].append(key)
    saved = {"invocations": [inv for inv in history["invocations"] if inv["rows"]]}
    atomic_write_text(Path(history["path"]), json.dumps(saved, indent=1) + "\n")


def _provenance_lines(history: dict[str, Any], rows: list[dict]) -> list[str]:
    present = [[r["model"], int(r["seed"])] for r in rows]  # rows deleted from the CSV leave the report too
    invocations = [{**inv, "rows": [k for k in inv["rows"] if k in present]} for inv in history["invocations"]]
    invocations = [inv for inv in invocations if inv["rows"]]
    if len(invocations) == 1:
        return [provenance_markdown(invocations[0])]
    lines = [f"Made by {len(invocations)} invocations; each added the rows named above it.", ""]
    for invocation in invocations:
        named = ", ".join(f"{model} seed {seed}" for model, seed in invocation["rows"])
        lines += [f"Rows {named}:  ", provenance_markdown(invocation)]
    return lines


def _network_settings(runs: Path, rows: list[dict]) -> list[str]:
    """One line per model: the network settings its run's plans gave it beyond the shared strides."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        plans_files = sorted((runs / model).glob(f"seed_*/{PLANS_NAME}"))
        if plans_files:
            settings = {k: v for k, v in Plans.load(plans_files[0].parent).network_settings.items()
                        if k != "strides"}
            lines.append(f"- `{model}`: {json.dumps(settings) if settings else 'preset settings'}")
    return lines


def _cell(key: str, value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.3f}" if not value.is_integer() or key.startswith(("mean", "dice")) else f"{value:g}"


def _table(columns: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(key, row.get(key, "")) for key in columns) + " |" for row in rows]
    return lines


def seed_summary(rows: list[dict]) -> list[dict[str, str]]:
    """Per model, the mean and sample standard deviation over its seeds of the step count and every mean_*
    metric; empty when no model has more than one seed."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    if all(len(group) < 2 for group in by_model.values()):
        return []
    metrics = ["iterations", *dict.fromkeys(k for r in rows for k in r if k.startswith("mean_"))]
    summary = []
    for model, group in by_model.items():
        entry = {"model": model, "seeds": " ".join(str(r["seed"]) for r in group)}
        for metric in metrics:
            values = [float(r[metric]) for r in group if r.get(metric) not in (None, "")]
            if not values:
                entry[metric] = ""
                continue
            digits = 0 if metric == "iterations" else 3
            entry[metric] = f"{statistics.mean(values):.{digits}f}"
            if len(values) > 1:
                entry[metric] += f" ± {statistics.stdev(values):.{digits}f}"
        summary.append(entry)
    return summary


def write_report(rows: list[dict], history: dict[str, Any], csv_path: Path, md_path: Path, name: str,
                 protocol: str, runs: Path, evaluation: str = "evaluation", fold: int = 0) -> None:
    """Write the CSV (one row per model and seed) and the Markdown report: provenance of every row, the
    protocol sentence, each model's network settings, the rows, the means over seeds, the paired per-case
    comparisons (from each run's `evaluation` folder), and validation Dice against training time (a plot
    beside the report)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    stored = [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    writer.writerows(stored)
    atomic_write_text(csv_path, buffer.getvalue())
    lines = [f"# Accuracy on {name}", "", *_provenance_lines(history, rows), "", protocol, "",
             "Network settings beyond each preset and the plan's strides:", "", *_network_settings(runs, rows), "",
             *_table(columns, rows)]
    summary = seed_summary(stored)  # from the CSV's values, so anyone can recompute it from the CSV
    if summary:
        lines += ["", "Mean over seeds ± sample standard deviation (a model with one seed shows its one run):", "",
                  *_table(list(summary[0]), summary)]
    metrics = ("dice", "f1") if any("mean_f1" in row for row in rows) else ("dice",)
    comparisons = comparison_lines(runs, rows, metrics, evaluation)
    if comparisons:
        lines += ["", *comparisons]
    curves = curve_lines(runs, rows, fold, md_path.with_suffix(".png"))
    if curves:
        lines += ["", *curves]
    atomic_write_text(md_path, "\n".join(lines) + "\n")

"""The one-screen summary of every accuracy study in a results folder: a row per dataset, a column per model
(mean Dice over folds and its spread), the verdicts of our model against each control, the compute per run,
and a plain sentence per dataset. Written from the studies' files alone (see accuracy_report)."""

from __future__ import annotations

import statistics
from pathlib import Path

from usema.bench.accuracy_analysis import paired_comparisons, run_means
from usema.bench.accuracy_report import ReportFiles, report_metrics
from usema.utils.atomic import atomic_write_text

SUMMARY_NAME = "summary.md"


def _studies(output: Path) -> list[ReportFiles]:
    return [ReportFiles(output, path.stem.removeprefix("accuracy_"))
            for path in sorted(output.glob("accuracy_*.json"))]


def _verdict_cell(result: dict, total_folds: int) -> str:
    """The verdict with its mean difference and interval; "pending" until every fold of the protocol is in."""
    interval = f"{result['mean']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]"
    if len(result["folds"]) < total_folds:
        return f"pending, {len(result['folds'])} of {total_folds} folds ({interval})"
    return f"{result['verdict']} ({interval})"


def _sentence(name: str, folds: int, total: int, verdicts: list[dict]) -> str:
    if not verdicts:
        return f"- {name}: no comparison yet."
    parts = [f"{v['verdict']} than {v['control']}" if v["verdict"] in ("better", "worse")
             else f"{v['verdict']} against {v['control']}" for v in verdicts]
    if folds < total:
        return (f"- {name}: {folds} of {total} folds so far; no verdict until every fold is in "
                "(the interval needs the folds' spread).")
    return f"- {name}: USEMA is " + "; ".join(parts) + " in Dice."


def write_summary(output: str | Path) -> Path | None:
    """Write OUTPUT/summary.md from every study in OUTPUT; None when there is none."""
    output = Path(output)
    studies = [s for s in _studies(output) if s.rows()]
    if not studies:
        return None
    models = list(dict.fromkeys(r["model"] for s in studies for r in s.rows()))
    controls = [m for m in models if m != "usema"]
    header = ["dataset", *models, *(f"usema vs {c}" for c in controls), "steps per run", "training minutes per run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sentences = []
    for study in studies:
        rows, per_case = study.rows(), study.per_case()
        protocol = study.meta()["protocol"]
        means = run_means(per_case)
        cells = []
        for model in models:
            values = [m["dice"] for (label, _), m in sorted(means.items()) if label == model and "dice" in m]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread} ({len(values)})" if values else "")
        # the report's comparisons, so that Holm's correction is the report's
        results = {r["control"]: r for r in paired_comparisons(per_case, rows, report_metrics(per_case))
                   if r["ours"] == "usema" and r["metric"] == "dice"}
        if protocol["steps"] is None:
            verdict_cells = ["none (wall clock)" for _ in controls]
        else:
            verdict_cells = [_verdict_cell(results[c], protocol["folds"]) if c in results else "" for c in controls]
        minutes = [float(r["train_minutes"]) for r in rows if r["model"] == "usema"]
        steps = protocol["steps"] if protocol["steps"] is not None else f"{protocol['budget_minutes']:g} min"
        lines.append(f"| {study.name} | " + " | ".join(cells + verdict_cells) + f" | {steps} | "
                     + (f"{statistics.median(minutes):.1f} (usema, median)" if minutes else "") + " |")
        usema_folds = len({r["fold"] for r in rows if r["model"] == "usema"})
        sentences.append(_sentence(study.name, usema_folds, protocol["folds"], list(results.values())))
    text = "\n".join([
        "Mean Dice over the folds run (± sample standard deviation over folds; number of folds in brackets); "
        "verdicts: USEMA minus the control, hierarchical bootstrap over folds and cases, Holm-corrected within "
        "each dataset's report (mean difference and 95% interval); training minutes as measured on the machine "
        "that ran them (load bends them; steps do not). Each dataset's report, per-case scores and commands: "
        "benchmarks/cv/accuracy_DATASET.md.", "", *lines, "", *sentences]) + "\n"
    return atomic_write_text(output / SUMMARY_NAME, text)

"""What the accuracy benchmark's runs say beyond their mean scores: paired per-case differences with bootstrap
intervals and verdicts, and validation Dice against training time.

Every model of one benchmark is scored on the same held-out cases, so USEMA and a control can be compared case
by case: the difference of their per-case scores (averaged over the seeds both ran) is resampled over cases
(bootstrap, 10,000 draws) for a 95% interval of its mean. The verdict reads that interval: above zero is
"better", below zero "worse", across zero "no difference". The seeds' own paired means show the spread that
training noise adds.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np

from usema.utils.atomic import atomic_path

BOOTSTRAP_DRAWS = 10_000
CURVE_THRESHOLDS = (0.7, 0.8, 0.85, 0.9)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def per_case_scores(run_dir: Path, metric: str = "dice", evaluation: str = "evaluation") -> dict[str, float]:
    """Each held-out case's `metric`, averaged over its classes, from the run's `evaluation` folder."""
    by_case: dict[str, list[float]] = {}
    for row in _rows(run_dir / evaluation / "per_case.csv"):
        if row.get(metric) not in (None, "", "nan"):
            by_case.setdefault(row["case"], []).append(float(row[metric]))
    return {case: statistics.mean(values) for case, values in by_case.items()}


def comparison_labels(labels: list[str]) -> list[tuple[str, str]]:
    """(ours, control) pairs: `usema` (or, in a placement study, each `usema@...`) against every other model."""
    ours = ["usema"] if "usema" in labels else [label for label in labels if label.startswith("usema@")]
    others = [label for label in labels if label not in ours and not label.startswith("usema@")]
    return [(a, b) for a in ours for b in others]


def paired_comparison(runs: Path, ours: str, control: str, seeds: list[int], metric: str = "dice",
                      evaluation: str = "evaluation", draws: int = BOOTSTRAP_DRAWS) -> dict | None:
    """USEMA minus a control, case by case over the seeds both ran: mean difference, 95% bootstrap interval,
    per-seed mean differences, verdict. None where they share no scored case."""
    per_seed, by_case = {}, {}
    for seed in seeds:
        a = per_case_scores(runs / ours / f"seed_{seed}", metric, evaluation)
        b = per_case_scores(runs / control / f"seed_{seed}", metric, evaluation)
        common = sorted(set(a) & set(b))
        if not common:
            continue
        per_seed[seed] = statistics.mean(a[c] - b[c] for c in common)
        for case in common:
            by_case.setdefault(case, []).append(a[case] - b[case])
    if not by_case:
        return None
    diffs = np.array([statistics.mean(values) for values in by_case.values()])
    draws_idx = np.random.default_rng(0).integers(0, len(diffs), size=(draws, len(diffs)))
    low, high = np.percentile(diffs[draws_idx].mean(axis=1), [2.5, 97.5])
    verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
    return {"ours": ours, "control": control, "metric": metric, "cases": len(diffs), "seeds": sorted(per_seed),
            "mean": float(diffs.mean()), "low": float(low), "high": float(high), "verdict": verdict,
            "per_seed": per_seed}


def comparison_lines(runs: Path, rows: list[dict], metrics: tuple[str, ...] = ("dice",),
                     evaluation: str = "evaluation") -> list[str]:
    """The report's table of paired comparisons (empty where there is nothing to compare)."""
    labels = list(dict.fromkeys(r["model"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})
    results = [paired_comparison(runs, a, b, seeds, metric, evaluation)
               for a, b in comparison_labels(labels) for metric in metrics]
    results = [r for r in results if r is not None]
    if not results:
        return []
    lines = ["Paired per-case differences (first model minus second, per-case scores averaged over the seeds "
             f"both ran; 95% bootstrap interval over cases, {BOOTSTRAP_DRAWS} draws):", "",
             "| comparison | metric | cases | seeds | mean difference | 95% interval | per seed | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_seed = ", ".join(f"{v:+.3f}" for v in r["per_seed"].values())
        lines.append(f"| {r['ours']} - {r['control']} | {r['metric']} | {r['cases']} | "
                     f"{' '.join(map(str, r['seeds']))} | {r['mean']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | "
                     f"{per_seed} | {r['verdict']} |")
    return lines


def learning_curve(fold_dir: Path) -> list[tuple[float, float]]:
    """(training minutes so far, validation Dice) after each logged epoch of a run."""
    minutes, curve = 0.0, []
    for row in _rows(fold_dir / "train_log.csv"):
        minutes += float(row["seconds"]) / 60.0
        if row.get("val_dice") not in (None, "", "nan"):
            curve.append((minutes, float(row["val_dice"])))
    return curve


def minutes_to_reach(curve: list[tuple[float, float]], threshold: float) -> float | None:
    """The training minutes at the first validation at or above `threshold` (None if never)."""
    return next((minutes for minutes, dice in curve if dice >= threshold), None)


def curve_lines(runs: Path, rows: list[dict], fold: int, plot: Path) -> list[str]:
    """Plot validation Dice against training time for every run of the report into `plot`, and return the
    report's lines: the plot and the minutes each run needed to reach each threshold."""
    curves = {}
    for row in rows:
        curve = learning_curve(runs / row["model"] / f"seed_{row['seed']}" / f"fold_{fold}")
        if curve:
            curves[f"{row['model']} seed {row['seed']}"] = curve
    if not curves:
        return []
    _plot_curves(curves, plot)
    lines = [f"![validation Dice against training time]({plot.name})", "",
             "Minutes of training to reach a validation Dice (in-training validation after each epoch; - : not "
             "reached):", "", "| run | " + " | ".join(f"{t:g}" for t in CURVE_THRESHOLDS) + " | last |",
             "|---|" + "---|" * (len(CURVE_THRESHOLDS) + 1)]
    for name, curve in curves.items():
        reached = [minutes_to_reach(curve, t) for t in CURVE_THRESHOLDS]
        cells = ["-" if m is None else f"{m:.1f}" for m in reached]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {curve[-1][1]:.3f} at {curve[-1][0]:.1f} min |")
    return lines


def _plot_curves(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), marker=".", label=name)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation Dice")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

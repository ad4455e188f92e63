"""What an accuracy study's files say: mean scores per run and fold, paired differences with intervals that
include training noise, and validation Dice against steps.

Every model of a study is trained on the same folds and scored on each fold's held-out cases, so our model and
a control are compared case by case within each fold. Fold k trains with seed k: the folds carry both the
training noise and the choice of cases. The standard error of the mean difference comes from a hierarchical
bootstrap: each draw resamples the folds (with replacement), then the cases within each drawn fold; the estimate
is the mean of the fold means. With a handful of folds (k >= 2) the interval and the two-sided p-value use
Student's t on k-1 degrees of freedom, not the draws' percentiles (`hierarchical_bootstrap` says why). The
p-value is Holm-corrected over the comparisons of one family in one report, and the verdict reads the
corrected value: "better" or "worse" below 0.05, else "no difference". A report asks up to two questions, each
its own family: does SEMA help (our model against the controls: no SEMA, nnU-Net, others), and, in an
ablation, which part of SEMA carries the gain (against SEMA presets with another attention). The ablation's comparisons do not weaken the first question's.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from usema.utils.atomic import atomic_path

BOOTSTRAP_DRAWS = 10_000
ALPHA = 0.05
METRICS = ("dice", "nsd", "hd95", "f1")


def _value(text: str | None) -> float | None:
    if text in (None, "", "nan"):
        return None
    value = float(text)
    return None if np.isnan(value) else value


def case_scores(per_case: list[dict[str, str]], metric: str) -> dict[tuple[str, int], dict[str, float]]:
    """{(model, fold): {case: metric averaged over the case's classes}}."""
    values: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in per_case:
        value = _value(row.get(metric))
        if value is not None:
            values[(row["model"], int(row["fold"]))][row["case"]].append(value)
    return {run: {case: statistics.mean(v) for case, v in cases.items()} for run, cases in values.items()}


def run_means(per_case: list[dict[str, str]]) -> dict[tuple[str, int], dict[str, float]]:
    """{(model, fold): {metric: mean over classes of the mean over cases}}, as `usema evaluate` summarises."""
    by_class: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in per_case:
        for metric in METRICS:
            value = _value(row.get(metric))
            if value is not None:
                by_class[(row["model"], int(row["fold"]), metric)][row["class"]].append(value)
    means: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for (model, fold, metric), classes in by_class.items():
        means[(model, fold)][metric] = statistics.mean(statistics.mean(v) for v in classes.values())
    return dict(means)


def hierarchical_bootstrap(diffs_by_fold: list[np.ndarray], draws: int = BOOTSTRAP_DRAWS,
                           seed: int = 0) -> dict[str, float | None]:
    """Mean of the fold means of `diffs_by_fold`, its 95% interval and two-sided p-value, from the standard error
    of a bootstrap that resamples folds, then cases within each fold.

    A handful of folds is too few for the draws' own 2.5-97.5% range: resampling k folds keeps (k-1)/k of their
    variance, and the range stands for a normal quantile where k-1 degrees of freedom need Student's t. So the
    standard error is the draws' standard deviation times sqrt(k/(k-1)), the interval the estimate ± the t
    quantile on k-1 degrees of freedom times it, and p the two-sided t probability of the estimate over it. With
    no spread among a fold's cases this is the paired t-test over the fold means. Resampling the cases counts
    their noise a second time (each fold's mean carries it already), so the interval is somewhat wider than that
    test's: conservative. One fold cannot estimate its training noise: no interval (None) and p = 1."""
    from scipy import stats

    k = len(diffs_by_fold)
    estimate = float(np.mean([d.mean() for d in diffs_by_fold]))
    if not np.isfinite(estimate):
        raise ValueError("a paired difference is not finite: the scores hold NaN or infinity")
    if k < 2:
        return {"mean": estimate, "low": None, "high": None, "p": 1.0, "se": None}
    rng = np.random.default_rng(seed)
    # per fold, `draws x k` case-resampled means: one for every slot a draw may give that fold
    resampled = np.stack([d[rng.integers(0, len(d), size=(draws, k, len(d)))].mean(axis=2)
                          for d in diffs_by_fold])  # (fold, draw, slot)
    chosen = rng.integers(0, k, size=(draws, k))
    slots = np.arange(k)[None, :]
    draw_means = resampled[chosen, np.arange(draws)[:, None], slots].mean(axis=1)
    se = float(np.std(draw_means, ddof=1) * np.sqrt(k / (k - 1)))
    half_width = float(stats.t.ppf(1 - ALPHA / 2, k - 1)) * se
    # every draw the same (no spread at all): a difference is certain, and so is none
    p = float(2 * stats.t.sf(abs(estimate) / se, k - 1)) if se > 0 else float(estimate == 0)
    return {"mean": estimate, "low": estimate - half_width, "high": estimate + half_width, "p": p, "se": se}


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


FAMILIES = ("controls", "ablation")


def comparison_family(control: str) -> str:
    """"ablation" where `control` (a label, maybe "X@compute") is a SEMA preset with another attention
    (usema-window, usema-mean, ...), else "controls"."""
    from usema.bench.variants import has_sema_blocks
    from usema.models import list_models

    model = control.split("@")[0]
    return "ablation" if model in list_models() and has_sema_blocks(model) else "controls"


def comparison_pairs(labels: list[str]) -> list[tuple[str, str]]:
    """(ours, control) pairs: `usema` (or, in a placement study, each `usema@...`) against every other model."""
    ours = ["usema"] if "usema" in labels else [label for label in labels if label.startswith("usema@")]
    others = [label for label in labels if label not in ours and not label.startswith("usema@")]
    return [(a, b) for a in ours for b in others]


def paired_comparisons(per_case: list[dict[str, str]], rows: list[dict[str, str]],
                       metrics: tuple[str, ...] = ("dice",), draws: int = BOOTSTRAP_DRAWS) -> list[dict]:
    """Every (ours - control, metric) over the folds both ran: the fold means, the hierarchical interval, the
    p-value and its Holm correction within its family (`comparison_family`), and the verdict ("mixed commits"
    where the two models' runs were trained at different commits: no verdict)."""
    labels = list(dict.fromkeys(r["model"] for r in rows))
    commits = defaultdict(set)
    for row in rows:
        commits[row["model"]].add(row.get("commit", "unknown"))
    results = []
    for metric in metrics:
        scores = case_scores(per_case, metric)
        for ours, control in comparison_pairs(labels):
            folds = sorted({f for (m, f) in scores if m == ours} & {f for (m, f) in scores if m == control})
            diffs, per_fold = [], {}
            for fold in folds:
                a, b = scores[(ours, fold)], scores[(control, fold)]
                common = sorted(set(a) & set(b))
                if common:
                    diffs.append(np.array([a[c] - b[c] for c in common]))
                    per_fold[fold] = float(diffs[-1].mean())
            if not diffs:
                continue
            result = hierarchical_bootstrap(diffs, draws)
            mixed = len(commits[ours] | commits[control]) > 1
            results.append({"ours": ours, "control": control, "family": comparison_family(control),
                            "metric": metric, "folds": list(per_fold), "cases": int(sum(len(d) for d in diffs)),
                            "per_fold": per_fold, "mixed": mixed, **result})
    for family in FAMILIES:
        members = [r for r in results if r["family"] == family]
        for result, adjusted in zip(members, holm([r["p"] for r in members]), strict=True):
            result["p_holm"] = adjusted
    for result in results:
        adjusted = result["p_holm"]
        if result["mixed"]:
            result["verdict"] = "mixed commits"
        elif adjusted < ALPHA:
            result["verdict"] = "better" if result["mean"] > 0 else "worse"
        else:
            result["verdict"] = "no difference"
    return results


def comparison_lines(per_case: list[dict[str, str]], rows: list[dict[str, str]],
                     metrics: tuple[str, ...] = ("dice",), verdicts: bool = True,
                     total_folds: int | None = None) -> list[str]:
    """The report's tables of paired comparisons, one per family (empty where there is nothing to compare); a
    comparison over fewer than `total_folds` folds (the protocol's) is pending, whatever its interval."""
    results = paired_comparisons(per_case, rows, metrics)
    lines: list[str] = []
    for family in FAMILIES:
        members = [r for r in results if r["family"] == family]
        if members:
            lines += [""] * bool(lines) + _family_lines(family, members, verdicts, total_folds)
    return lines


def interval_text(result: dict) -> str:
    """"[low, high]" of a comparison, or why it has none (a single fold holds no training noise)."""
    if result["low"] is None:
        return "no interval from 1 fold"
    # four decimals: differences of a few thousandths of Dice, whose interval bounds three would round to zero
    return f"[{result['low']:+.4f}, {result['high']:+.4f}]"


def _family_lines(family: str, results: list[dict], verdicts: bool, total_folds: int | None) -> list[str]:
    title = ("Paired differences" if family == "controls" else
             "Ablation, which part of SEMA carries the gain: paired differences")
    lines = [f"{title}, first model minus second, over the folds both ran (per fold: the mean over "
             "its held-out cases; interval and p: Student's t on folds - 1 degrees of freedom over the standard "
             f"error of a hierarchical bootstrap over folds, then cases, {BOOTSTRAP_DRAWS} draws, widened by "
             "sqrt(folds / (folds - 1)); p two-sided, Holm-corrected over the "
             f"{len(results)} comparisons of this table):", "",
             "| comparison | metric | folds | cases | per fold | mean difference | 95% interval | p (Holm) | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_fold = ", ".join(f"{v:+.3f}" for v in r["per_fold"].values())
        verdict = r["verdict"] if verdicts else "none (wall-clock budget)"
        if verdicts and total_folds is not None and len(r["folds"]) < total_folds:
            verdict = f"pending ({len(r['folds'])} of {total_folds} folds)"
        p_value = "-" if r["low"] is None else f"{r['p_holm']:.3g}"  # one fold: nothing to test
        lines.append(f"| {r['ours']} - {r['control']} | {r['metric']} | {len(r['folds'])} | {r['cases']} | "
                     f"{per_fold} | {r['mean']:+.4f} | {interval_text(r)} | {p_value} | {verdict} |")
    return lines


def fold_table_lines(means: dict[tuple[str, int], dict[str, float]], metrics: tuple[str, ...]) -> list[str]:
    """Per model and metric: the mean score of every fold, their mean and sample standard deviation."""
    folds = sorted({f for _, f in means})
    lines = ["Mean score per fold (each fold's held-out cases), and over folds ± sample standard deviation:", "",
             "| model | metric | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± sd |",
             "|---|---|" + "---|" * (len(folds) + 1)]
    for model in dict.fromkeys(m for m, _ in means):
        for metric in metrics:
            values = {f: means[(model, f)][metric] for f in folds if metric in means.get((model, f), {})}
            if not values:
                continue
            cells = [f"{values[f]:.3f}" if f in values else "" for f in folds]
            spread = f" ± {statistics.stdev(values.values()):.3f}" if len(values) > 1 else ""
            lines.append(f"| {model} | {metric} | " + " | ".join(cells)
                         + f" | {statistics.mean(values.values()):.3f}{spread} |")
    return lines


def shared_folds(runs: Iterable[tuple[str, int]], models: Iterable[str] | None = None) -> list[int]:
    """The folds that every model among `runs` ((model, fold) pairs; only `models`, where given) has run: while a
    study is under way, its tables compare the same folds."""
    wanted = None if models is None else set(models)
    folds: dict[str, set[int]] = defaultdict(set)
    for model, fold in runs:
        if wanted is None or model in wanted:
            folds[model].add(fold)
    return sorted(set.intersection(*folds.values())) if folds else []


def curve_lines(curves: list[dict[str, str]], plot: Path) -> list[str]:
    """Plot in-training validation Dice against steps for every run into `plot`, and return the report's lines:
    the plot and, per model, the mean over folds at every logged step."""
    by_run: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for row in curves:
        by_run[(row["model"], int(row["fold"]))].append((int(row["step"]), float(row["val_dice"])))
    if not by_run:
        return []
    _plot_curves(by_run, plot)
    steps = sorted({s for points in by_run.values() for s, _ in points})
    models = list(dict.fromkeys(m for m, _ in by_run))
    shared = shared_folds(by_run)  # the plot shows every run
    lines = [f"![validation Dice against optimizer steps]({plot.name})", "",
             "In-training validation Dice (the fold's validation subset) against optimizer steps, mean over the "
             f"folds every model has run ({', '.join(map(str, shared)) or 'none yet'}):",
             "", "| model | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for model in models:
        cells = []
        for step in steps:
            values = [d for (m, f), points in by_run.items() if m == model and f in shared
                      for s, d in points if s == step]
            cells.append(f"{statistics.mean(values):.3f}" if values else "")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _plot_curves(by_run: dict[tuple[str, int], list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m for m, _ in by_run))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, fold), points in sorted(by_run.items()):
        ax.plot(*zip(*sorted(points)), marker=".", color=colours[model], alpha=0.8,
                label=model if fold == min(f for m, f in by_run if m == model) else None)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation Dice")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

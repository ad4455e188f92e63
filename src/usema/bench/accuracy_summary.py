"""The one-screen summary of every accuracy study in a results folder: a row per dataset, a column per model
(mean Dice over folds and its spread), the verdicts of our model against each control, the compute per run,
a plain sentence per dataset, and above them the answer to the study's question, derived from the verdicts by
the rule the study set itself. Written from the studies' files alone (see accuracy_report)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from usema.bench.accuracy_analysis import (
    comparison_family,
    interval_text,
    paired_comparisons,
    run_means,
    shared_folds,
)
from usema.bench.accuracy_report import ReportFiles, report_metrics
from usema.utils.atomic import atomic_write_text

SUMMARY_NAME = "summary.md"
# The study's four modalities (benchmarks/cv/README.md): the answer counts a dataset with no runs yet as pending.
STUDY_DATASETS = ("hippocampus", "dsb2018", "kvasir_seg", "chaos_mr_t2")
# What "SEMA makes the UNet more accurate" means here: better than every control on at least this many datasets,
# and worse than a control on none.
DATASETS_TO_WIN = 2


def _studies(output: Path) -> list[ReportFiles]:
    return [ReportFiles(output, path.stem.removeprefix("accuracy_"))
            for path in sorted(output.glob("accuracy_*.json"))]


def _verdict_cell(result: dict, total_folds: int) -> str:
    """The verdict with its mean difference and interval; "pending" until every fold of the protocol is in."""
    interval = f"{result['mean']:+.4f}{',' * (result['low'] is None)} {interval_text(result)}"
    if len(result["folds"]) < total_folds:
        return f"pending, {len(result['folds'])} of {total_folds} folds ({interval})"
    return f"{result['verdict']} ({interval})"


def _compute_cell(study: ReportFiles, steps: int | None, rows: list[dict[str, str]]) -> str:
    """USEMA's compute per run, steps times its step cost as --measure-step-cost measured it; where the study has
    no step cost (or a wall-clock budget), the median of its runs' wall-clock minutes, said as such."""
    cost = (study.step_costs() or {}).get("seconds_per_step", {})
    if steps is not None and "usema" in cost:
        return f"{steps * cost['usema'] / 60:.0f} min of one core ({cost['usema']:.2f} s per step)"
    minutes = [float(r["train_minutes"]) for r in rows if r["model"] == "usema"]
    return f"{statistics.median(minutes):.1f} min wall clock (usema, median)" if minutes else ""


def _sentence(name: str, steps: int | None, folds: int, total: int, verdicts: list[dict]) -> str:
    if not verdicts:
        return f"- {name}: no comparison yet."
    wording = {"better": "better than", "worse": "worse than", "no difference": "not detectably different from"}
    parts = [f"{wording.get(v['verdict'], v['verdict'] + ' against')} {v['control']} ({v['mean']:+.4f})"
             for v in verdicts]
    if folds < total:
        return (f"- {name}: {folds} of {total} folds of every model so far; no verdict until every fold is in "
                "(the interval needs the folds' spread).")
    if steps is None:
        return f"- {name}: a wall-clock study, which gives no verdicts."
    # the budget belongs to the claim: a model still improving at the last step may only be ahead, not better
    return (f"- {name}, at {steps} steps (how far from its plateau: the curves in its report): USEMA is "
            + "; ".join(parts) + " in mean Dice.")


def dataset_outcome(verdicts: list[dict], total_folds: int) -> str:
    """One dataset's standing: "pending" until every comparison has all folds, then "worse" when USEMA is worse
    than any control, "better" when it is better than every control, else "not better"."""
    if not verdicts or any(len(v["folds"]) < total_folds for v in verdicts):
        return "pending"
    kinds = {v["verdict"] for v in verdicts}
    if "worse" in kinds:
        return "worse"
    return "better" if kinds == {"better"} else "not better"


def _names(outcomes: dict[str, str], kind: str) -> str:
    return ", ".join(name for name, outcome in outcomes.items() if outcome == kind)


def answer_line(outcomes: dict[str, str], datasets: Sequence[str] = STUDY_DATASETS) -> str:
    """The study's answer from each dataset's outcome (datasets without a study count as pending): yes when USEMA
    is better than every control on at least DATASETS_TO_WIN datasets and worse on none."""
    outcomes = {**{name: "pending" for name in datasets}, **outcomes}
    total = len(outcomes)
    count = {kind: sum(o == kind for o in outcomes.values()) for kind in ("better", "worse", "pending")}
    done = total - count["pending"]
    tally = (f"{done} of {total} datasets {'has' if done == 1 else 'have'} every fold in; USEMA is better than "
             f"every control on {count['better']}" + (f" ({_names(outcomes, 'better')})" if count["better"] else "")
             + f" and worse than a control on {count['worse']}"
             + (f" ({_names(outcomes, 'worse')})" if count["worse"] else ""))
    rule = (f"the aim: better than every control on at least {DATASETS_TO_WIN} of the {total} datasets, "
            "worse on none")
    if count["worse"]:
        answer = "**No.**"
    elif count["better"] >= DATASETS_TO_WIN:
        answer = "**Yes.**" if not count["pending"] else "**Yes so far**; the pending datasets can still turn it."
    elif count["better"] + count["pending"] < DATASETS_TO_WIN:
        answer = "**No.**"
    else:
        answer = "**Not yet settled.**"
    return f"Answer: {answer} {tally} ({rule})."


def write_summary(output: str | Path, datasets: Sequence[str] = STUDY_DATASETS) -> Path | None:
    """Write OUTPUT/summary.md from every study in OUTPUT, headed by the study's answer over `datasets`; None when
    there is no study."""
    output = Path(output)
    studies = [s for s in _studies(output) if s.rows()]
    if not studies:
        return None
    # an ablation's SEMA variants answer another question: their verdicts stay in the dataset's report
    seen = dict.fromkeys(r["model"] for s in studies for r in s.rows())
    controls = [m for m in seen if m != "usema" and comparison_family(m) == "controls"]
    models = ["usema"] * ("usema" in seen) + controls  # ours first, whichever run was scored first
    header = ["dataset", *models, *(f"usema vs {c}" for c in controls), "steps per run", "USEMA compute per run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sentences, outcomes = [], {}
    for study in studies:
        rows, per_case = study.rows(), study.per_case()
        protocol = study.meta()["protocol"]
        means = run_means(per_case)
        shared = shared_folds(means, models)  # the Dice columns compare the same folds
        cells = []
        for model in models:
            values = [means[(model, fold)]["dice"] for fold in shared if "dice" in means.get((model, fold), {})]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread} ({len(values)})" if values else "")
        # the report's comparisons, so that Holm's correction is the report's
        results = {r["control"]: r for r in paired_comparisons(per_case, rows, report_metrics(per_case))
                   if r["ours"] == "usema" and r["metric"] == "dice" and r["family"] == "controls"}
        if protocol["steps"] is None:
            verdict_cells = ["none (wall clock)" for _ in controls]
        else:
            verdict_cells = [_verdict_cell(results[c], protocol["folds"]) if c in results else "" for c in controls]
        steps = protocol["steps"] if protocol["steps"] is not None else f"{protocol['budget_minutes']:g} min"
        lines.append(f"| {study.name} | " + " | ".join(cells + verdict_cells) + f" | {steps} | "
                     + _compute_cell(study, protocol["steps"], rows) + " |")
        if protocol["steps"] is not None:  # wall-clock studies give no verdict, so no answer
            outcomes[study.name] = dataset_outcome(list(results.values()), protocol["folds"])
        sentences.append(_sentence(study.name, protocol["steps"], len(shared), protocol["folds"],
                                   list(results.values())))
    text = "\n".join([
        answer_line(outcomes, datasets), "",
        "Mean Dice over the folds that every model of the row has run (± sample standard deviation over "
        "folds; number of folds in brackets); USEMA minus the control: mean difference and 95% interval "
        "(Student's t over the folds on a hierarchical bootstrap's standard error, folds then cases), and the "
        "verdict, which reads the p-value Holm-corrected over each dataset's comparisons with its controls; "
        "USEMA's compute per run: the steps times its step cost as `--measure-step-cost` measured it (machine "
        "and load in each report), in minutes of one core (each run's wall-clock minutes, which load bends, are "
        "in its report). Each dataset's report, per-case scores and commands: benchmarks/cv/accuracy_DATASET.md.",
        "", *lines, "", *sentences]) + "\n"
    return atomic_write_text(output / SUMMARY_NAME, text)

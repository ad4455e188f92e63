"""The files of `usema bench accuracy`, and the report re-derived from them alone.

Per dataset, under the output folder:
- accuracy_<name>.csv: one row per (model, fold): what the run was (network, seed, steps, commit, minutes,
  steps per second, load average, predict seconds) and its mean scores;
- per_case_<name>.csv: every held-out case's score per class, per (model, fold): what the statistics use;
- curves_<name>.csv: in-training validation Dice after every epoch, per (model, fold);
- accuracy_<name>.json: the protocol every row shares, each model's network settings and each row's
  provenance (command, machine, date, commit);
- step_cost_<name>.json (usema bench accuracy --measure-step-cost): every model's step cost, interleaved;
- accuracy_<name>.md and .png: the report, written from the files above (`--report-only` rewrites it).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from usema.bench.accuracy_analysis import comparison_lines, curve_lines, fold_table_lines, run_means
from usema.bench.step_cost import EQUAL_COMPUTE_RATIO, cost_ratios, ratio_intervals
from usema.errors import UsemaError
from usema.planning import Plans
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance_markdown

# Protocol fields that every row of one report must share.
PROTOCOL_KEYS = ("steps", "budget_minutes", "patch_size", "batch_size", "optimizer", "lr", "precision",
                 "iters_per_epoch", "folds", "split_seed", "tta", "target_spacing")
ROW_KEYS = ("model", "network", "fold", "seed", "steps", "epochs", "params_m", "train_minutes",
            "steps_per_second", "load_average", "val_cases", "predict_seconds", "commit")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    atomic_write_text(path, buffer.getvalue())


def protocol_record(plans: Plans, steps: int | None, budget: float | None, tta: bool, folds: int,
                    split_seed: int, models: dict[str, str], steps_of: dict[str, int | None]) -> dict[str, Any]:
    """What every row of the study shares, and each label's preset and steps."""
    training = plans.training
    return {
        "steps": steps, "budget_minutes": budget, "patch_size": plans.patch_size, "batch_size": plans.batch_size,
        "optimizer": training.optimizer, "lr": training.lr, "precision": training.precision,
        "iters_per_epoch": training.iters_per_epoch, "folds": folds, "split_seed": split_seed, "tta": tta,
        "target_spacing": plans.target_spacing, "models": models, "steps_of": steps_of,
    }


def collect_run(run_dir: Path, fold: int, variant, done: dict[str, Any], evaluation: Path,
                predict_seconds: float, extra: dict[str, dict]) -> dict[str, Any]:
    """One run's record: its row, its per-case scores, its validation curve, its network settings and
    provenance (from `done`, what the training wrote when it ended)."""
    from usema.checkpoint import Checkpoint, checkpoint_path, fold_dir

    folder = fold_dir(run_dir, fold)
    plans = Plans.load(run_dir)
    latest = Checkpoint.load(checkpoint_path(run_dir, "latest", fold))
    steps = latest.steps
    seconds = latest.trained_seconds or 0.0
    per_case = [{"model": variant.label, "fold": fold, **r} for r in _read_csv(evaluation / "per_case.csv")]
    iters = plans.training.iters_per_epoch
    curve = [{"model": variant.label, "fold": fold, "epoch": int(float(r["epoch"])),
              "step": int(float(r["epoch"])) * iters, "val_dice": float(r["val_dice"])}
             for r in _read_csv(folder / "train_log.csv") if r.get("val_dice") not in (None, "", "nan")]
    network = plans.network.build()  # as trained: UNETR at the plan's patch size
    row = {
        "model": variant.label, "network": variant.model, "fold": fold, "seed": fold, "steps": steps,
        "epochs": len(curve), "params_m": sum(p.numel() for p in network.parameters()) / 1e6,
        "train_minutes": seconds / 60.0, "steps_per_second": steps / seconds if seconds else 0.0,
        "load_average": float(done.get("load_average", 0.0)), "val_cases": len({r["case"] for r in per_case}),
        "predict_seconds": predict_seconds, "commit": done.get("commit", "unknown"),
    }
    for precision, info in extra.items():
        row[f"{precision}_predict_seconds"] = info["predict_seconds"]
        row[f"{precision}_mean_dice"] = statistics.mean(
            float(r["dice"]) for r in _read_csv(Path(info["evaluation"]) / "per_case.csv"))
    provenance = {k: done[k] for k in ("command", "machine", "date", "commit") if k in done}
    settings = {k: v for k, v in plans.network_settings.items() if k != "strides"}
    return {"row": row, "per_case": per_case, "curve": curve, "network_settings": settings,
            "provenance": provenance}


class ReportFiles:
    """The results files of one dataset's study (see the module docstring)."""

    def __init__(self, output: Path, name: str):
        self.output, self.name = Path(output), name
        self.rows_csv = self.output / f"accuracy_{name}.csv"
        self.per_case_csv = self.output / f"per_case_{name}.csv"
        self.curves_csv = self.output / f"curves_{name}.csv"
        self.meta_json = self.output / f"accuracy_{name}.json"
        self.markdown = self.output / f"accuracy_{name}.md"
        self.plot = self.output / f"accuracy_{name}.png"
        self.step_cost = self.output / f"step_cost_{name}.json"

    def rows(self) -> list[dict[str, str]]:
        """The rows CSV: one row per (model, fold)."""
        return _read_csv(self.rows_csv)

    def per_case(self) -> list[dict[str, str]]:
        return _read_csv(self.per_case_csv)

    def curves(self) -> list[dict[str, str]]:
        return _read_csv(self.curves_csv)

    def meta(self) -> dict[str, Any]:
        if not self.meta_json.is_file():
            return {"protocol": None, "network_settings": {}, "provenance": {}}
        return json.loads(self.meta_json.read_text())

    def step_costs(self) -> dict[str, Any] | None:
        """The measured step costs (step_cost_<name>.json), None before they are measured."""
        return json.loads(self.step_cost.read_text()) if self.step_cost.is_file() else None

    def has_row(self, label: str, fold: int) -> bool:
        return any(r["model"] == label and int(r["fold"]) == fold for r in self.rows())

    def check_protocol(self, protocol: dict[str, Any]) -> None:
        """UsemaError when the study's files were made with another protocol than `protocol`."""
        stored = self.meta()["protocol"]
        if stored is None:
            return
        differing = [f"{k} {stored.get(k)} (now {protocol.get(k)})" for k in PROTOCOL_KEYS
                     if stored.get(k) != protocol.get(k)]
        # models may join a study (the ablation), but a model's steps stay: a new step-cost measurement must not
        # give X@compute other steps in later folds than in earlier ones
        before, now = stored.get("steps_of") or {}, protocol.get("steps_of") or {}
        differing += [f"{label} has {before[label]} steps in this study (now {now[label]})" for label in now
                      if label in before and before[label] != now[label]]
        if differing:
            what = ", ".join(differing)
            raise UsemaError(f"{self.meta_json}: its rows were made with {what}; use another --output and "
                             "--runs-dir for another protocol")

    def check_commit(self, commit: str) -> None:
        """UsemaError when rows of this study were trained at another commit than `commit`."""
        others = sorted({r["commit"] for r in self.rows() if r.get("commit") != commit})
        if others:
            raise UsemaError(
                f"{self.rows_csv}: rows were trained at commit {', '.join(others)}, this checkout is {commit}: "
                "a comparison must not mix code. Run the study from a worktree of that commit "
                f"(git worktree add ../usema-study {others[0].split('+')[0]}), or pass --allow-mixed-commits")

    def add_record(self, record: dict[str, Any], protocol: dict[str, Any]) -> None:
        """Add one run's row, per-case scores, curve, settings and provenance to the files (replacing an earlier
        record of the same model and fold)."""
        key = (record["row"]["model"], str(record["row"]["fold"]))

        def others(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [r for r in rows if (r["model"], str(r["fold"])) != key]

        self.output.mkdir(parents=True, exist_ok=True)
        _write_csv(self.rows_csv, [*others(self.rows()), record["row"]])
        _write_csv(self.per_case_csv, [*others(self.per_case()), *record["per_case"]])
        _write_csv(self.curves_csv, [*others(self.curves()), *record["curve"]])
        meta = self.meta()
        stored = meta.get("protocol") or {}
        protocol = {**protocol, "models": {**stored.get("models", {}), **protocol["models"]},
                    "steps_of": {**stored.get("steps_of", {}), **protocol["steps_of"]}}
        meta["protocol"] = protocol
        meta["network_settings"][key[0]] = record["network_settings"]
        meta["provenance"][f"{key[0]}/fold_{key[1]}"] = record["provenance"]
        atomic_write_text(self.meta_json, json.dumps(meta, indent=1) + "\n")


def _provenance_lines(meta: dict[str, Any]) -> list[str]:
    """The commands that made the rows, grouped by (command, machine, commit), each with the rows it made."""
    groups: dict[str, dict[str, Any]] = {}
    for run, prov in meta["provenance"].items():
        key = json.dumps([prov.get("command"), prov.get("machine"), prov.get("commit")], sort_keys=True)
        group = groups.setdefault(key, {**prov, "runs": [], "dates": []})
        group["runs"].append(run)
        group["dates"].append(prov.get("date", ""))
    lines = []
    for group in groups.values():
        dates = sorted(d for d in group["dates"] if d)
        shown = {**group, "date": f"{dates[0]} to {dates[-1]}" if len(dates) > 1 else (dates or ["?"])[0]}
        lines += [f"Runs {', '.join(sorted(group['runs']))}:  ", provenance_markdown(shown)]
    return lines


def _protocol_sentence(protocol: dict[str, Any]) -> str:
    length = (f"{protocol['steps']} optimizer steps per run" if protocol["steps"] is not None
              else f"a wall-clock budget of {protocol['budget_minutes']:g} min per run (no verdicts)")
    compute = {k: v for k, v in (protocol.get("steps_of") or {}).items() if v not in (None, protocol["steps"])}
    extra = "".join(f"; {label} trains {steps} steps (equal compute)" for label, steps in compute.items())
    return (f"{length}{extra}; patch {protocol['patch_size']}, batch {protocol['batch_size']}, "
            f"{protocol['optimizer']} lr {protocol['lr']}, precision {protocol['precision']}; "
            f"{protocol['folds']}-fold cross-validation (split seed {protocol['split_seed']} for every model; fold k "
            "trains with seed k); each run scored on its fold's held-out cases from its last checkpoint"
            + (" with mirroring test-time augmentation." if protocol["tta"] else " (no test-time augmentation)."))


def _step_cost_lines(files: ReportFiles) -> list[str]:
    cost = files.step_costs()
    if cost is None:
        return ["Step cost: not measured yet (`usema bench accuracy --measure-step-cost` on an idle machine)."]
    ratios, intervals = cost_ratios(cost), ratio_intervals(cost)
    lines = [f"Step cost (seconds per training step, median of {cost['rounds']} interleaved rounds; usema's step "
             "over the model's, the median of the rounds' ratios, which decides equal compute above "
             f"{EQUAL_COMPUTE_RATIO:.2f}, with its distribution-free 95% interval over the rounds; load average "
             f"{cost['load_average_before']:.2f} before, {cost['load_average_after']:.2f} after):", "",
             "| model | s/step | usema / model | 95% interval |", "|---|---|---|---|"]
    for label, value in cost["seconds_per_step"].items():
        ratio = f"{ratios[label]:.3f}" if label in ratios else ""
        interval = intervals.get(label)
        shown = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        lines.append(f"| {label} | {value:.3f} | {ratio} | {shown} |")
    machine = cost.get("machine", {})
    lines += ["", f"Measured on {machine.get('cpu', '?')} ({machine.get('cpu_capability', '?')}), "
                  f"{machine.get('torch_threads', '?')} torch threads, {cost.get('date', '?')}, "
                  f"commit {cost.get('commit', '?')}."]
    return lines


def _table(columns: list[str], rows: list[dict]) -> list[str]:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if not value.is_integer() else f"{value:g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(row.get(k, "")) for k in columns) + " |" for row in rows]


def report_metrics(per_case: list[dict[str, str]]) -> tuple[str, ...]:
    """The metrics a report compares: Dice, and instance F1 where the scores hold it."""
    return ("dice", "f1") if any("f1" in r for r in per_case[:1]) else ("dice",)


def write_report(files: ReportFiles) -> Path:
    """Write accuracy_<name>.md (and its plot) from the study's files alone."""
    meta, rows, per_case = files.meta(), files.rows(), files.per_case()
    if not rows or meta["protocol"] is None:
        raise UsemaError(f"{files.rows_csv}: no rows to report")
    protocol = meta["protocol"]
    metrics = report_metrics(per_case)
    means = run_means(per_case)  # re-derived from the per-case scores
    table = []
    for row in sorted(rows, key=lambda r: (r["model"], int(r["fold"]))):
        entry = {k: row.get(k, "") for k in ROW_KEYS if k != "commit"}
        for k in ("params_m", "train_minutes", "steps_per_second", "load_average", "predict_seconds"):
            entry[k] = float(entry[k]) if entry[k] not in ("", None) else ""
        entry["commit"] = row.get("commit", "")[:10]
        for metric, value in means.get((row["model"], int(row["fold"])), {}).items():
            entry[f"mean_{metric}"] = value
        table.append(entry)
    columns = list(dict.fromkeys(k for entry in table for k in entry))
    lines = [f"# Accuracy on {files.name}", "", *_provenance_lines(meta), "", _protocol_sentence(protocol), "",
             "Network settings beyond each preset and the plan's strides:", ""]
    lines += [f"- `{label}`: {json.dumps(s) if s else 'preset settings'}"
              for label, s in meta["network_settings"].items()]
    lines += ["", *_step_cost_lines(files), "", *fold_table_lines(means, metrics), "",
              "Every run (mean scores re-derived from per_case_" + files.name + ".csv):", "", *_table(columns, table)]
    comparisons = comparison_lines(per_case, rows, metrics, verdicts=protocol["steps"] is not None,
                                   total_folds=protocol.get("folds"))
    if comparisons:
        lines += ["", *comparisons]
    curves = curve_lines(files.curves(), files.plot)
    if curves:
        lines += ["", *curves]
    return atomic_write_text(files.markdown, "\n".join(lines) + "\n")

"""`usema bench accuracy`: every model trained with one protocol on the same cross-validation folds, then
predicted and scored.

The protocol: one shared plan (patch, batch, augmentation, optimiser, precision), the same 5-fold split for
every model (split seed 0; fold k trains with seed k, so folds carry the training noise), and a fixed number
of optimizer steps, which the machine's load cannot bend. Each (model, fold) is one run folder, trained,
predicted from its last checkpoint on the fold's held-out cases and scored; the run's row, its per-case scores
and its validation curve go into the report's files, which alone re-derive every table (`--report-only`).

Two invocations may work through one study side by side (one core each): each run is claimed with a lock,
and a run claimed by another process is skipped. Every run records the git commit it trained at; a study
refuses to mix commits unless told.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usema.bench.accuracy_report import (
    ReportFiles,
    collect_run,
    protocol_record,
    write_report,
)
from usema.bench.accuracy_summary import write_summary
from usema.bench.step_cost import EQUAL_COMPUTE_RATIO, cost_ratios, equal_compute_steps, measure_step_costs
from usema.bench.variants import Variant, expand_placements
from usema.checkpoint import checkpoint_path, fold_dir
from usema.data import load_dataset
from usema.errors import UsemaError
from usema.planning import PLANS_NAME, Plans
from usema.preprocessing import PREPROCESSED_DIR, preprocess_dataset
from usema.utils.atomic import atomic_write_text
from usema.utils.lock import folder_lock
from usema.utils.provenance import git_commit, provenance

# How long a worker of a shared study waits for another's planning or report writing before giving up
SHARED_STEP_WAIT_S = 3600.0

# Known datasets under the shared data folder: (folder, label mode; instance labels are scored as instances).
DATASETS = {
    "hippocampus": ("hippocampus", "semantic"),
    "dsb2018": ("dsb2018", "instance"),
    "kvasir_seg": ("kvasir_seg", "semantic"),
    "chaos_mr_t2": ("chaos_mr_t2", "semantic"),
}
FOLDS = 5
# The split is drawn once for every model, as nnU-Net does: a training seed changes the initialisation and
# the sampling, never which cases are held out.
SPLIT_SEED = 0
COMPUTE_SUFFIX = "@compute"
LOAD_SAMPLE_SECONDS = 15.0


def _default_data_root() -> Path:
    return Path(os.environ.get("USEMA_DATA_ROOT", Path.cwd().parent / "shared" / "data"))


def resolve_dataset(dataset: str, data_root: str | Path | None = None) -> tuple[str, Path, str | None]:
    """(name, folder, label mode) of a known dataset name or a dataset folder (whose mode the planner finds)."""
    if dataset in DATASETS:
        folder, mode = DATASETS[dataset]
        path = Path(data_root or _default_data_root()) / folder
        if not path.is_dir():
            raise UsemaError(f"dataset {dataset!r} not found at {path} (set --data-root)")
        return dataset, path, mode
    path = Path(dataset)
    if not path.is_dir():
        raise UsemaError(f"{dataset}: neither a known dataset ({', '.join(DATASETS)}) nor a folder")
    return path.name, path, None


class _LoadSampler:
    """The 1-minute load average, sampled every LOAD_SAMPLE_SECONDS while a run trains: its mean says how busy
    the machine was (which bends the run's time, never its steps)."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_SECONDS):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> _LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples)


def _link_references(cases, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = folder / case.label.name
        if not link.exists():
            os.symlink(case.label.resolve(), link)
    return folder


def _score(run_dir: Path, fold: int, cases, device: str, precision: str | None,
           tta: bool) -> tuple[dict, float, Path]:
    """Predict the held-out cases from the last checkpoint and score them: (evaluation summary, predict seconds,
    evaluation folder)."""
    import usema

    suffix = "".join(f"_{part}" for part in (precision, "tta" if tta else None) if part)
    # beside the run, since predict writes nothing into a run folder
    folder = run_dir.parent / f"{run_dir.name}_scores"
    started = time.monotonic()
    predictions = folder / f"predictions{suffix}"
    # the benchmark's own folder: a rerun (after a kill while scoring) predicts again over what it had written
    usema.predict(run_dir, [img for c in cases for img in c.images], predictions, checkpoint="latest", device=device,
            fold=fold, precision=precision, tta=tta, overwrite=True)
    seconds = time.monotonic() - started
    references = _link_references(cases, folder / "references")
    evaluation = folder / f"evaluation{suffix}"
    # the references are linked without their dataset.json: the run's plan gives the classes, their label
    # values and names, and the ignore label
    scores = usema.evaluate(predictions, references, output=evaluation, run=run_dir)
    return scores, seconds, evaluation


def _prepare_run(run_dir: Path, base_plans: Plans, variant: Variant, steps: int | None, shared: Path) -> None:
    """The run folder of one (model, fold): its plan (the shared one for this model, with its steps), the
    shared split, and the shared preprocessed cases linked in (preprocessing does not depend on the model)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / PLANS_NAME).is_file():
        # each model gets its own SEMA placement and windows and keeps of the shared plan's other settings
        # those it takes (no placement for usema-nosema, no head_dim for nnU-Net's UNet); see Plans.with_model
        plans = base_plans.with_model(variant.model, variant.settings or None)
        if steps is not None:
            iters = plans.training.iters_per_epoch
            plans = plans.with_training(plans.training.with_choices(epochs=steps // iters))
        plans.save(run_dir)
    # the study's split, before training writes one drawn with the training seed
    from usema.training import SPLITS_NAME, load_or_create_splits

    load_or_create_splits(run_dir, base_plans.dataset.case_ids, FOLDS, SPLIT_SEED)
    split_seed = json.loads((run_dir / SPLITS_NAME).read_text()).get("seed")
    if split_seed != SPLIT_SEED:
        raise UsemaError(f"{run_dir / SPLITS_NAME}: split drawn with seed {split_seed}, not the study's "
                         f"{SPLIT_SEED}; delete {run_dir} to run it again")
    link = run_dir / PREPROCESSED_DIR
    if not link.exists():
        os.symlink(os.path.relpath(shared / PREPROCESSED_DIR, run_dir), link)


def _keep_one_commit(folder: Path, commit: str, resuming: bool) -> None:
    """Record the commit a run starts at (fold_K/bench_started.json), and refuse to resume it at another: the
    row records one commit, so its training must not have changed code halfway. (Runs started before this
    record existed resume unchecked.)"""
    marker = folder / "bench_started.json"
    if resuming and marker.is_file():
        began = json.loads(marker.read_text()).get("commit")
        if began != commit:
            raise UsemaError(
                f"{folder}: this run started at commit {began}, this checkout is {commit}: a run must not mix "
                f"code. Resume it from a worktree of {str(began).split('+')[0]}, or delete {folder.parent} to "
                "train it again")
    elif not resuming:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"commit": commit}) + "\n")


def run_one(data: Path, run_dir: Path, fold: int, variant: Variant, device: str,
            budget_minutes: float | None, also_infer: Sequence[str] = (), tta: bool = False) -> dict[str, Any]:
    """Train (or resume), predict and score one model on one fold; returns the run's record (row, per-case
    scores, validation curve) and writes it to fold_K/bench_result.json."""
    import usema
    from usema.training import load_or_create_splits

    folder = fold_dir(run_dir, fold)
    result_path = folder / "bench_result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    done_marker = folder / "bench_done.json"
    if not done_marker.is_file():
        started = checkpoint_path(run_dir, "latest", fold).is_file()
        commit = git_commit()
        _keep_one_commit(folder, commit, started)
        with _LoadSampler() as load:
            began = time.monotonic()
            # the budget is the whole run's: a resumed run trains what is left of it, or only closes its epoch;
            # a signal raises Interrupted: no row for a half-trained model, the next invocation resumes it
            summary = usema.train(data, run_dir, model=variant.model, fold=fold, folds=FOLDS, seed=fold, device=device,
                            resume=started, max_minutes=budget_minutes)
            wall = time.monotonic() - began
        if budget_minutes is None and summary.get("out_of_time"):
            raise UsemaError(f"{folder}: a time budget stopped it after epoch {summary.get('last_epoch')} of "
                             f"{summary.get('epochs')}; a run of the study trains all its steps, so it gets no row "
                             f"(delete {run_dir} to train it again)")
        earlier = json.loads(done_marker.read_text()) if done_marker.is_file() else {}
        atomic_write_text(done_marker, json.dumps({
            **earlier, "commit": commit, "load_average": load.mean, "wall_seconds": wall,
            "resumed": started, **provenance(),
        }, indent=1))
    plans = Plans.load(run_dir)
    spec = load_dataset(data, plans.dataset.label_mode)
    held_out = load_or_create_splits(run_dir, plans.dataset.case_ids, FOLDS, SPLIT_SEED)[fold]["val"]
    cases = [spec.case(c) for c in held_out]
    _, predict_seconds, evaluation = _score(run_dir, fold, cases, device, None, tta)
    extra = {}
    for precision in also_infer:
        _, seconds, folder = _score(run_dir, fold, cases, device, precision, tta)
        extra[precision] = {"predict_seconds": seconds, "evaluation": str(folder)}
    record = collect_run(run_dir, fold, variant, json.loads(done_marker.read_text()), evaluation,
                         predict_seconds, extra)
    atomic_write_text(result_path, json.dumps(record, indent=1))
    return record


def _base_plans(data: Path, runs: Path, label_mode: str | None, device: str, precision: str,
                plan_edits: dict[str, Any], steps: int | None) -> Plans:
    """The study's shared plan: made once for the training device (`plan_for_device`, untimed: on a CPU the
    compact network), then read back; a later invocation with other steps is refused."""
    from usema.planning import plan_for_device

    if (runs / PLANS_NAME).is_file():
        plans = Plans.load(runs)
    else:
        edits = dict(plan_edits)
        if precision != "auto":
            edits["precision"] = precision
        if steps is None:
            # epochs large: the wall-clock budget, not the epoch count, ends each run (the schedule follows time)
            edits.setdefault("epochs", 10_000)
        else:
            # no wall-clock budget (a CPU plan's default is 30 minutes): the steps alone end each run
            edits["time_budget_minutes"] = None
        plans, _ = plan_for_device(data, runs, device=device, label_mode=label_mode, edits=edits)
    if steps is not None:
        budget = plans.training.time_budget_minutes
        if budget is not None:
            raise UsemaError(f"{runs / PLANS_NAME}: this study's plan stops each run after {budget:g} minutes, so its "
                             f"runs need not train their {steps} steps; use another --runs-dir")
        iters = plans.training.iters_per_epoch
        if steps < 1 or steps % iters:
            raise UsemaError(f"--steps {steps} is not a whole number of epochs of {iters} iterations")
        planned = plans.training.epochs * iters
        if planned != steps:
            if (runs / "bench_study.json").is_file():
                raise UsemaError(f"{runs / PLANS_NAME}: this study trains {planned} steps, not {steps}; use "
                                 "another --runs-dir")
            plans = plans.with_training(plans.training.with_choices(epochs=steps // iters))
            plans.save(runs)
        atomic_write_text(runs / "bench_study.json", json.dumps({"steps": steps}))
    return plans


def _variants_with_compute(variants: list[Variant], steps: int | None, files: ReportFiles,
                           iters_per_epoch: int) -> tuple[list[Variant], dict[str, int | None]]:
    """The variants, plus a control `X@compute` for every control whose step costs less than our model's by more
    than EQUAL_COMPUTE_RATIO (the measured paired ratio, `cost_ratios`), and every label's steps."""
    steps_of: dict[str, int | None] = {v.label: steps for v in variants}
    cost_file = files.step_cost
    if steps is None or not cost_file.is_file():
        return variants, steps_of
    ours = next((v for v in variants if v.label == "usema"), None)
    ratios = cost_ratios(json.loads(cost_file.read_text()))
    if ours is None or not ratios:
        return variants, steps_of
    extra = []
    for variant in variants:
        if variant is ours or variant.label not in ratios:
            continue
        if ratios[variant.label] > EQUAL_COMPUTE_RATIO:
            label = variant.label + COMPUTE_SUFFIX
            extra.append(Variant(label, variant.model, variant.settings))
            steps_of[label] = equal_compute_steps(steps, ratios[variant.label], iters_per_epoch)
    return variants + extra, steps_of


def run_accuracy_benchmark(
    dataset: str,
    models: list[str],
    folds: Sequence[int] = tuple(range(FOLDS)),
    budget_minutes: float | None = None,
    steps: int | None = None,
    output: str | Path = "benchmarks/cv",
    runs_dir: str | Path = "runs/cv",
    data_root: str | Path | None = None,
    precision: str = "auto",
    device: str = "auto",
    plan_edits: dict[str, Any] | None = None,
    also_infer: Sequence[str] = (),
    tta: bool = False,
    network_settings: dict[str, dict[str, Any]] | None = None,
    placements: list[str] | None = None,
    allow_mixed_commits: bool = False,
    measure_steps: bool = False,
) -> list[dict[str, Any]]:
    """Train and score every model on each of `folds`; writes accuracy_<dataset>.{csv,md,png}, the per-case
    scores, the validation curves and the protocol under `output` after every run. `steps`: every model trains
    this many optimizer steps (the protocol verdicts come from); `budget_minutes`: wall-clock budgets instead,
    reported without verdicts. `plan_edits` (KEY=JSON) go to the shared plan; `network_settings` maps a model to
    network settings of its own. `placements`: every SEMA preset once per placement ("usema@deepest-2").
    `measure_steps`: only measure every model's step cost (interleaved; an idle machine) into
    step_cost_<dataset>.json, from which controls that are more than 10% cheaper per step get an equal-compute
    run ("nnunet@compute"). Returns the rows of the report."""
    from usema.utils.device import resolve_device

    if not measure_steps and (steps is None) == (budget_minutes is None):
        raise UsemaError("give either --steps (equal steps, the protocol) or --budget (minutes, no verdicts)")
    unknown = sorted(set(network_settings or {}) - set(models))
    if unknown:
        raise UsemaError(f"--network-settings names {', '.join(unknown)}, which this run does not train")
    bad_folds = [f for f in folds if not 0 <= f < FOLDS]
    if bad_folds:
        raise UsemaError(f"--folds {bad_folds}: folds are 0 to {FOLDS - 1}")
    variants = [Variant(v.label, v.model, {**(network_settings or {}).get(v.model, {}), **v.settings})
                for v in expand_placements(models, placements)]
    name, data, label_mode = resolve_dataset(dataset, data_root)
    runs = Path(runs_dir) / name
    files = ReportFiles(Path(output), name)
    # one process plans and preprocesses; a second one, started beside it, waits (kvasir_seg takes minutes)
    with folder_lock(runs / "bench_planning", wait_s=SHARED_STEP_WAIT_S):
        # measuring the step costs fixes no step count: the budget is chosen from them
        base_plans = _base_plans(data, runs, label_mode, device, precision, dict(plan_edits or {}),
                                 None if measure_steps else steps)
        if not measure_steps:  # the step costs are timed on random data
            preprocess_dataset(base_plans, runs)
    if measure_steps:
        plans_by_label = {v.label: base_plans.with_model(v.model, v.settings or None) for v in variants}
        measured = measure_step_costs(plans_by_label, resolve_device(device))
        files.step_cost.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(files.step_cost, json.dumps({**measured, **provenance(resolve_device(device))},
                                                      indent=1) + "\n")
        print(json.dumps({"seconds_per_step": measured["seconds_per_step"], "usema_over": cost_ratios(measured)}))
        return []
    variants, steps_of = _variants_with_compute(variants, steps, files, base_plans.training.iters_per_epoch)
    protocol = protocol_record(base_plans, steps, budget_minutes, tta, FOLDS, SPLIT_SEED,
                               {v.label: v.model for v in variants}, steps_of)
    files.check_protocol(protocol)
    commit = git_commit()
    if not allow_mixed_commits:
        files.check_commit(commit)
    for fold in folds:
        for variant in variants:
            if files.has_row(variant.label, fold):
                continue
            run_dir = runs / variant.label / f"run_fold_{fold}"
            with contextlib.ExitStack() as claim:
                try:
                    claim.enter_context(folder_lock(run_dir / "bench_claim"))
                except UsemaError:
                    print(f"{variant.label} fold {fold}: claimed by another process, skipped")
                    continue
                _prepare_run(run_dir, base_plans, variant, steps_of[variant.label], runs)
                record = run_one(data, run_dir, fold, variant, device, budget_minutes, also_infer, tta)
            with folder_lock(files.output / ".bench_report", wait_s=SHARED_STEP_WAIT_S):
                files.add_record(record, protocol)
                write_report(files)
                write_summary(files.output)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record["row"].items()}))
    return files.rows()

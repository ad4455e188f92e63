"""`usema bench accuracy`: every model trained with the identical protocol, then predicted and scored.

Same plan (patch, batch, augmentation, optimiser), same fixed 80/20 split (fold 0 of 5), same wall-clock
budget and seed for every model; each model is evaluated on the held-out fold from its last checkpoint (the
end of its decayed schedule). One row per model and seed; the run resumes model by model.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usema.bench.accuracy_report import load_history, record_row, write_report
from usema.bench.variants import expand_placements
from usema.data.layouts import load_dataset
from usema.errors import UsemaError
from usema.planning import PLANS_NAME, Plans, plan_dataset
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import provenance

# Known datasets under the shared data folder: (folder, label mode, metrics reported).
DATASETS = {
    "hippocampus": ("hippocampus", "semantic", False),
    "dsb2018": ("dsb2018", "instance", True),
}
FOLDS, FOLD = 5, 0  # fold 0 of 5: the fixed 80/20 split
# The split is drawn once for every model and seed, as nnU-Net does: a training seed changes the initialisation
# and the sampling, never which cases are held out, so rows of different seeds score the same cases.
SPLIT_SEED = 0
SUMMARY_METRICS = ("dice", "nsd", "hd95", "f1")


def _default_data_root() -> Path:
    return Path(os.environ.get("USEMA_DATA_ROOT", Path.cwd().parent / "shared" / "data"))


def resolve_dataset(dataset: str, data_root: str | Path | None = None) -> tuple[str, Path, str, bool]:
    """(name, folder, label mode, instance scoring) of a known dataset name or a dataset folder."""
    if dataset in DATASETS:
        folder, mode, instance = DATASETS[dataset]
        path = Path(data_root or _default_data_root()) / folder
        if not path.is_dir():
            raise UsemaError(f"dataset {dataset!r} not found at {path} (set --data-root)")
        return dataset, path, mode, instance
    path = Path(dataset)
    if not path.is_dir():
        raise UsemaError(f"{dataset}: neither a known dataset ({', '.join(DATASETS)}) nor a folder")
    return path.name, path, "semantic", False


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _progress(fold_dir: Path) -> tuple[int, float]:
    """(optimizer steps, training seconds) of the run so far, from its latest checkpoint: an epoch cut short by
    the budget or a kill counts its part. Checkpoints older than the seconds field: the logged epochs' seconds."""
    from usema.training.checkpoint import load_checkpoint

    checkpoint = fold_dir / "checkpoint_latest.pt"
    if not checkpoint.is_file():
        return 0, 0.0
    payload = load_checkpoint(checkpoint)
    seconds = payload.get("trained_seconds")
    if seconds is None:
        seconds = sum(float(r["seconds"]) for r in _read_rows(fold_dir / "train_log.csv"))
    return int(payload["scheduler_state"]["last_epoch"]), float(seconds)


def _link_references(cases, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = folder / case.label.name
        if not link.exists():
            os.symlink(case.label.resolve(), link)
    return folder


def _score(run_dir: Path, cases, spec, instance: bool, device: str, precision: str | None,
           tta: bool) -> tuple[dict, float]:
    """Predict the held-out cases from the last checkpoint and score them: (evaluation summary, predict seconds)."""
    from usema.evaluation.api import evaluate
    from usema.inference.api import predict

    suffix = "".join(f"_{part}" for part in (precision, "tta" if tta else None) if part)
    started = time.monotonic()
    predictions = run_dir / f"predictions{suffix}"
    # the benchmark's own folder: a rerun (after a kill while scoring) predicts again over what it had written
    predict(run_dir, [img for c in cases for img in c.images], predictions, checkpoint="latest", device=device,
            fold=FOLD, precision=precision, tta=tta, overwrite=True)
    seconds = time.monotonic() - started
    references = _link_references(cases, run_dir / "reference_labels")
    labels = None if instance else spec.labels
    # the references are linked without their dataset.json: the dataset's ignore label is passed on
    scores = evaluate(predictions, references, output=run_dir / f"evaluation{suffix}", instance=instance,
                      labels=labels, ignore_label=spec.ignore_value)
    return scores, seconds


def run_one(data: Path, run_dir: Path, base_plans: Plans, model: str, seed: int, budget_minutes: float | None,
            device: str, instance: bool, also_infer: Sequence[str] = (), tta: bool = False,
            network_settings: dict[str, Any] | None = None, label: str | None = None) -> dict[str, Any]:
    """Train, predict and evaluate one model (also in the `also_infer` precisions); resumes a run that was cut
    short. `network_settings` are this model's own, on top of the shared plan's; `label` names the row
    (default: the model). Without a budget the plan's epochs end the training."""
    from usema.training.api import stop_if_interrupted, train
    from usema.training.splits import SPLITS_NAME, load_or_create_splits

    fold_dir = run_dir / f"fold_{FOLD}"
    if not (run_dir / PLANS_NAME).is_file():
        # each model gets its own SEMA placement and windows and keeps of the shared plan's other settings
        # those it takes (no placement for usema-nosema, no head_dim for nnU-Net's UNet); see Plans.with_model
        base_plans.with_model(model, network_settings).save(run_dir)
    load_or_create_splits(run_dir, base_plans.dataset.case_ids, FOLDS, SPLIT_SEED)
    split_seed = json.loads((run_dir / SPLITS_NAME).read_text()).get("seed")
    if split_seed != SPLIT_SEED:
        raise UsemaError(f"{run_dir / SPLITS_NAME}: split drawn with seed {split_seed}, not the benchmark's "
                         f"{SPLIT_SEED}; delete {run_dir} and its row in the CSV to run it again")
    done_marker = fold_dir / "bench_done.json"
    started = (fold_dir / "checkpoint_latest.pt").is_file()
    if not done_marker.is_file():
        # the budget is the whole run's: a resumed run trains what is left of it, or only closes its last epoch
        summary = train(data, run_dir, model=model, fold=FOLD, folds=FOLDS, seed=seed, device=device,
                        resume=started, max_minutes=budget_minutes)
        # stopped by a signal: no row for a half-trained model; the next run resumes it
        stop_if_interrupted(summary)
        atomic_write_text(done_marker, json.dumps({"epochs": summary["last_epoch"]}))
    plans = Plans.load(run_dir)
    spec = load_dataset(data, plans.dataset.label_mode)
    held_out = load_or_create_splits(run_dir, plans.dataset.case_ids, FOLDS, SPLIT_SEED)[FOLD]["val"]
    cases = [spec.case(c) for c in held_out]
    scores, predict_seconds = _score(run_dir, cases, spec, instance, device, None, tta)
    log_rows = _read_rows(fold_dir / "train_log.csv")
    steps, seconds = _progress(fold_dir)
    network = plans.build_network()  # as trained: UNETR at the plan's patch size
    row: dict[str, Any] = {
        "model": label or model,
        "seed": seed,
        "params_m": sum(p.numel() for p in network.parameters()) / 1e6,
        "epochs": len(log_rows),
        "iterations": steps,
        "train_minutes": seconds / 60.0,
        "val_cases": len(cases),
        "predict_seconds": predict_seconds,
    }
    for metric in SUMMARY_METRICS:
        if metric in scores["mean"]:
            row[f"mean_{metric}"] = scores["mean"][metric]
    if not instance:
        for entry in scores["classes"].values():
            row[f"dice_{entry['name']}"] = entry["dice"]["mean"]
    for precision in also_infer:
        extra, seconds = _score(run_dir, cases, spec, instance, device, precision, tta)
        row[f"{precision}_predict_seconds"] = seconds
        for metric in SUMMARY_METRICS:
            if metric in extra["mean"]:
                row[f"{precision}_mean_{metric}"] = extra["mean"][metric]
    return row


def run_accuracy_benchmark(
    dataset: str,
    models: list[str],
    seeds: list[int] = (0,),
    budget_minutes: float = 15.0,
    output: str | Path = "benchmarks/results",
    runs_dir: str | Path = "runs/bench",
    data_root: str | Path | None = None,
    precision: str = "auto",
    device: str = "auto",
    plan_edits: dict[str, Any] | None = None,
    also_infer: Sequence[str] = (),
    tta: bool = False,
    network_settings: dict[str, dict[str, Any]] | None = None,
    steps: int | None = None,
    placements: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train and score every model on `dataset`; writes accuracy_<dataset>.csv/.md under `output`. `also_infer`
    lists extra inference precisions, each scored from the same checkpoint into extra columns; `tta` scores
    with mirroring test-time augmentation (every model alike). `plan_edits` (KEY=JSON) go to the shared plan
    (`plan_dataset`); `network_settings` maps a model to network settings of its own (e.g. where SEMA blocks
    go), merged over the shared plan's and listed in the Markdown.
    `steps`: train every model for this many optimizer steps instead of `budget_minutes` (equal steps rather
    than equal time). `placements`: train every SEMA preset once per placement of its SEMA blocks (rows
    "usema@deepest-2")."""
    from usema.utils.device import resolve_device

    unknown = sorted(set(network_settings or {}) - set(models))
    if unknown:
        raise UsemaError(f"--model-overrides names {', '.join(unknown)}, which this run does not train")
    variants = expand_placements(models, placements)
    name, data, label_mode, instance = resolve_dataset(dataset, data_root)
    runs = Path(runs_dir) / name
    base = runs / PLANS_NAME
    edits = dict(plan_edits or {})
    existing = base.is_file()
    if existing:
        base_plans = Plans.load(runs)
    else:
        if steps is None:
            # epochs large: the wall-clock budget, not the epoch count, ends each run (the schedule follows time)
            edits.setdefault("epochs", 10_000)
        base_plans = plan_dataset(data, runs, label_mode=label_mode, device=device, precision=precision,
                                  **edits)
    if steps is not None:
        training = base_plans.training
        iters = training.iters_per_epoch
        if steps < 1 or steps % iters:
            raise UsemaError(f"--steps {steps} is not a whole number of epochs of {iters} iterations")
        planned = training.epochs * iters
        if existing and planned != steps:
            raise UsemaError(f"{base}: planned for {planned} steps, not {steps}; use another --runs-dir")
        base_plans = base_plans.with_training(training.with_choices(epochs=steps // iters))
        base_plans.save(runs)
        budget_minutes = None
    output = Path(output)
    csv_path, md_path = output / f"accuracy_{name}.csv", output / f"accuracy_{name}.md"
    rows = list(_read_rows(csv_path))
    done = {(r["model"], int(r["seed"])) for r in rows}
    history = load_history(output / f"accuracy_{name}.json", md_path, rows)
    for variant in variants:
        for seed in seeds:
            if (variant.label, seed) in done:
                print(f"{variant.label} seed {seed}: already in {csv_path}, skipped")
                continue
            settings = {**(network_settings or {}).get(variant.model, {}), **variant.settings}
            row = run_one(data, runs / variant.label / f"seed_{seed}", base_plans, variant.model, seed,
                          budget_minutes, device, instance, also_infer, tta, settings, label=variant.label)
            rows.append(row)
            record_row(history, provenance(resolve_device(device)), variant.label, seed)
            write_report(rows, history, csv_path, md_path, name, _protocol(budget_minutes, base_plans, tta), runs,
                         evaluation="evaluation_tta" if tta else "evaluation", fold=FOLD)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    return rows


def _protocol(budget: float | None, plans: Plans, tta: bool) -> str:
    """The sentence of the report that states what every row shares."""
    training = plans.training
    steps = training.epochs * training.iters_per_epoch
    length = f"Budget {budget:g} min of training per model" if budget is not None else f"{steps} optimizer steps per model"
    return (f"{length}; patch {plans.patch_size}, batch "
            f"{plans.batch_size}, {training.optimizer} lr {training.lr}, "
            f"precision {training.precision}; fold {FOLD} of {FOLDS} (80/20, split seed "
            f"{SPLIT_SEED} for every model and seed); scored on the held-out fold from the last checkpoint"
            + (" with mirroring test-time augmentation." if tta else " (no test-time augmentation)."))

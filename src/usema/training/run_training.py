"""`usema train`: plan (if needed), preprocess, split, and train one fold, alone or under torchrun (DDP)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from usema.checkpoint import CHECKPOINT_NAMES, Checkpoint, checkpoint_path, fold_dir, trained_folds
from usema.data.datasets import lexical_absolute
from usema.errors import CheckpointError, Interrupted, UsemaError
from usema.planning.device import describe_plan, device_mismatch, plan_for_device, training_length
from usema.planning.planner import check_plan_edits, check_run_folder
from usema.planning.plans import PLANS_NAME, Plans
from usema.planning.schema import is_positive
from usema.planning.settings import TRAINING_KEYS, TrainingSettings, check_setting
from usema.preprocessing.dataset import preprocess_dataset
from usema.training.batches import load_training_cases
from usema.training.distributed import barrier, init_distributed, require_shared_run_folder, shutdown
from usema.training.loop import Trainer
from usema.training.splits import load_or_create_splits, validation_subset, write_validation_subset
from usema.training.timing import time_training
from usema.utils.device import resolve_device, resolve_precision
from usema.utils.lock import folder_lock


def apply_choices(
    plans: Plans,
    model: str | None = None,
    epochs: int | None = None,
    iters_per_epoch: int | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    precision: str | None = None,
    num_workers: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Plans:
    """The plan with the caller's choices (None or "auto" = keep the plan's): another model (with its own SEMA
    windows) and the training settings: `settings` (further training keys of --plan: lr, val_max_cases, ...)
    first, then the named choices (`TrainingSettings.with_choices`: switching optimiser also switches to that
    optimiser's default learning rate)."""
    if model is not None and model != plans.model_name:
        plans = plans.with_model(model)
    given = {key: value for key, value in (settings or {}).items() if value is not None}
    for key, value in given.items():
        check_setting(key, value)
    if given:
        try:
            training = TrainingSettings.from_dict({**plans.training.to_dict(), **given})
        except (TypeError, ValueError) as err:
            raise UsemaError(f"training settings {given}: {err}") from err
        plans = plans.with_training(training)
    training = plans.training.with_choices(
        optimizer=optimizer, epochs=epochs, iters_per_epoch=iters_per_epoch, schedule=schedule,
        precision=precision, num_workers=num_workers,
    )
    return plans.with_training(training)


def split_plan_edits(edits: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """--plan edits as (training settings, which a run may change at any time; the others, which shape the
    plan)."""
    edits = dict(edits or {})
    training = {key: value for key, value in edits.items() if key in TRAINING_KEYS}
    return training, {key: value for key, value in edits.items() if key not in training}


def _same_folder(a: Path, b: Path) -> bool:
    """The same path, or two paths (e.g. through a symbolic link) to the same existing folder."""
    if lexical_absolute(a) == lexical_absolute(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _plans_for_run(
    data: Path, run_dir: Path, model: str | None, label_mode: str | None, device: str,
    edits: dict[str, Any], epochs: int | None, iters_per_epoch: int | None,
) -> Plans:
    """RUN/plans.json as the user left it, or a new plan of `data` for `device` when there is none (its training
    timed with the trainer's timing, for the lines printed, when the epochs are the plan's; its description
    shows the epochs and steps this run trains).
    An existing plan must have been made from the same dataset, label mode and plan-shaping --plan edits."""
    if not (run_dir / PLANS_NAME).is_file():
        print(f"planning {data} into {run_dir / PLANS_NAME}", file=sys.stderr)
        plans, timed = plan_for_device(data, run_dir, device, model=model or "usema", label_mode=label_mode,
                                       edits=edits, time_training=time_training if epochs is None else None)
        trained = plans.with_training(plans.training.with_choices(epochs=epochs, iters_per_epoch=iters_per_epoch))
        for line in describe_plan(trained, timed):
            print(line, file=sys.stderr)
        if trained.training != plans.training:
            print(f"{run_dir / PLANS_NAME} keeps the planner's {training_length(plans)}; --epochs and "
                  "--iters-per-epoch apply to this run", file=sys.stderr)
        return plans
    plans = Plans.load(run_dir)
    where, info = run_dir / PLANS_NAME, plans.dataset
    if not _same_folder(data, Path(info.path)):
        raise UsemaError(
            f"{where} was made for the dataset {info.path}, not {data}: use a new run folder "
            "(or edit dataset.path in plans.json if the dataset moved)"
        )
    if label_mode is not None and label_mode != info.label_mode:
        raise UsemaError(
            f"{where} was made for {info.label_mode} labels, not {label_mode}: use a new run folder"
        )
    shaping = split_plan_edits(edits)[1]
    check_plan_edits(shaping, plans.spatial_dims)
    planned_with = split_plan_edits(plans.plan_edits)[1]
    changed = sorted(key for key in shaping if shaping[key] != planned_with.get(key))
    if changed:
        key = changed[0]
        before = f"with {key}={planned_with[key]!r}" if key in planned_with else f"without --plan {key}"
        raise UsemaError(
            f"{where} was planned {before}; --plan {key}={shaping[key]!r} makes another plan: use a new run "
            f"folder, or plan this one again (usema plan DATA -o {run_dir} --plan ...)"
        )
    return plans


def _check_fold_is_free(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fold over a run already there, unless the caller resumes it or asks to overwrite it;
    with `overwrite` (and no resume) the earlier run's checkpoints are removed, so that the fold never holds a
    best checkpoint of one run beside the latest of another."""
    latest = folder / CHECKPOINT_NAMES["latest"]
    if resume or not latest.is_file():
        return
    if not overwrite:
        try:
            stored = Checkpoint.load(latest)
        except UsemaError:
            stored = None
        what = "a checkpoint that does not load"
        if stored is not None and stored.plans is not None and stored.epoch is not None:
            what = f"model {stored.network.name}, epoch {stored.epoch} of {stored.plans.training.epochs}"
        raise UsemaError(
            f"{folder} holds an earlier run ({what}): --resume continues it, --overwrite starts it over"
        )
    for name in CHECKPOINT_NAMES.values():
        (folder / name).unlink(missing_ok=True)


def _switch_model(plans: Plans, run_dir: Path, model: str | None, fold: int, overwrite: bool) -> Plans:
    """Make RUN/plans.json name `model` (with its own SEMA windows) when the caller trains another model than
    it names; refused while a fold holds checkpoints of the planned model, unless that fold is the one to be
    trained and the caller asks to overwrite it (the other folds would no longer load with the new plan)."""
    if model is None or model == plans.model_name:
        return plans
    trained = [fold_dir(run_dir, k).name for k in trained_folds(run_dir, "latest")]
    others = [name for name in trained if name != fold_dir(run_dir, fold).name]
    if others or (trained and not overwrite):
        remedy = ("or give --overwrite to start its fold over" if not others else
                  f"or delete {', '.join(others)} first (--overwrite starts over only the fold it trains)")
        raise UsemaError(
            f"{run_dir} is a run of model {plans.model_name} ({', '.join(trained)} trained): train "
            f"{model} in a new run folder, {remedy}"
        )
    plans = plans.with_model(model)
    plans.save(run_dir)
    return plans


def _with_the_runs_training(plans: Plans, latest: Path, report: bool) -> Plans:
    """The plan with the training settings the fold's run was started with (its checkpoint's), so that a resume
    given no --epochs, --iters-per-epoch or other choice continues the run as it began rather than with
    plans.json's defaults; the caller's choices still apply on top. A checkpoint that does not load is left to
    the trainer's restore, which names the problem."""
    try:
        trained = Checkpoint.load(latest).plans
    except UsemaError:
        return plans
    if trained is None or trained.training == plans.training:
        return plans
    if report:
        ours, theirs = trained.training.to_dict(), plans.training.to_dict()
        changed = ", ".join(f"{key} {ours[key]}" for key in ours if ours[key] != theirs.get(key))
        print(f"resume: {latest} continues with the settings its run began with ({changed}), not plans.json's",
              file=sys.stderr)
    return plans.with_training(trained.training)


def stop_if_interrupted(summary: dict[str, Any]) -> None:
    """Raise Interrupted when `train` returned early because of SIGINT or SIGTERM (its checkpoint is saved)."""
    if summary.get("interrupted"):
        raise Interrupted(
            f"stopped by a signal; {summary['checkpoint_latest']} is saved and --resume (in Python, resume=True) "
            "continues from it",
            summary.get("stop_signal"),
        )


def train(
    data: str | Path,
    run_dir: str | Path,
    model: str | None = None,
    label_mode: str | None = None,
    fold: int = 0,
    folds: int = 5,
    groups_csv: str | Path | None = None,
    epochs: int | None = None,
    iters_per_epoch: int | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    seed: int = 0,
    resume: bool = False,
    max_minutes: float | None = None,
    overwrite: bool = False,
    plan_edits: dict[str, Any] | None = None,
    num_workers: int | None = None,
    pretrained_weights: str | Path | None = None,
    force_pretrained: bool = False,
) -> dict[str, Any]:
    """Train fold `fold` of `folds` on `data`, writing RUN/fold_K/{checkpoint_latest.pt, checkpoint_best.pt,
    train_log.csv, progress.png}; returns a summary (best validation Dice, epochs run, checkpoint paths).

    RUN/plans.json is made if missing, else read as the user left it; the caller's choices replace its
    training settings. Under torchrun (env RANK/WORLD_SIZE) every process trains a share of each batch with
    DistributedDataParallel and only rank 0 writes. `max_minutes` (else the plan's time_budget_minutes) is
    the training time of the whole run, resumes included (the checkpoint keeps the time spent): the epoch that
    crosses it is cut short, validated and logged, and (outside DDP, where the rate follows time as well as
    steps) the learning rate has decayed to 0 there. A run resumed with its budget spent trains no more.
    SIGINT/SIGTERM save checkpoint_latest and return early (summary "interrupted"; `stop_if_interrupted`).
    One process at a time may write to RUN (a lock file holds its pid); RUN may not be the dataset folder
    nor lie in its image or label folders (`check_run_folder`). A fold that holds an earlier run is
    continued with `resume` or started over with `overwrite`, else refused; so is a model other than the one
    RUN/plans.json names while a fold holds checkpoints (with `overwrite`, allowed where only the fold to be
    trained does).
    `precision` None or "auto" keeps the plan's (as `predict` keeps the training precision), whose own "auto"
    is the device's (`usema.utils.device.resolve_precision`: bf16 autocast on CUDA and on CPUs with native bf16,
    fp16 with a GradScaler on GPUs without bf16, fp32 elsewhere).
    `resume` continues from checkpoint_latest, bit-identically on CPU.
    A new plan is made for the training device (`plan_for_device`: the compact network and a 30-minute
    training budget on a CPU); a plan made for another kind of device trains as it is, with a warning that names
    the settings chosen for that device. `plan_edits` (--plan KEY=JSON) shape a new plan; on an existing one
    their training keys apply to this run and the others must be those it was planned with. `num_workers` sets the
    data loader processes. `pretrained_weights` starts a new fold from the tensors of that checkpoint whose
    names and shapes match (`load_matching_weights`; a resumed fold continues from its own checkpoint); weights
    of which less than half fit are refused unless `force_pretrained`.
    """
    started = time.monotonic()
    data, run_dir = Path(data), Path(run_dir)
    if resume and overwrite:
        raise UsemaError("--resume continues the fold's run and --overwrite starts it over: give one")
    if not 0 <= fold < folds:
        raise UsemaError(f"fold {fold} is out of range for {folds} folds (0 to {folds - 1})")
    if max_minutes is not None and not is_positive(max_minutes):
        raise UsemaError(f"max_minutes {max_minutes!r}: must be a positive, finite number of minutes")
    for key, value in split_plan_edits(plan_edits)[0].items():
        check_setting(key, value)  # the plan-shaping edits are checked by the planner, before it reads a case
    if pretrained_weights is not None and not Path(pretrained_weights).is_file():
        raise CheckpointError(f"{pretrained_weights}: pretrained weights not found")
    check_run_folder(data, run_dir)  # before the lock file, the run's first write
    chosen_device = resolve_device(device)
    ctx = init_distributed(chosen_device)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutdown, ctx)
        if ctx.is_main:
            cleanup.enter_context(folder_lock(run_dir))  # the one writer, until training ends
            plans = _plans_for_run(data, run_dir, model, label_mode, str(ctx.device), dict(plan_edits or {}),
                                   epochs, iters_per_epoch)
            mismatch = device_mismatch(plans, ctx.device.type, run_dir / PLANS_NAME)
            if mismatch:
                warnings.warn(mismatch, stacklevel=2)
            plans = _switch_model(plans, run_dir, model, fold, overwrite)
            plans.check_network()
            _check_fold_is_free(fold_dir(run_dir, fold), resume, overwrite)
            # the split first: a fold count that does not fit the run fails before the preprocessing time
            load_or_create_splits(run_dir, plans.dataset.case_ids, folds, seed, groups_csv)
            preprocess_dataset(plans, run_dir)
        barrier(ctx)  # the others wait for the plan, the preprocessed cases and the split
        require_shared_run_folder(ctx, run_dir, PLANS_NAME)
        plans = Plans.load(run_dir)
        splits = load_or_create_splits(run_dir, plans.dataset.case_ids, folds, seed, groups_csv, write=False)
        latest = checkpoint_path(run_dir, "latest", fold)
        if resume and latest.is_file():
            plans = _with_the_runs_training(plans, latest, ctx.is_main)
        plans = apply_choices(
            plans, model, epochs, iters_per_epoch, optimizer, schedule, precision, num_workers,
            split_plan_edits(plan_edits)[0],
        )
        settings = plans.training
        autocast_dtype = resolve_precision(settings.precision, ctx.device)
        budget = max_minutes if max_minutes is not None else settings.time_budget_minutes

        split = splits[fold]
        sizes = plans.case_sizes()
        validated = validation_subset(split["val"], settings.val_max_cases, sizes)
        if ctx.is_main:
            write_validation_subset(fold_dir(run_dir, fold), validated, len(split["val"]), sizes is not None)
        train_cases = load_training_cases(run_dir, split["train"])
        val_cases = load_training_cases(run_dir, validated)
        resume_from = latest if resume and latest.is_file() else None
        if resume and resume_from is None and ctx.is_main:
            print(f"resume: no {latest}, starting fold {fold} from scratch", file=sys.stderr)
        if pretrained_weights is not None and resume_from is not None:
            if ctx.is_main:
                print(
                    f"pretrained weights {pretrained_weights} not loaded: the fold resumes from {latest}",
                    file=sys.stderr,
                )
            pretrained_weights = None
        trainer = Trainer(
            plans,
            run_dir,
            fold,
            train_cases,
            val_cases,
            ctx,
            seed=seed,
            autocast_dtype=autocast_dtype,
            budget_seconds=60.0 * float(budget) if budget is not None else None,
            pretrained_weights=pretrained_weights,
            force_pretrained=force_pretrained,
        )
        summary = trainer.run(resume_from=resume_from)
    summary.update(
        {
            "run_dir": run_dir,
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "precision": str(autocast_dtype).replace("torch.", "") if autocast_dtype else "fp32",
            "seconds": time.monotonic() - started,
        }
    )
    return summary

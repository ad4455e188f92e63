"""Plans for the device that will train them, and what `usema plan` says about its choices.

On a GPU the planner's choices stand: the preset's widths, nnU-Net's patch and batch under a 5 GiB memory
budget, SGD for 1000 epochs of 250 steps. On a CPU that training takes days (a 2D dataset of 1,000 images of
0.4 megapixels got the full-width network, patches of 0.33 megapixels and 2,500 steps: about 20 hours), so a
CPU plan takes what the README's CPU runs use: the compact network (widths 16 doubling to at most 128, one
residual block per stage, head_dim 16, SEMA blocks where plans put them), AdamW at 3e-3, a memory budget of
2 GiB, which under the planner's memory model holds a batch of 4 patches of 256x256 pixels or of 40x56x40
voxels (2 larger patches from larger images), 100 steps an epoch validated on at most 20 cases, and a
training budget of 30 minutes, stored as such (`time_budget_minutes`): the run stops, and its learning rate
has decayed, when the minutes are spent, however fast this machine happens to be. The epochs are a fixed cap
(nnU-Net's 1000), not a count fitted to a timing: the plan is a function of the data and the device, and the
same dataset planned twice gives the same plans.json whatever else the machine was doing. The timing that
`usema plan` prints says how many steps the budget will hold here: planning times the trainer through the
timer its caller passes (`usema.plan` passes the trainer's own, training's `timing.time_training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usema.models.registry import check_settings, settings_it_takes
from usema.planning.estimate import DEVICE_WORDS, TrainingEstimate, TrainingTimer, estimate_training
from usema.planning.planner import given_network_settings, plan_dataset
from usema.planning.plans import PLANS_NAME, Plans
from usema.planning.settings import TrainingSettings
from usema.utils.device import device_kind, resolve_device
from usema.utils.text import counted

CPU_NETWORK = {
    "base_features": 16,
    "max_features": 128,
    "blocks_per_stage": 1,
    "head_dim": 16,
}
CPU_MEMORY_BUDGET_GB = 2.0
CPU_TRAINING_MINUTES = 30.0
CPU_ITERS_PER_EPOCH = 100
# The cap on a CPU plan's epochs: the time budget ends its training well before (100,000 steps).
CPU_MAX_EPOCHS = 1000
CPU_VAL_MAX_CASES = 20


def compact_network(model: str) -> dict[str, Any]:
    """The settings of CPU_NETWORK that `model` takes and does not fix itself (usema-nosema keeps its zero
    SEMA blocks; UNETR takes none of them)."""
    check_settings(model, 3, {})  # an unknown model is named here
    return settings_it_takes(model, 3, CPU_NETWORK)


def plan_for_device(
    data: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    model: str = "usema",
    label_mode: str | None = None,
    memory_budget_gb: float | None = None,
    edits: dict[str, Any] | None = None,
    time_training: TrainingTimer | None = None,
    folds: int = 5,
    overwrite: bool = False,
) -> tuple[Plans, TrainingEstimate | None]:
    """Plan `data` into RUN/plans.json for `device` (auto: the one present; cpu; cuda or cuda:N, which need
    not be here) and, given the trainer's timing `time_training`, time its training on this machine when the
    device is here (`estimate_training`; `folds` say how many cases each epoch validates).

    A CPU plan is the compact one of the module docstring, trained for CPU_TRAINING_MINUTES (at most
    CPU_MAX_EPOCHS epochs) unless `edits` set the epochs or the budget. `edits` (KEY=JSON of --plan: patch_size, batch_size, network_settings, training keys,
    ...) replace the planner's choices and are recorded in the plan. Returns the plan and the estimate (None
    when not timed). A run folder whose folds were trained keeps its plan unless `overwrite`.
    """
    kind = device_kind(device)
    edits = dict(edits or {})
    planner_edits = dict(edits)
    if kind == "cpu":
        given = given_network_settings(planner_edits) or {}
        # a given value that is no object of settings is left for plan_dataset to name
        planner_edits["network_settings"] = {**compact_network(model), **given} if isinstance(given, dict) else given
        planner_edits.setdefault("iters_per_epoch", CPU_ITERS_PER_EPOCH)
        planner_edits.setdefault("val_max_cases", CPU_VAL_MAX_CASES)
        if "epochs" not in edits:  # the length is the budget's; given epochs are the user's own length
            planner_edits.setdefault("time_budget_minutes", CPU_TRAINING_MINUTES)
            planner_edits["epochs"] = CPU_MAX_EPOCHS
        if memory_budget_gb is None:
            memory_budget_gb = CPU_MEMORY_BUDGET_GB
    plans = plan_dataset(
        data,
        run_dir,
        model=model,
        label_mode=label_mode,
        memory_budget_gb=memory_budget_gb,
        device=kind,
        overwrite=overwrite,
        **planner_edits,
    )
    timed = None
    if time_training is not None and (kind == "cpu" or device_kind("auto") == "cuda"):
        timed = estimate_training(plans, resolve_device(device), time_training, folds)
    plans = plans.with_planning_record(plan_edits=edits)
    plans.save(run_dir)
    return plans, timed


def _compact_settings(plans: Plans) -> dict[str, Any]:
    """The compact settings of the plan's network when it is the compact network of a CPU plan (it has every
    setting of `compact_network` for its model), else {}."""
    network, compact = plans.network_settings, compact_network(plans.model_name)
    return compact if compact and all(network.get(k) == v for k, v in compact.items()) else {}


def _network_words(plans: Plans) -> str:
    """The plan's network in words: its settings of CPU_NETWORK's kinds (or the preset's widths) and the SEMA
    placement where it names one."""
    network = plans.network_settings
    given = {k: network[k] for k in CPU_NETWORK if k in network}
    words = ", ".join(f"{k} {v}" for k, v in given.items()) if given else "the preset's widths"
    if "sema_per_stage" in network:
        words += f", sema_per_stage {network['sema_per_stage']}"
    return words


def training_length(plans: Plans) -> str:
    """How long the plan trains, in words: its time budget (and the epoch cap) or its epochs."""
    training = plans.training
    epochs = f"{counted(training.epochs, 'epoch')} of {training.iters_per_epoch} steps"
    if training.time_budget_minutes is None:
        return epochs
    return f"{training.time_budget_minutes:g} minutes of training (at most {epochs})"


def describe_plan(plans: Plans, estimate: TrainingEstimate | None) -> list[str]:
    """What `usema plan` prints: the choices, why (on a CPU), and how long training will take."""
    kind = plans.planned_device or "cpu"
    training = plans.training
    patch = "x".join(map(str, plans.patch_size))
    lines = [
        f"planned for {kind}: {plans.model_name} with {_network_words(plans)}; patch {patch}, "
        f"batch {plans.batch_size}, {training.optimizer} lr {training.lr:g}, {training_length(plans)}"
    ]
    if kind == "cpu":
        lines.append(
            "why: on a CPU the preset's full widths at nnU-Net's patch and step count train for days, so a "
            f"compact network (narrower stages), patches within a {CPU_MEMORY_BUDGET_GB:g} GiB budget "
            f"(here a batch of {plans.batch_size} patches of {patch}) and AdamW"
            + (f"; training stops after {training.time_budget_minutes:g} minutes"
               if training.time_budget_minutes is not None else "; the epochs given set its length, no budget")
        )
    if estimate is not None:
        lines.append(f"training: {estimate.describe()}")
    elif kind == "cpu" or device_kind("auto") == "cuda":  # the device is here: the caller chose the epochs
        lines.append("training: not timed, its epochs were given (train prints each epoch's time)")
    else:
        lines.append(
            f"training: not timed, no {DEVICE_WORDS[kind]} on this machine (train prints each epoch's time)"
        )
    return lines


def device_mismatch(plans: Plans, device: str, where: str | Path = PLANS_NAME) -> str | None:
    """A warning when the plan was made for another kind of device than `device`, naming the settings chosen
    for that device which a plan for this one chooses otherwise; None when they agree (or the plan says none).
    """
    planned, kind = plans.planned_device, device_kind(device)
    if planned is None or planned == kind:
        return None
    training = plans.training
    other = TrainingSettings.planned(kind, training.time_budget_minutes)
    compact = _compact_settings(plans)
    differing = []
    if planned == "cpu" and compact:
        differing.append(
            f"the compact network ({', '.join(f'{k} {v}' for k, v in compact.items())}; a {kind} plan "
            "keeps the preset's widths)"
        )
    if planned == "cuda" and not compact:
        differing.append("a network without the compact CPU settings (a cpu plan takes the compact network)")
    if (training.optimizer, training.lr) != (other.optimizer, other.lr):
        differing.append(
            f"{training.optimizer} lr {training.lr:g} (a {kind} plan: {other.optimizer} lr {other.lr:g})"
        )
    steps = f"{training.epochs * training.iters_per_epoch} steps"
    if training.time_budget_minutes is not None:
        steps = f"{training.time_budget_minutes:g} minutes or {steps}, whichever ends first"
    other_steps = (
        f"{other.epochs * other.iters_per_epoch}"
        if kind == "cuda"
        else f"{CPU_TRAINING_MINUTES:g} minutes"
    )
    differing.append(f"{steps} (a {kind} plan: {other_steps})")
    budget = plans.planned_for.get("memory_budget_gb")
    if budget is not None:
        differing.append(
            f"patch {'x'.join(map(str, plans.patch_size))} and batch {plans.batch_size} sized for "
            f"a {budget:g} GiB budget"
        )
    return (
        f"{where} was planned for {planned} and this run trains on {kind}; chosen for {planned}: "
        f"{'; '.join(differing)}. `usema plan DATA -o NEW_RUN --device {kind}` plans for this device"
    )

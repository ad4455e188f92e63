"""The plan's training section as one dataclass: its fields, their one set of defaults, and how the planner
and the command line choose them."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from usema.errors import UsemaError
from usema.planning.schema import is_count, is_positive

# The learning rate of each optimiser: the planner's, and the one a caller who switches optimiser gets.
DEFAULT_LR = {"sgd": 1e-2, "adamw": 3e-3}
# Below this budget (and always on CPU) AdamW converges faster than nnU-Net's SGD schedule.
SGD_MIN_MINUTES = 120
# Loader worker processes: half the CPUs (the other half feeds the training process and its threads), at most
# 8.
MAX_LOADER_WORKERS = 8


@dataclass(frozen=True)
class TrainingSettings:
    """What plans.json's "training" section configures. Absent keys take these defaults (plans written before
    a key existed keep working); `optimizer`, `lr`, `epochs` and `iters_per_epoch` are always in the file.

    `num_workers`: DataLoader worker processes that sample and augment patches (0: the training process does;
    None, unless a caller sets it: `planned_loader_workers` of the machine that trains, which is no property of
    the plan, so the file does not store it).
    `precision`: auto, fp32, bf16 or fp16. `time_budget_minutes`: the default wall-clock budget of a run
    (None: no limit). `val_max_cases`: validate on N held-out cases, a size-stratified draw with a fixed seed
    (None: all).
    """

    optimizer: str
    lr: float
    epochs: int
    iters_per_epoch: int
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    schedule: str = "poly"
    deep_supervision: bool = True
    oversample_foreground: float = 0.33
    precision: str = "auto"
    num_workers: int | None = None
    time_budget_minutes: float | None = None
    val_max_cases: int | None = None

    @classmethod
    def planned(cls, device: str, time_budget_minutes: float | None = None) -> TrainingSettings:
        """AdamW (lr 3e-3, 50 x 50 iterations) on CPU or under a 2-hour budget, else nnU-Net's SGD (lr 0.01,
        Nesterov 0.99, 1000 x 250 iterations); poly decay; loader workers left to the machine that trains."""
        short = device == "cpu" or (time_budget_minutes is not None and time_budget_minutes < SGD_MIN_MINUTES)
        optimizer = "adamw" if short else "sgd"
        return cls(
            optimizer=optimizer,
            lr=DEFAULT_LR[optimizer],
            epochs=50 if short else 1000,
            iters_per_epoch=50 if short else 250,
            time_budget_minutes=time_budget_minutes,
        )

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> TrainingSettings:
        """The settings of a plan's (validated) training section; keys of no field are left to the file."""
        names = {field.name for field in dataclasses.fields(cls)}
        settings = cls(**{key: value for key, value in section.items() if key in names})
        return dataclasses.replace(
            settings,
            lr=float(settings.lr),
            epochs=int(settings.epochs),
            iters_per_epoch=int(settings.iters_per_epoch),
            num_workers=max(0, int(settings.num_workers)) if settings.num_workers is not None else None,
            val_max_cases=int(settings.val_max_cases) if settings.val_max_cases else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The training section as plans.json stores it (without num_workers unless a caller set it)."""
        section = dataclasses.asdict(self)
        if section["num_workers"] is None:
            del section["num_workers"]
        return section

    def with_choices(
        self,
        optimizer: str | None = None,
        epochs: int | None = None,
        iters_per_epoch: int | None = None,
        schedule: str | None = None,
        precision: str | None = None,
        num_workers: int | None = None,
    ) -> TrainingSettings:
        """These settings with a caller's choices (None, and "auto" for precision, keep the plan's).

        Switching optimiser also switches to that optimiser's default learning rate (the plan's belongs to its
        own optimiser).
        """
        changes: dict[str, Any] = {}
        if optimizer is not None and optimizer != self.optimizer:
            if optimizer not in DEFAULT_LR:
                raise UsemaError(f"unknown optimizer {optimizer!r}: choose {' or '.join(DEFAULT_LR)}")
            changes.update(optimizer=optimizer, lr=DEFAULT_LR[optimizer])
        for key, value in (("epochs", epochs), ("iters_per_epoch", iters_per_epoch)):
            if value is not None:
                if int(value) < 1:
                    raise UsemaError(f"{key} must be at least 1, got {value}")
                changes[key] = int(value)
        if num_workers is not None:
            if int(num_workers) < 0:
                raise UsemaError(f"num_workers must be 0 or more, got {num_workers}")
            changes["num_workers"] = int(num_workers)
        if schedule is not None:
            changes["schedule"] = schedule
        if precision not in (None, "auto"):
            changes["precision"] = precision
        return dataclasses.replace(self, **changes)


def planned_loader_workers(cpu_count: int | None = None, processes: int | None = None) -> int:
    """Loader worker processes of each of `processes` training processes (default: torchrun's
    LOCAL_WORLD_SIZE, else 1) on a machine with `cpu_count` CPUs (default: this one's): half the CPUs shared
    among them, at most MAX_LOADER_WORKERS each; none on a single CPU, where a worker would only take turns
    with the training."""
    if cpu_count is None:
        cpu_count = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
    if processes is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return min(MAX_LOADER_WORKERS, cpu_count // 2 // max(1, processes))


TRAINING_KEYS = tuple(field.name for field in dataclasses.fields(TrainingSettings))


def _number_within(low: float, high: float, below_high: bool = False) -> Any:
    """A check: a number (not a bool) from `low` to `high` (or below it)."""
    def check(value: Any) -> bool:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and low <= value and (value < high if below_high else value <= high)

    return check


# What each training setting takes: (the check, the words that say what is allowed).
_ALLOWED_VALUES: dict[str, tuple[Any, str]] = {
    "optimizer": (lambda v: v in DEFAULT_LR, " or ".join(map(repr, DEFAULT_LR))),
    "lr": (is_positive, "a positive number"),
    "epochs": (is_count, "an integer >= 1"),
    "iters_per_epoch": (is_count, "an integer >= 1"),
    "weight_decay": (_number_within(0, math.inf, below_high=True), "a finite number >= 0"),
    "momentum": (_number_within(0, 1, below_high=True), "a number from 0 to below 1"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "schedule": (lambda v: v in ("poly", "cosine"), "'poly' or 'cosine'"),
    "deep_supervision": (lambda v: isinstance(v, bool), "true or false"),
    "oversample_foreground": (_number_within(0, 1), "a number from 0 to 1"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16", "fp16"), "'auto', 'fp32', 'bf16' or 'fp16'"),
    "num_workers": (lambda v: is_count(v, 0), "an integer >= 0"),
    "time_budget_minutes": (is_positive, "a positive, finite number of minutes"),
    "val_max_cases": (lambda v: is_count(v, 0), "an integer >= 0 (0 or null: every held-out case)"),
}


def check_setting(key: str, value: Any, allowed: dict[str, tuple[Any, str]] | None = None) -> None:
    """UsemaError in one line, `--plan KEY=VALUE: must be ...`, when `value` is not one that setting `key`
    takes (per `allowed`, default: the training settings'); None ("planned") and keys it does not list pass."""
    check, words = (allowed or _ALLOWED_VALUES).get(key, (None, ""))
    if value is None or check is None or check(value):
        return
    raise UsemaError(f"--plan {key}={json.dumps(value, default=str)}: must be {words}")

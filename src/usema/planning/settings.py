"""The plan's training section as one dataclass: its fields, their one set of defaults, and how the planner
and the command line choose them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from usema.errors import UsemaError

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

    `num_workers`: DataLoader worker processes that sample and augment patches (0: the training process does).
    `precision`: auto, fp32, bf16 or fp16. `time_budget_minutes`: the default wall-clock budget of a run
    (None: no limit). `val_max_cases`: validate on the first N held-out cases only (None: all).
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
    num_workers: int = 0
    time_budget_minutes: float | None = None
    val_max_cases: int | None = None

    @classmethod
    def planned(
        cls, device: str, time_budget_minutes: float | None = None, cpu_count: int | None = None
    ) -> TrainingSettings:
        """AdamW (lr 3e-3, 50 x 50 iterations) on CPU or under a 2-hour budget, else nnU-Net's SGD (lr 0.01,
        Nesterov 0.99, 1000 x 250 iterations); poly decay; loader workers from the CPU count."""
        short = device == "cpu" or (time_budget_minutes is not None and time_budget_minutes < SGD_MIN_MINUTES)
        optimizer = "adamw" if short else "sgd"
        return cls(
            optimizer=optimizer,
            lr=DEFAULT_LR[optimizer],
            epochs=50 if short else 1000,
            iters_per_epoch=50 if short else 250,
            num_workers=planned_loader_workers(cpu_count),
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
            num_workers=max(0, int(settings.num_workers)),
            val_max_cases=int(settings.val_max_cases) if settings.val_max_cases else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The training section as plans.json stores it."""
        return dataclasses.asdict(self)

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


def planned_loader_workers(cpu_count: int | None = None) -> int:
    """Loader worker processes for a machine with `cpu_count` CPUs (default: this one's): half of them, at
    most MAX_LOADER_WORKERS; none on a single CPU, where a worker would only take turns with the training."""
    if cpu_count is None:
        cpu_count = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
    cpus = cpu_count
    return min(MAX_LOADER_WORKERS, cpus // 2)


TRAINING_KEYS = tuple(field.name for field in dataclasses.fields(TrainingSettings))

"""Deprecated: the device plan moved to `usema.planning.device` (plan with `usema.plan`). This module keeps its
names for one release; each warns when read, and `plan_for_device` keeps its old `estimate` argument (it times
with the trainer's timing, as before)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from usema.planning import device as _device
from usema.planning.estimate import TrainingEstimate
from usema.planning.plans import Plans
from usema.training.timing import time_training

_MOVED = (
    "CPU_NETWORK",
    "CPU_MEMORY_BUDGET_GB",
    "CPU_TRAINING_MINUTES",
    "CPU_ITERS_PER_EPOCH",
    "CPU_MAX_EPOCHS",
    "CPU_VAL_MAX_CASES",
    "compact_network",
    "training_length",
    "describe_plan",
    "device_mismatch",
)


def _warn(name: str, instead: str) -> None:
    warnings.warn(
        f"usema.training.device_plan.{name} is deprecated and will be removed in the next release: use {instead}",
        FutureWarning,
        stacklevel=3,
    )


def plan_for_device(
    data: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    model: str = "usema",
    label_mode: str | None = None,
    memory_budget_gb: float | None = None,
    edits: dict[str, Any] | None = None,
    estimate: bool = True,
    folds: int = 5,
) -> tuple[Plans, TrainingEstimate | None]:
    """Deprecated: `usema.plan` (the same arguments), or `usema.planning.plan_for_device` with the trainer's
    timing as `time_training`."""
    _warn("plan_for_device", "usema.plan")
    return _device.plan_for_device(
        data, run_dir, device, model=model, label_mode=label_mode, memory_budget_gb=memory_budget_gb,
        edits=edits, time_training=time_training if estimate else None, folds=folds,
    )


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        _warn(name, f"usema.planning.device.{name}")
        return getattr(_device, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

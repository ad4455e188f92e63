"""Deprecated: the device plan moved to `usema.planning.device` (plan with `usema.plan`). This module keeps its
names for one release; each warns when read, and `plan_for_device` keeps its old `estimate` argument (it times
with the trainer's timing, as before)."""

from __future__ import annotations

import warnings
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


# The old signature: `estimate` where planning now takes the timing.
_ARGUMENTS = ("data", "run_dir", "device", "model", "label_mode", "memory_budget_gb", "edits", "estimate", "folds")


def plan_for_device(*args: Any, **options: Any) -> tuple[Plans, TrainingEstimate | None]:
    """Deprecated: `usema.plan` (the same arguments), or `usema.planning.plan_for_device` with the trainer's
    timing as `time_training`. Takes the old arguments: data, run_dir, device="auto", model="usema",
    label_mode=None, memory_budget_gb=None, edits=None, estimate=True, folds=5."""
    _warn("plan_for_device", "usema.plan")
    if len(args) > len(_ARGUMENTS):
        raise TypeError(f"plan_for_device takes at most {len(_ARGUMENTS)} positional arguments")
    named = {**dict(zip(_ARGUMENTS, args)), **options}
    estimate = named.pop("estimate", True)
    return _device.plan_for_device(**named, time_training=time_training if estimate else None)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        _warn(name, f"usema.planning.device.{name}")
        return getattr(_device, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

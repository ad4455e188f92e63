"""The optimiser and the learning-rate schedule that the plan's training settings name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from usema.errors import UsemaError
from usema.planning.settings import TrainingSettings

POLY_EXPONENT = 0.9


def build_optimizer(parameters: Any, settings: TrainingSettings) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net) or AdamW, as the settings say."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=settings.lr,
            momentum=settings.momentum,
            nesterov=settings.nesterov,
            weight_decay=settings.weight_decay,
        )
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    raise UsemaError(
        f"unknown optimizer {settings.optimizer!r} (plans training.optimizer): choose sgd or adamw"
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total_steps: int,
    time_fraction: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration decay to 0 over `total_steps`: poly (1 - t)^0.9 or cosine.

    Closed-form factors (not torch's chained PolynomialLR) so that resuming with more epochs simply
    stretches the remaining decay. `time_fraction`, if given, returns the share of a wall-clock budget spent:
    t is then whichever of steps and time is further along, so that a run stopped by its budget has still
    decayed its learning rate (short CPU budgets otherwise end at a high rate).
    """
    total = max(1, total_steps)

    def progress(step: int) -> float:
        t = step / total
        if time_fraction is not None:
            t = max(t, time_fraction())
        return min(t, 1.0)

    if schedule == "poly":

        def factor(step: int) -> float:
            return (1.0 - progress(step)) ** POLY_EXPONENT
    elif schedule == "cosine":

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * progress(step)))
    else:
        raise UsemaError(f"unknown schedule {schedule!r} (plans training.schedule): choose poly or cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

"""How long a plan trains on a device: a few of the trainer's own steps and one validation case, timed.

Planning owns the estimate (how many steps are timed, what they make of the plan's epochs and budget) but not
the trainer: the caller passes the trainer's timing as a `TrainingTimer` (training's `timing.time_training`,
which `usema.plan` and `usema train` pass), so that planning imports nothing from training.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from usema.planning.plans import Plans
from usema.utils.progress import duration
from usema.utils.text import counted

if TYPE_CHECKING:
    import torch

DEVICE_WORDS = {"cpu": "CPU", "cuda": "GPU"}
# Steps timed after one untimed warm-up step (the first allocates memory and picks kernels): at least
# MIN_TIMED_STEPS and MIN_TIMING_SECONDS of them, so that one slow step (another process taking the CPU a
# moment) moves the median little; at most MAX_TIMED_STEPS. The estimate only informs: no plan depends on it.
MIN_TIMED_STEPS = 5
MIN_TIMING_SECONDS = 5.0
MAX_TIMED_STEPS = 20


@dataclass
class TrainingEstimate:
    """Measured seconds of one training step (the median of `step_samples`) and of validating one case, and
    the plan's training length they make: its epochs, or as many steps as its time budget holds."""

    device: str
    step_samples: list[float]
    validation_case_seconds: float
    epochs: int
    iters_per_epoch: int
    validated_cases: int
    budget_minutes: float | None = None

    @property
    def step_seconds(self) -> float:
        """The median timed step."""
        return float(np.median(self.step_samples))

    @property
    def epoch_seconds(self) -> float:
        """One epoch: its steps, then the validation of the held-out cases."""
        return self.iters_per_epoch * self.step_seconds + self.validated_cases * self.validation_case_seconds

    @property
    def epochs_run(self) -> float:
        """The epochs training will run: the plan's, or those its time budget holds at the timed speed."""
        if self.budget_minutes is None:
            return float(self.epochs)
        return min(float(self.epochs), 60.0 * self.budget_minutes / self.epoch_seconds)

    @property
    def total_seconds(self) -> float:
        """The whole planned training (the budget, where it ends the training first)."""
        return self.epochs_run * self.epoch_seconds

    def noise(self) -> str:
        """How much the timed steps varied: their count and range."""
        low, high = min(self.step_samples), max(self.step_samples)
        return f"{len(self.step_samples)} steps timed, {low:.2f} to {high:.2f} s"

    def describe(self) -> str:
        """One line: the total and how it was measured."""
        steps = int(self.epochs_run * self.iters_per_epoch)
        measured = (
            f"at {self.step_seconds:.2f} s a step ({self.noise()}) and a validation of "
            f"{counted(self.validated_cases, 'case')} at {self.validation_case_seconds:.2f} s each after every "
            "epoch (timed here on the median image shape)"
        )
        if self.budget_minutes is not None and self.epochs_run < self.epochs:
            return (
                f"{self.budget_minutes:g} minutes on this {DEVICE_WORDS[self.device]} hold about {steps} steps "
                f"({self.epochs_run:.1f} epochs of {self.iters_per_epoch}) {measured}"
            )
        return (
            f"about {duration(self.total_seconds)} on this {DEVICE_WORDS[self.device]}: {steps} steps "
            f"({counted(self.epochs, 'epoch')} of {self.iters_per_epoch}) {measured}"
        )


@dataclass(frozen=True)
class TimedTraining:
    """The trainer of a plan, set up on `device` for timing, as two functions that return seconds: `step` runs
    one training step (batch drawn, forward, loss, backward, update), `validate_case` validates one case with
    the network as the steps left it."""

    step: Callable[[], float]
    validate_case: Callable[[], float]


# The trainer's timing: (plans, device) -> a context that sets the plan's trainer up (and tears it down) and
# gives its TimedTraining.
TrainingTimer = Callable[[Plans, "torch.device"], AbstractContextManager[TimedTraining]]


def estimate_training(
    plans: Plans, device: torch.device, time_training: TrainingTimer, folds: int = 5
) -> TrainingEstimate:
    """Time the plan's training on `device` with the trainer's timing `time_training`: an untimed warm-up
    step, then at least MIN_TIMED_STEPS steps and MIN_TIMING_SECONDS (at most MAX_TIMED_STEPS), then one
    validation case; the plan's training length follows from the median step."""
    with time_training(plans, device) as timed:
        seconds: list[float] = []  # the first, untimed, allocates memory and picks kernels
        while len(seconds) <= MIN_TIMED_STEPS or (
            sum(seconds[1:]) < MIN_TIMING_SECONDS and len(seconds) <= MAX_TIMED_STEPS
        ):
            seconds.append(timed.step())
        validation = timed.validate_case()
    training = plans.training
    return TrainingEstimate(
        device=device.type,
        step_samples=seconds[1:],
        validation_case_seconds=validation,
        epochs=training.epochs,
        iters_per_epoch=training.iters_per_epoch,
        validated_cases=plans.validated_cases_per_epoch(folds),
        budget_minutes=training.time_budget_minutes,
    )

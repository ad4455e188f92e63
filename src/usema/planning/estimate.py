"""How long a plan trains on a device: a few of the trainer's own steps and one validation case, timed."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usema.planning.plans import Plans
from usema.utils.progress import duration

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
            f"at {self.step_seconds:.2f} s a step ({self.noise()}) and a validation of {self.validated_cases} "
            f"cases at {self.validation_case_seconds:.2f} s each after every epoch (timed here on the median "
            "image shape)"
        )
        if self.budget_minutes is not None and self.epochs_run < self.epochs:
            return (
                f"{self.budget_minutes:g} minutes on this {DEVICE_WORDS[self.device]} hold about {steps} steps "
                f"({self.epochs_run:.1f} epochs of {self.iters_per_epoch}) {measured}"
            )
        return (
            f"about {duration(self.total_seconds)} on this {DEVICE_WORDS[self.device]}: {steps} steps "
            f"({self.epochs} epochs of {self.iters_per_epoch}) {measured}"
        )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timing_trainer(plans: Plans, device: torch.device) -> Iterator[tuple[Any, Callable[[], float]]]:
    """The plan's trainer on one random case of the median image shape (at least the patch), and a function that
    runs one of its training steps (batch drawn, forward, loss, backward, update) and returns its seconds.
    Changes the global random state."""
    from usema.preprocessing.storage import open_case, write_case
    from usema.training.distributed import DistributedContext
    from usema.training.loop import Trainer
    from usema.utils.device import resolve_precision

    rng = np.random.default_rng(0)
    shape = [max(m, p) for m, p in zip(plans.median_shape_at_target(), plans.patch_size, strict=True)]
    num_classes = plans.dataset.num_classes
    autocast = resolve_precision(plans.training.precision, device)
    with tempfile.TemporaryDirectory() as scratch:  # the timing case, and the trainer's (unwritten) run folder
        folder = Path(scratch)
        write_case(
            folder,
            "timing",
            rng.normal(size=(plans.dataset.num_channels, *shape)).astype(np.float32),
            rng.integers(0, num_classes, size=shape).astype(np.uint8),
            num_classes,
            "timing",
        )
        case = open_case(folder, "timing")
        trainer = Trainer(
            plans, folder, 0, [case], [case], DistributedContext(device=device), autocast_dtype=autocast
        )

        def step() -> float:
            _synchronize(device)
            # the batch too: without loader workers it is drawn in the step's time
            started = time.perf_counter()
            images, labels = trainer.sampler.batch(trainer.batch_size, rng)
            trainer._train_step(images, labels)  # the trainer's own step: forward, loss, backward, update
            _synchronize(device)
            return time.perf_counter() - started

        yield trainer, step


def estimate_training(plans: Plans, device: torch.device, folds: int = 5) -> TrainingEstimate:
    """Time the plan's training on `device`: its network, batch, patch, augmentation, optimizer and precision
    in the trainer's own step, on random data of the median image shape, and one validation of such a case.
    Prints nothing but the network's attention lines; changes the global random state."""
    from usema.training.validation import confusion_counts

    with timing_trainer(plans, device) as (trainer, step):
        seconds: list[float] = []  # the first, untimed, allocates memory and picks kernels
        while len(seconds) <= MIN_TIMED_STEPS or (
            sum(seconds[1:]) < MIN_TIMING_SECONDS and len(seconds) <= MAX_TIMED_STEPS
        ):
            seconds.append(step())
        case = trainer.val_cases[0]
        started = time.perf_counter()
        confusion_counts(trainer.network, [case], trainer.patch_size, plans.dataset.num_classes, device,
                         trainer.autocast_dtype, plans.batch_size)
        _synchronize(device)
        validation = time.perf_counter() - started
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

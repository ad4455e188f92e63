"""The trainer's timing: a plan's own trainer on a random case, its training step and one validation, timed.

Planning's estimate (`usema.planning.estimate.estimate_training`) takes `time_training` as its timer; the
step-cost benchmark takes `timing_trainer`'s step.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usema.planning.estimate import TimedTraining
from usema.planning.plans import Plans


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


@contextlib.contextmanager
def time_training(plans: Plans, device: torch.device) -> Iterator[TimedTraining]:
    """The timer planning's estimate takes (a `usema.planning.estimate.TrainingTimer`): the plan's training
    step on `device` in the trainer's own code (network, batch, patch, augmentation, optimizer and precision),
    on random data of the median image shape, and the validation of that case. Prints nothing but the
    network's attention lines; changes the global random state."""
    from usema.training.validation import confusion_counts

    with timing_trainer(plans, device) as (trainer, step):

        def validate_case() -> float:
            case = trainer.val_cases[0]
            started = time.perf_counter()
            confusion_counts(trainer.network, [case], trainer.patch_size, plans.dataset.num_classes, device,
                             trainer.autocast_dtype, plans.batch_size)
            _synchronize(device)
            return time.perf_counter() - started

        yield TimedTraining(step=step, validate_case=validate_case)

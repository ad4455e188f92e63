"""How long a plan trains: the epoch and the whole run from a step's and a validation case's time, timed
with the timer the caller passes."""

import contextlib
import itertools

import pytest
import torch

from usema.planning.estimate import (
    MAX_TIMED_STEPS,
    MIN_TIMED_STEPS,
    MIN_TIMING_SECONDS,
    TimedTraining,
    TrainingEstimate,
    estimate_training,
)
from usema.planning.plans import Plans


def test_an_epoch_is_its_steps_then_the_validation_of_the_held_out_cases():
    estimate = TrainingEstimate("cpu", step_samples=[0.4, 0.5, 0.6], validation_case_seconds=2.0, epochs=10,
                                iters_per_epoch=100, validated_cases=20)
    assert estimate.step_seconds == pytest.approx(0.5)  # the median step
    assert estimate.epoch_seconds == pytest.approx(100 * 0.5 + 20 * 2.0)
    assert estimate.total_seconds == pytest.approx(10 * 90.0)
    line = estimate.describe()
    assert "this CPU: 1000 steps (10 epochs of 100) at 0.50 s a step (3 steps timed, 0.40 to 0.60 s)" in line
    assert "20 cases at 2.00 s each" in line


def test_a_time_budget_ends_training_before_the_epochs():
    estimate = TrainingEstimate("cpu", step_samples=[1.0], validation_case_seconds=0.0, epochs=1000,
                                iters_per_epoch=100, validated_cases=0, budget_minutes=30)
    assert estimate.epochs_run == pytest.approx(18.0) and estimate.total_seconds == pytest.approx(1800)
    assert estimate.describe().startswith("30 minutes on this CPU hold about 1800 steps")


def _timer(step_seconds, events):
    """A timer whose steps take the seconds of `step_seconds` in turn and whose validation takes 3 s; `events`
    records what is called, in order."""

    @contextlib.contextmanager
    def time_training(plans, device):
        events.append(("enter", device))
        seconds = iter(step_seconds)

        def step():
            events.append("step")
            return next(seconds)

        def validate_case():
            events.append("validate")
            return 3.0

        yield TimedTraining(step=step, validate_case=validate_case)
        events.append("exit")

    return time_training


@pytest.fixture
def plans():
    """A plan of 10 cases, validating at most 4 an epoch, with a 30-minute budget."""
    return Plans({
        "version": 3,
        "dataset": {"path": "/nonexistent", "format": "folder2d", "spatial_dims": 2, "num_channels": 1,
                    "labels": {"0": "background", "1": "foreground"}, "label_mode": "binary",
                    "num_classes": 2, "cases": [f"c{i}" for i in range(10)]},
        "target_spacing": [1.0, 1.0], "normalization": {"scheme": "zscore_per_image"},
        "patch_size": [64, 64], "batch_size": 4, "model": {"name": "usema-nosema", "network_settings": {}},
        "training": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1000, "iters_per_epoch": 100,
                     "val_max_cases": 4, "time_budget_minutes": 30},
    })


def test_the_estimate_times_a_warm_up_then_enough_steps_then_one_validation_with_the_given_timer(plans):
    events = []
    # a slow warm-up, then steps of 2 s: MIN_TIMED_STEPS of them pass MIN_TIMING_SECONDS
    estimate = estimate_training(plans, torch.device("cpu"), _timer([100.0] + [2.0] * 50, events), folds=2)
    assert MIN_TIMED_STEPS * 2.0 >= MIN_TIMING_SECONDS
    assert events == [("enter", torch.device("cpu")), *["step"] * (MIN_TIMED_STEPS + 1), "validate", "exit"]
    assert estimate.device == "cpu" and estimate.step_samples == [2.0] * MIN_TIMED_STEPS  # no warm-up
    assert estimate.validation_case_seconds == 3.0
    training = plans.training
    assert (estimate.epochs, estimate.iters_per_epoch, estimate.budget_minutes) == (
        training.epochs, training.iters_per_epoch, training.time_budget_minutes)
    assert estimate.validated_cases == plans.validated_cases_per_epoch(2) == 4  # 5 held out, at most 4
    assert estimate.describe().startswith("30 minutes on this CPU hold about 849 steps (8.5 epochs of 100)")  # 1800 / 212 s


def test_quick_steps_are_timed_until_their_seconds_suffice_or_at_most_max_timed_steps(plans):
    events = []
    estimate = estimate_training(plans, torch.device("cpu"), _timer(itertools.repeat(1e-3), events))
    assert len(estimate.step_samples) == MAX_TIMED_STEPS
    events = []
    estimate = estimate_training(plans, torch.device("cpu"), _timer(itertools.repeat(1.0), events))
    assert len(estimate.step_samples) == MIN_TIMING_SECONDS  # 1 s steps: 5 s make enough

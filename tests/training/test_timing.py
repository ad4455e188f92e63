"""The trainer's timing: the plan's own training step and one validation case, timed, as planning's estimate
takes them."""

import torch

from usema.planning import Plans
from usema.planning.estimate import MAX_TIMED_STEPS, MIN_TIMED_STEPS, estimate_training
from usema.training.loop import Trainer
from usema.training.timing import time_training, timing_trainer


def test_the_timing_trainer_is_the_plans_trainer_and_its_step_returns_seconds(tiny_run):
    plans = Plans.load(tiny_run[1])
    with timing_trainer(plans, torch.device("cpu")) as (trainer, step):
        assert isinstance(trainer, Trainer) and trainer.patch_size == plans.patch_size
        before = [p.detach().clone() for p in trainer.network.parameters()]
        assert step() > 0
        assert any(not torch.equal(a, p) for a, p in zip(before, trainer.network.parameters(), strict=True))


def test_time_training_is_a_timer_for_planning_s_estimate(tiny_run):
    plans = Plans.load(tiny_run[1])
    with time_training(plans, torch.device("cpu")) as timed:
        assert timed.step() > 0 and timed.validate_case() > 0
    estimate = estimate_training(plans, torch.device("cpu"), time_training, folds=2)
    assert MIN_TIMED_STEPS <= len(estimate.step_samples) <= MAX_TIMED_STEPS
    assert estimate.validation_case_seconds > 0 and estimate.validated_cases == 1

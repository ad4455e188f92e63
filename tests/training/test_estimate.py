"""How long a plan trains: the epoch and the whole run from a step's and a validation case's time."""

import pytest

from usema.training.estimate import TIMED_STEPS, TrainingEstimate


def test_an_epoch_is_its_steps_then_the_validation_of_the_held_out_cases():
    estimate = TrainingEstimate("cpu", step_seconds=0.5, validation_case_seconds=2.0, epochs=10,
                                iters_per_epoch=100, validated_cases=20)
    assert estimate.epoch_seconds == pytest.approx(100 * 0.5 + 20 * 2.0)
    assert estimate.total_seconds == pytest.approx(10 * 90.0)
    line = estimate.describe()
    assert "this CPU: 1000 steps (10 epochs of 100) at 0.50 s" in line
    assert "20 cases at 2.00 s each" in line and f"{TIMED_STEPS} training steps" in line

"""How long a plan trains: the epoch and the whole run from a step's and a validation case's time."""

import pytest

from usema.training.estimate import TrainingEstimate


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

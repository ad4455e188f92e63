"""The optimiser and learning-rate schedule the plan's training settings name."""

import math

import pytest
import torch

from usema.errors import UsemaError
from usema.planning.settings import TrainingSettings
from usema.training.optimization import build_optimizer, build_scheduler


@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_schedules_decay_to_zero_over_the_steps(schedule):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.01)
    scheduler = build_scheduler(optimizer, schedule, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = {
        "poly": [0.01 * (1 - t / 10) ** 0.9 for t in range(10)],
        "cosine": [0.01 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)],
    }[schedule]
    assert lrs == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(UsemaError, match="schedule"):
        build_scheduler(optimizer, "step", 10)


def test_optimizers_follow_the_settings():
    settings = TrainingSettings.from_dict({"optimizer": "sgd", "lr": 0.01, "epochs": 1, "iters_per_epoch": 1})
    assert settings.momentum == 0.99 and settings.nesterov and settings.deep_supervision
    sgd = build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.99 and sgd.defaults["lr"] == 0.01
    adamw = build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings.with_choices(optimizer="adamw"))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 3e-3


def test_time_budget_decays_the_learning_rate_before_the_steps_do():
    spent = {"fraction": 0.0}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, "poly", total_steps=1000, time_fraction=lambda: spent["fraction"])
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx((1 - 1 / 1000) ** 0.9)  # steps lead
    spent["fraction"] = 0.5
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5**0.9)  # time leads
    spent["fraction"] = 1.5
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0

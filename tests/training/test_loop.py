"""The training loop's parts: loss weights, schedules, optimisers, plan checks, and a mid-epoch stop + resume."""

import math
import shutil
import signal
import threading

import pytest
import torch
from monai.losses import DiceCELoss

from usema.errors import UsemaError
from usema.training import loop
from usema.training.api import train
from usema.training.checkpoint import load_checkpoint
from usema.training.loop import plan_difference
from usema.training.losses import DiceCEDeepSupervisionLoss, deep_supervision_weights
from usema.training.optimization import TrainingSettings, build_optimizer, build_scheduler


def test_deep_supervision_weights_halve_and_drop_the_lowest_level():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]
    weights = deep_supervision_weights(4)
    assert weights == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert sum(weights) == pytest.approx(1.0)


def test_loss_weights_every_level_against_downsampled_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8)).float()
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    dice_ce = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
    )
    low = labels[:, :, 1::2, 1::2, 1::2]  # nearest-exact halving keeps the voxel right of each pair centre
    expected = (dice_ce(outputs[0], labels) + 0.5 * dice_ce(outputs[1], low)) / 1.5
    loss = DiceCEDeepSupervisionLoss()
    assert float(loss(outputs, labels)) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(outputs[0], labels)) == pytest.approx(float(dice_ce(outputs[0], labels)), rel=1e-6)


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
    settings = TrainingSettings.from_plans(
        {"training": {"optimizer": "sgd", "lr": 0.01, "epochs": 1, "iters_per_epoch": 1}}
    )
    assert settings.momentum == 0.99 and settings.nesterov and settings.deep_supervision
    sgd = build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.99 and sgd.defaults["lr"] == 0.01
    settings.optimizer, settings.lr = "adamw", 3e-3
    adamw = build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 3e-3


def test_plan_difference_names_the_key_and_ignores_training_settings_and_dataset_location():
    plans = {"dataset": {"path": "/a", "num_classes": 3}, "patch_size": [16, 16], "training": {"epochs": 5}}
    moved = {"dataset": {"path": "/b", "num_classes": 3}, "patch_size": [16, 16], "training": {"epochs": 50}}
    assert plan_difference(plans, moved) is None
    changed = {**plans, "patch_size": [32, 16]}
    assert plan_difference(plans, changed) == "patch_size was [16, 16], plans.json now has [32, 16]"
    more = {**plans, "dataset": {**plans["dataset"], "num_classes": 4}, "model": {"overrides": {"x": 1}}}
    assert plan_difference(plans, more) == "dataset.num_classes was 3, plans.json now has 4"
    assert plan_difference(more, {**more, "model": {"overrides": {}}}) == (
        "model.overrides.x was 1, plans.json now has (absent)"
    )


def test_stop_signal_mid_epoch_saves_and_resume_is_exact(tiny_run, tmp_path, monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    data, run = tiny_run
    straight = tmp_path / "straight"
    shutil.copytree(run, straight)
    train(data, straight, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5)

    original_step = loop.Trainer._train_step
    steps = []

    def step_then_signal(self, images, labels):
        loss = original_step(self, images, labels)
        steps.append(loss)
        if len(steps) == 4:  # the first step of epoch 2
            signal.raise_signal(signal.SIGTERM)
        return loss

    monkeypatch.setattr(loop.Trainer, "_train_step", step_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    stopped = train(data, run, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert stopped["interrupted"] and stopped["last_epoch"] == 1
    saved = load_checkpoint(run / "fold_0" / "checkpoint_latest.pt")
    assert saved["epoch"] == 1 and saved["partial_epoch"]["iterations"] == 1

    monkeypatch.setattr(loop.Trainer, "_train_step", original_step)
    resumed = train(data, run, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5, resume=True)
    assert resumed["last_epoch"] == 2 and not resumed["interrupted"]
    expected = load_checkpoint(straight / "fold_0" / "checkpoint_latest.pt")["model_state"]
    got = load_checkpoint(run / "fold_0" / "checkpoint_latest.pt")["model_state"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_time_budget_decays_the_learning_rate_before_the_steps_do():
    import torch

    from usema.training.optimization import build_scheduler

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

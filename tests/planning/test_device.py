"""Plans for the training device: the compact CPU plan and its time budget, its estimate from the timer the
caller passes, the same plan however loaded the machine, and the warning when a plan made for one kind of
device trains on another."""

import contextlib
import subprocess
import sys

import pytest
import torch

from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans
from usema.planning.device import (
    CPU_MAX_EPOCHS,
    CPU_NETWORK,
    CPU_TRAINING_MINUTES,
    compact_network,
    device_mismatch,
    plan_for_device,
)
from usema.planning.estimate import MIN_TIMED_STEPS, TimedTraining, TrainingEstimate
from usema.training.timing import time_training


def _fake_timer(step_seconds, validation_seconds, calls):
    """A timer whose steps and validation take the given seconds; records the (plans, device) it times."""

    @contextlib.contextmanager
    def time_fake(plans, device):
        calls.append((plans, device))
        yield TimedTraining(step=lambda: step_seconds, validate_case=lambda: validation_seconds)

    return time_fake


def test_the_compact_settings_are_those_the_model_takes_and_does_not_fix():
    assert compact_network("usema") == CPU_NETWORK
    assert compact_network("usema-nosema") == CPU_NETWORK
    assert compact_network("unetr") == {}


def test_the_estimate_says_how_many_steps_the_budget_holds_and_how_noisy_its_timing_was():
    # steps of 1.4 to 1.6 s, validation: 20 cases of 2 s after each 100-step epoch: 190 s an epoch
    estimate = TrainingEstimate("cpu", [1.6, 1.5, 1.4, 1.5, 1.5], 2.0, 1000, 100, 20, budget_minutes=30)
    assert estimate.step_seconds == 1.5 and estimate.epoch_seconds == 190.0
    assert estimate.epochs_run == pytest.approx(1800 / 190) and estimate.total_seconds == pytest.approx(1800)
    assert estimate.describe().startswith(
        "30 minutes on this CPU hold about 947 steps (9.5 epochs of 100) at 1.50 s a step (5 steps timed, 1.40 "
        "to 1.60 s)"
    )
    fixed = TrainingEstimate("cpu", [1.5], 2.0, 2, 100, 20)  # no budget: the plan's epochs
    assert fixed.total_seconds == 380.0 and fixed.describe().startswith("about 6.3 min on this CPU: 200 steps")


def test_a_cpu_plan_is_compact_and_trains_for_its_time_budget(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    calls = []
    plans, estimate = plan_for_device(data, tmp_path / "run", "cpu", edits={"val_max_cases": 1},
                                      time_training=_fake_timer(1.5, 2.0, calls))

    network = plans.network_settings
    assert {k: network[k] for k in CPU_NETWORK} == CPU_NETWORK
    assert plans.batch_size <= 4 and plans.training.optimizer == "adamw" and plans.training.lr == 3e-3
    assert plans.training.iters_per_epoch == 100 and plans.training.val_max_cases == 1
    # the length is the budget, stored as such; the epochs are a fixed cap, not fitted to a timing
    assert plans.training.time_budget_minutes == CPU_TRAINING_MINUTES
    assert plans.training.epochs == CPU_MAX_EPOCHS
    assert plans.planned_for == {**plans.planned_for, "device": "cpu", "memory_budget_gb": 2.0,
                                 "plan_edits": {"val_max_cases": 1}}
    assert plans == Plans.load(tmp_path / "run")  # as saved
    assert estimate.total_seconds == pytest.approx(60 * CPU_TRAINING_MINUTES)

    given = plan_for_device(data, tmp_path / "epochs", "cpu", edits={"epochs": 3})
    assert given[1] is None  # no timer, no estimate
    assert (given[0].training.epochs, given[0].training.time_budget_minutes) == (3, None)  # the user's length


def test_the_estimate_is_the_callers_timers_and_the_plan_does_not_depend_on_it(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    calls = []
    plans, estimate = plan_for_device(data, tmp_path / "slow", "cpu", edits={"val_max_cases": 1},
                                      time_training=_fake_timer(1.5, 2.0, calls))
    # the planned device travels to the timer, which times the plan as planned, once
    [(timed, device)] = calls
    assert device == torch.device("cpu")
    assert (timed.patch_size, timed.batch_size, timed.network_settings, timed.training) == (
        plans.patch_size, plans.batch_size, plans.network_settings, plans.training)
    # one epoch: 100 steps of 1.5 s and 1 validation case of 2 s; the 30-minute budget holds 1800 / 152 epochs
    assert estimate.step_samples == [1.5] * MIN_TIMED_STEPS and estimate.validation_case_seconds == 2.0
    assert estimate.epoch_seconds == pytest.approx(152.0)
    assert estimate.epochs_run == pytest.approx(1800 / 152)
    assert estimate.describe().startswith("30 minutes on this CPU hold about 1184 steps (11.8 epochs of 100)")

    fast = plan_for_device(data, tmp_path / "fast", "cpu", edits={"val_max_cases": 1},
                           time_training=_fake_timer(0.015, 0.02, []))[1]
    assert fast.epochs_run == CPU_MAX_EPOCHS and fast.total_seconds == pytest.approx(CPU_MAX_EPOCHS * 1.52)
    assert (tmp_path / "slow" / "plans.json").read_text() == (tmp_path / "fast" / "plans.json").read_text()


def test_planning_twice_gives_the_same_plan_even_while_another_process_loads_the_cpu(tmp_path, one_thread):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    edits = {"network_settings": {"base_features": 4, "head_dim": 4}, "val_max_cases": 1}
    quiet = plan_for_device(data, tmp_path / "quiet", "cpu", edits=edits, time_training=time_training)[1]
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = plan_for_device(data, tmp_path / "busy", "cpu", edits=edits, time_training=time_training)[1]
    finally:
        load.kill()
        load.wait()
    assert (tmp_path / "quiet" / "plans.json").read_text() == (tmp_path / "busy" / "plans.json").read_text()
    assert quiet.step_samples != busy.step_samples  # timed both times: only the estimate differs
    assert len(quiet.step_samples) >= MIN_TIMED_STEPS and quiet.step_seconds > 0


def test_a_gpu_plan_is_made_without_a_gpu_and_keeps_nnunets_schedule(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    plans, estimate = plan_for_device(data, tmp_path / "run", "cuda:1")
    assert plans.planned_device == "cuda" and estimate is None
    assert "base_features" not in plans.network_settings
    training = plans.training
    assert (training.optimizer, training.epochs, training.iters_per_epoch) == ("sgd", 1000, 250)


def _cpu_plan(planned_for=None):
    """A plan of 256x256 patches as `usema plan --device cpu` makes it."""
    return {
        "version": 2,
        "dataset": {"path": "/nonexistent", "format": "folder2d", "spatial_dims": 2, "num_channels": 1,
                    "labels": {"0": "background", "1": "foreground"}, "label_mode": "binary",
                    "num_classes": 2, "cases": ["a"]},
        "target_spacing": [1.0, 1.0], "normalization": {"scheme": "zscore_per_image"},
        "patch_size": [256, 256], "batch_size": 4,
        "model": {"name": "usema", "network_settings": dict(CPU_NETWORK)},
        "training": {"optimizer": "adamw", "lr": 3e-3, "epochs": 6, "iters_per_epoch": 100},
        "planned_for": {"device": "cpu", "memory_budget_gb": 2.0} if planned_for is None else planned_for,
    }


def test_training_on_another_device_names_what_was_chosen_for_the_planned_one():
    plans = Plans(_cpu_plan())
    assert device_mismatch(plans, "cpu") is None
    assert device_mismatch(Plans(_cpu_plan(planned_for={})), "cuda") is None
    assert device_mismatch(plans, "cuda:0", "RUN/plans.json") == (
        "RUN/plans.json was planned for cpu and this run trains on cuda; chosen for cpu: the compact network "
        "(base_features 16, max_features 128, blocks_per_stage 1, head_dim 16; a cuda plan "
        "keeps the preset's widths); adamw lr 0.003 (a cuda plan: sgd lr 0.01); 600 steps (a cuda plan: 250000); "
        "patch 256x256 and batch 4 sized for a 2 GiB budget. `usema plan DATA -o NEW_RUN --device cuda` plans for "
        "this device"
    )

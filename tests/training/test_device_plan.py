"""Plans for the training device: the compact CPU plan fitted to its time budget, and the warning when a plan
made for one kind of device trains on another."""

import pytest

from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans
from usema.training.device_plan import (
    CPU_NETWORK,
    CPU_TRAINING_MINUTES,
    _fit_to_cpu_budget,
    compact_network,
    device_mismatch,
    plan_for_device,
)
from usema.training.estimate import TrainingEstimate


def test_the_compact_settings_are_those_the_model_takes_and_does_not_fix():
    assert compact_network("usema") == CPU_NETWORK
    assert compact_network("usema-nosema") == CPU_NETWORK
    assert compact_network("unetr") == {}


@pytest.mark.parametrize(("step", "epochs", "iters"), [(1.5, 9, 100), (30.0, 1, 58)])
def test_the_epochs_fit_the_cpu_budget(step, epochs, iters):
    plans = Plans(_cpu_plan())
    estimate = TrainingEstimate("cpu", step, 2.0, 50, 100, 20)  # validation: 20 cases of 2 s after each epoch

    fitted = _fit_to_cpu_budget(plans, estimate)

    assert (fitted.training.epochs, fitted.training.iters_per_epoch) == (epochs, iters)
    assert (plans.training.epochs, plans.training.iters_per_epoch) == (6, 100)  # not changed in place
    assert (estimate.epochs, estimate.iters_per_epoch) == (epochs, iters)
    assert estimate.total_seconds <= 60 * CPU_TRAINING_MINUTES


def test_a_cpu_plan_is_compact_timed_and_fitted(tmp_path, one_thread):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    plans, estimate = plan_for_device(data, tmp_path / "run", "cpu", edits={"val_max_cases": 1})

    network = plans.network_settings
    assert {k: network[k] for k in CPU_NETWORK} == CPU_NETWORK
    assert plans.batch_size <= 4 and plans.training.optimizer == "adamw" and plans.training.lr == 3e-3
    assert plans.training.iters_per_epoch == 100 and plans.training.val_max_cases == 1
    assert plans.planned_for == {**plans.planned_for, "device": "cpu", "memory_budget_gb": 2.0,
                                 "plan_edits": {"val_max_cases": 1}}
    assert plans == Plans.load(tmp_path / "run")  # as saved
    assert estimate.step_seconds > 0 and estimate.epochs == plans.training.epochs
    budget = 60 * CPU_TRAINING_MINUTES
    assert budget - estimate.epoch_seconds < estimate.total_seconds <= budget


def test_a_gpu_plan_is_made_without_a_gpu_and_keeps_nnunets_schedule(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=5, shape=(40, 36), seed=0)
    plans, estimate = plan_for_device(data, tmp_path / "run", "cuda:1", estimate=False)
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

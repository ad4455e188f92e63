"""Deprecated: usema.training.device_plan, moved to usema.planning.device; its names still work for one
release, with a warning, and its `plan_for_device` makes the plan `usema.plan` makes."""

import pytest

import usema
from usema.data.phantoms import make_phantom_dataset
from usema.planning import device


def test_the_old_plan_for_device_warns_and_makes_the_plan_usema_plan_makes(tmp_path):
    from usema.training import device_plan

    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=4, shape=(24, 20), seed=0)
    edits = {"val_max_cases": 1}
    with pytest.warns(FutureWarning, match=r"device_plan.plan_for_device is deprecated.*use usema\.plan"):
        old, timed = device_plan.plan_for_device(data, tmp_path / "old", "cpu", edits=edits, estimate=False)
    new, untimed = usema.plan(data, tmp_path / "new", device="cpu", edits=edits, estimate=False)
    assert timed is None and untimed is None and old.patch_size == new.patch_size
    assert (tmp_path / "old" / "plans.json").read_text() == (tmp_path / "new" / "plans.json").read_text()
    assert old.training.time_budget_minutes == device.CPU_TRAINING_MINUTES
    with pytest.warns(FutureWarning):  # the old positions: estimate after edits
        positional = device_plan.plan_for_device(data, tmp_path / "positional", "cpu", "usema", None, None, edits,
                                                 False)
    assert positional[1] is None and positional[0].patch_size == new.patch_size


def test_the_old_names_warn_and_are_the_new_ones():
    from usema.training import device_plan

    with pytest.warns(FutureWarning, match=r"device_plan.CPU_NETWORK is deprecated.*usema\.planning\.device"):
        from usema.training.device_plan import CPU_NETWORK
    assert CPU_NETWORK is device.CPU_NETWORK
    with pytest.warns(FutureWarning):
        assert device_plan.describe_plan is device.describe_plan
    with pytest.raises(AttributeError):
        device_plan.estimate_training  # noqa: B018

"""What plans.json must hold, and plans of version 1 read in the current format."""

import pytest

from usema.errors import DataError
from usema.planning.schema import PLANS_VERSION, migrate_plans, validate_plans


def _plan(**changes):
    plan = {
        "version": 2,
        "dataset": {
            "path": "/d",
            "format": "msd",
            "spatial_dims": 2,
            "num_channels": 1,
            "label_mode": "semantic",
            "num_classes": 2,
            "cases": ["a"],
            "labels": {"0": "background", "1": "x"},
        },
        "target_spacing": [1.0, 1.0],
        "normalization": {"scheme": "none"},
        "patch_size": [8, 8],
        "batch_size": 2,
        "model": {"name": "usema", "network_settings": {"strides": [[1, 1], [2, 2]]}},
        "training": {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "iters_per_epoch": 1},
    }
    plan.update(changes)
    return plan


def test_version_1_names_the_network_settings_overrides_and_is_read_as_version_2():
    old = _plan(version=1, model={"name": "usema", "overrides": {"head_dim": 8}})
    new = migrate_plans(old)
    assert new["version"] == PLANS_VERSION == 2 and new["model"] == {
        "name": "usema",
        "network_settings": {"head_dim": 8},
    }
    assert old["model"] == {"name": "usema", "overrides": {"head_dim": 8}}  # the input is left alone
    current = _plan()
    assert migrate_plans(current) is current and migrate_plans("not a plan") == "not a plan"
    validate_plans(new, "plans.json")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        (
            {"model": {"name": "usema", "network_settings": {"strides": [[1, 1, 1]]}}},
            "model.network_settings.strides",
        ),
        ({"model": {"name": "usema", "network_settings": []}}, "model.network_settings"),
        (
            {
                "training": {
                    "optimizer": "adamw",
                    "lr": 0.003,
                    "epochs": 1,
                    "iters_per_epoch": 1,
                    "num_workers": -1,
                }
            },
            "training.num_workers",
        ),
        ({"version": 3}, "version"),
    ],
)
def test_a_broken_edit_is_named_by_its_key(changes, key):
    with pytest.raises(DataError, match=rf"run/plans\.json: plans key '{key}'"):
        validate_plans(_plan(**changes), "run/plans.json")

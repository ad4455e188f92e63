"""What plans.json must hold, and plans of versions 1 and 2 read in the current format."""

import pytest

from usema.errors import DataError
from usema.planning.schema import PLANS_VERSION, migrate_network_description, migrate_plans, validate_plans


def _plan(**changes):
    plan = {
        "version": PLANS_VERSION,
        "dataset": {
            "path": "/d",
            "format": "msd",
            "spatial_dims": 2,
            "num_channels": 1,
            "label_mode": "semantic",
            "num_classes": 2,
            "cases": ["a"],
            "labels": {"0": "background", "1": "x"},
            "label_values": [0, 1],
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


def test_version_1_names_the_network_settings_overrides_and_earlier_plans_name_every_stage():
    old = _plan(version=1, model={"name": "usema", "overrides": {"head_dim": 8}})
    del old["dataset"]["label_values"]
    new = migrate_plans(old)
    # before version 3 a plan that named no placement built the class default of its time: a block per stage
    assert new["version"] == PLANS_VERSION == 4 and new["model"] == {
        "name": "usema",
        "network_settings": {"head_dim": 8, "sema_per_stage": "all"},
    }
    assert old["model"] == {"name": "usema", "overrides": {"head_dim": 8}}  # the input is left alone
    current = _plan()
    assert migrate_plans(current) is current and migrate_plans("not a plan") == "not a plan"
    validate_plans(new, "plans.json")


def _version_2(label_mode, num_classes=2, **dataset):
    plan = _plan(version=2)
    del plan["dataset"]["label_values"]
    plan["dataset"].update(label_mode=label_mode, num_classes=num_classes, **dataset)
    return plan


@pytest.mark.parametrize(
    ("old", "values", "ignore_value"),
    [
        # version 2 trained on the file values (semantic) or on 0/1 (binary) and predicted those: kept
        (_version_2("semantic", 3), [0, 1, 2], None),
        (_version_2("binary"), [0, 1], None),
        (_version_2("semantic", 3, ignore_label=3), [0, 1, 2], 3),
        (_version_2("instance", 3), None, None),
    ],
)
def test_version_2_plans_get_the_label_values_they_predicted(old, values, ignore_value):
    new = migrate_plans(old)
    validate_plans(new, "plans.json")
    assert new["dataset"].get("label_values") == values and new["dataset"].get("ignore_value") == ignore_value
    assert "label_values" not in old["dataset"]


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        # a version 2 plan that names its placement keeps it
        ({"name": "usema", "network_settings": {"sema_per_stage": "deepest-2"}}, {"sema_per_stage": "deepest-2"}),
        # presets that fix their blocks, models without SEMA blocks and unknown names get none
        ({"name": "usema-nosema", "network_settings": {}}, {}),
        ({"name": "nnunet", "network_settings": {}}, {}),
        ({"name": "no-such-model", "network_settings": {}}, {}),
        # an ablation preset leaves its placement to the plan like usema
        ({"name": "usema-window"}, {"sema_per_stage": "all"}),
    ],
)
def test_version_2_plans_name_the_placement_they_were_built_with(model, settings):
    new = migrate_plans(_plan(version=2, model=model))
    assert new["version"] == 4 and new["model"]["name"] == model["name"]
    assert new["model"].get("network_settings", {}) == settings


def test_a_checkpoints_description_is_migrated_with_the_version_of_its_plans():
    description = {"name": "usema", "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
                   "overrides": {"head_dim": 8}}
    assert migrate_network_description(description, 1) == {
        "name": "usema", "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
        "network_settings": {"head_dim": 8, "sema_per_stage": "all"},
    }
    assert "overrides" in description  # the input is left alone
    current = {**description, "network_settings": {}}
    assert migrate_network_description(current, PLANS_VERSION) is current  # a current one builds the default


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
        ({"version": 5}, "version"),
        ({"dataset": {**_plan()["dataset"], "label_values": [0]}}, "dataset.label_values"),
        ({"dataset": {**_plan()["dataset"], "label_values": [255, 0]}}, "dataset.label_values"),
        ({"dataset": {**_plan()["dataset"], "label_mode": "instance"}}, "dataset.label_values"),
        ({"dataset": {**_plan()["dataset"], "ignore_label": 2}}, "dataset.ignore_value"),
        ({"dataset": {**_plan()["dataset"], "ignore_label": 2, "ignore_value": 1}}, "dataset.ignore_value"),
    ],
)
def test_a_broken_edit_is_named_by_its_key(changes, key):
    with pytest.raises(DataError, match=rf"run/plans\.json: plans key '{key}'"):
        validate_plans(_plan(**changes), "run/plans.json")

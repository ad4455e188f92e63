"""Plans: the one reader of plans.json: sections, defaults, older versions, edits, and the network it
builds."""

import dataclasses
import json

import pytest
import torch

from usema.errors import DataError
from usema.models.spec import NetworkSpec
from usema.planning import PLANS_NAME, Plans
from usema.planning.plans import ChannelNormalization, Normalization, is_plans_file
from usema.planning.settings import DEFAULT_LR


def plan_data(version=4, model="usema-nosema", settings=None, patch=(16, 16, 16)):
    """A complete plan as planning writes it (version 1 named the network settings "overrides"; versions 1 and 2
    record no label values)."""
    settings = (
        settings
        if settings is not None
        else {"base_features": 4, "blocks_per_stage": 1, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}
    )
    return {
        "version": version,
        "dataset": {
            "path": "/data/phantoms",
            "format": "msd",
            "spatial_dims": len(patch),
            "num_channels": 1,
            "channel_names": ["MRI"],
            "modality": "MR",
            "labels": {"0": "background", "1": "a", "2": "b"},
            "label_mode": "semantic",
            "num_classes": 3,
            "cases": ["c0", "c1"],
            **({"label_values": [0, 1, 2]} if version >= 4 else {}),
        },
        "fingerprint": {"num_cases": 2},
        "target_spacing": [1.0] * len(patch),
        "normalization": {"scheme": "zscore_per_image"},
        "patch_size": list(patch),
        "batch_size": 2,
        "model": {"name": model, ("overrides" if version == 1 else "network_settings"): settings},
        "training": {"optimizer": "adamw", "lr": 0.003, "epochs": 5, "iters_per_epoch": 7, "num_workers": 0},
    }


def test_sections_are_typed_and_absent_training_keys_take_the_one_set_of_defaults():
    plans = Plans(plan_data())
    info = plans.dataset
    assert (info.num_channels, info.num_classes, info.case_ids, info.class_names) == (
        1,
        3,
        ["c0", "c1"],
        ["a", "b"],
    )
    assert (plans.patch_size, plans.spatial_dims, plans.batch_size, plans.model_name) == (
        [16, 16, 16],
        3,
        2,
        "usema-nosema",
    )
    assert plans.network_settings["base_features"] == 4 and plans.target_spacing == [1.0, 1.0, 1.0]
    training = plans.training
    assert (training.optimizer, training.lr, training.epochs, training.iters_per_epoch) == (
        "adamw",
        3e-3,
        5,
        7,
    )
    assert (training.momentum, training.nesterov, training.schedule, training.deep_supervision) == (
        0.99,
        True,
        "poly",
        True,
    )
    assert (training.oversample_foreground, training.precision, training.val_max_cases) == (
        0.33,
        "auto",
        None,
    )
    # the properties hand out copies: nothing outside edits the plan
    plans.network_settings["base_features"] = 99
    assert plans.network_settings["base_features"] == 4


def test_the_normalization_is_typed_and_written_back_as_the_plan_holds_it():
    shared = Plans(plan_data()).normalization
    assert shared == Normalization((ChannelNormalization("zscore_per_image"),))
    assert shared.scheme == "zscore_per_image" and shared.for_channels(2) == shared.channels * 2
    ct = {"scheme": "ct", "clip": [-100, 200.5], "mean": 40, "std": 12.5}
    per_channel = {"scheme": "per_channel", "channels": [ct, {"scheme": "none"}]}
    data = plan_data()
    data["dataset"].update(num_channels=2, channel_names=["CT", "noNorm"])
    data["normalization"] = per_channel
    normalization = Plans(data).normalization
    assert normalization.scheme == "per_channel" and normalization.per_channel
    first, second = normalization.for_channels(2)
    assert (first.scheme, first.clip, first.mean, first.std, second.scheme) == ("ct", (-100, 200.5), 40, 12.5, "none")
    # the values as the file holds them: the preprocessed cases' key (a hash of them) stays what it was
    assert normalization.to_dict() == per_channel and str(normalization) == str(per_channel)
    assert Normalization.from_dict(ct).to_dict() == ct


def test_a_version_1_plan_loads_and_is_saved_in_the_current_version(tmp_path):
    old = plan_data(version=1)
    (tmp_path / PLANS_NAME).write_text(json.dumps(old))
    assert is_plans_file(tmp_path / PLANS_NAME)
    plans = Plans.load(tmp_path)
    assert plans.version == 4 and plans.network_settings == old["model"]["overrides"]
    plans.save(tmp_path)
    stored = json.loads((tmp_path / PLANS_NAME).read_text())
    assert stored["version"] == 4 and "overrides" not in stored["model"]
    assert stored["dataset"]["label_values"] == [0, 1, 2]  # what the version 1 plan predicted
    assert stored["model"]["network_settings"] == old["model"]["overrides"]
    assert Plans.load(tmp_path / PLANS_NAME) == plans
    with pytest.raises(DataError, match="'version' must be one of 1, 2, 3, 4"):
        Plans({**old, "version": 7})


def test_training_choices_switch_the_learning_rate_with_the_optimizer_and_keep_the_rest():
    plans = Plans(plan_data())
    chosen = plans.with_training(plans.training.with_choices(optimizer="sgd", epochs=3, precision="auto"))
    assert (chosen.training.optimizer, chosen.training.lr, chosen.training.epochs) == (
        "sgd",
        DEFAULT_LR["sgd"],
        3,
    )
    assert chosen.training.iters_per_epoch == 7 and plans.training.epochs == 5  # the input is left alone
    assert chosen.to_dict()["training"]["num_workers"] == 0
    with pytest.raises(Exception, match="epochs must be at least 1"):
        plans.training.with_choices(epochs=0)


def test_difference_names_the_key_and_ignores_training_settings_and_dataset_location():
    trained = Plans(plan_data())
    moved = plan_data()
    moved["dataset"]["path"], moved["training"]["epochs"] = "/elsewhere", 50
    assert Plans(moved).difference_from(trained) is None
    assert Plans(plan_data(patch=(16, 16, 8))).difference_from(trained) == (
        "patch_size was [16, 16, 16], plans.json now has [16, 16, 8]"
    )
    fewer = plan_data(settings={"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]})
    assert Plans(fewer).difference_from(trained) == (
        "model.network_settings.base_features was 4, plans.json now has (absent)"
    )
    assert (
        Plans(plan_data()).difference_from(Plans(plan_data(version=1))) is None
    )  # an older checkpoint's plan


def test_another_model_gets_its_own_windows(tmp_path):
    plans = Plans(
        plan_data(
            patch=(40, 56, 40),
            settings={"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], "head_dim": 8},
        )
    )
    usema = plans.with_model("usema", {"base_features": 8})
    settings = usema.network_settings
    # the default placement (deepest-2) and windows for its two stages only
    assert settings["sema_per_stage"] == "deepest-2"
    assert settings["stage_windows"] == [None, None, [5, 7, 5], [5, 7, 5]]
    assert settings["head_dim"] == 8 and settings["base_features"] == 8 and usema.model_name == "usema"
    every = plans.with_model("usema", {"sema_per_stage": "all"}).network_settings
    assert every["stage_windows"] == [[5, 4, 5], [5, 4, 5], [5, 7, 5], [5, 7, 5]]
    assert "stage_windows" not in usema.with_model("usema-nosema").network_settings  # no SEMA, no windows
    # another model keeps the plan's settings it takes: nnU-Net's UNet has no SEMA placement and no head_dim
    nnunet = usema.with_model("nnunet").network_settings
    assert nnunet["base_features"] == 8 and "head_dim" not in nnunet and "sema_per_stage" not in nnunet


def test_the_network_is_the_one_the_plan_trains(tmp_path):
    plans = Plans(plan_data())
    assert plans.network == NetworkSpec("usema-nosema", 3, 1, 3, plans.network_settings)
    assert plans.network.to_dict() == {
        "name": "usema-nosema",
        "spatial_dims": 3,
        "in_channels": 1,
        "num_classes": 3,
        "network_settings": plans.network_settings,
    }  # what a checkpoint stores beside the weights (with the deep supervision it trained with)
    network = plans.network.build()
    out = network(torch.zeros(1, 1, 16, 16, 16))
    assert out.shape == (1, 3, 16, 16, 16)  # the plan's channels and classes, one output without supervision
    assert isinstance(plans.network.build(deep_supervision=True)(torch.zeros(1, 1, 16, 16, 16)), list)
    typo = Plans(plan_data(settings={"blocks_per_stag": 1}), tmp_path / PLANS_NAME)
    with pytest.raises(
        DataError, match=r"plans\.json: model 'usema-nosema' has no network setting 'blocks_per_stag'"
    ):
        typo.check_network()


def test_the_old_network_methods_warn_and_give_what_the_network_spec_gives():
    plans = Plans(plan_data())
    with pytest.warns(FutureWarning, match=r"plans\.network\.to_dict\(\)"):
        description = plans.network_description(deep_supervision=True)
    assert description == {**plans.network.to_dict(), "deep_supervision": True}
    with pytest.warns(FutureWarning, match=r"plans\.network\.build\(\)"):
        network = plans.build_network(deep_supervision=True)
    assert isinstance(network(torch.zeros(1, 1, 16, 16, 16)), list)  # deep supervision: one output per scale


def test_unetr_is_built_at_the_plans_patch_size():
    pytest.importorskip("einops", reason="MONAI's UNETR needs einops")
    small = {"feature_size": 4, "hidden_size": 12, "mlp_dim": 8, "num_heads": 1}
    plans = Plans(plan_data(model="unetr", settings=small, patch=(32, 32)))
    assert plans.network.network_settings["patch_size"] == [32, 32]
    network = plans.network.build()
    assert network.img_size == (32, 32)
    wider = Plans(plan_data(model="unetr", settings=small, patch=(64, 64))).network.build()
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(wider) - count(network) == 12 * (16 - 4)  # the position embedding grows with the patch


def test_edits_are_validated_and_saving_writes_nothing_broken(tmp_path):
    plans = Plans(plan_data())
    with pytest.raises(DataError, match="training.epochs"):
        plans.with_training(dataclasses.replace(plans.training, epochs=0))
    assert not (tmp_path / PLANS_NAME).exists()


def test_case_sizes_are_the_foreground_voxels_else_the_image_voxels():
    data = plan_data()
    assert Plans(data).case_sizes() is None  # a fingerprint without shapes or counts
    data["fingerprint"] = {"shapes": [[2, 3, 4], [5, 5, 5]]}
    assert Plans(data).case_sizes() == {"c0": 24, "c1": 125}
    data["fingerprint"]["foreground_voxels"] = [7, 3]
    assert Plans(data).case_sizes() == {"c0": 7, "c1": 3}

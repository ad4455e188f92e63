"""The network a plan describes: the settings stored for a model, their checks, and building it."""

import pytest

from usema.errors import UsemaError
from usema.models.spec import NetworkSpec
from usema.models.usema import DEFAULT_PLACEMENT
from usema.planning.network import (
    check_network_settings,
    network_for_patch,
    network_settings_for,
    settings_for_building,
)

STRIDES = [[1, 1], [2, 2], [2, 2]]


def test_the_stored_settings_name_the_placement_and_windows_of_sema_presets_only():
    usema = network_settings_for("usema", 2, [64, 64], STRIDES, {"head_dim": 8})
    assert usema["strides"] == STRIDES and usema["head_dim"] == 8
    assert usema["sema_per_stage"] == DEFAULT_PLACEMENT
    assert usema["stage_windows"] == [None, [8, 8], [8, 8]]  # deepest-2 of 3 stages: the 32x32 and 16x16 maps
    control = network_settings_for("usema-nosema", 2, [64, 64], STRIDES)
    assert control == {"strides": STRIDES}  # it fixes its zero SEMA blocks: nothing to place
    given = network_settings_for("usema", 2, [64, 64], STRIDES, {"strides": [[1, 1], [2, 2]], "stage_windows": [4, 4]})
    assert given["strides"] == [[1, 1], [2, 2]] and given["stage_windows"] == [4, 4]  # given settings win


def test_fixed_size_networks_get_the_patch_and_unknown_settings_are_named():
    assert settings_for_building("unetr", {}, (32, 48)) == {"patch_size": [32, 48]}
    assert settings_for_building("usema", {"head_dim": 8}, (32, 48)) == {"head_dim": 8}
    with pytest.raises(UsemaError, match="no network setting 'head_dimm'"):
        check_network_settings("usema", 2, {"head_dimm": 8})


def test_a_description_builds_its_network_with_or_without_deep_supervision():
    description = {"name": "usema-nosema", "spatial_dims": 2, "in_channels": 2, "num_classes": 4,
                   "network_settings": {"strides": STRIDES, "base_features": 4}, "deep_supervision": True}
    assert NetworkSpec.from_dict(description).build().deep_supervision is True
    network = NetworkSpec.from_dict(description).build(deep_supervision=False)
    assert network.deep_supervision is False and network.features == [4, 8, 16]
    assert network.heads[-1].conv.conv.out_channels == 4 and network.encoder[0][0].conv1.conv.in_channels == 2


def test_the_network_for_a_patch_is_the_one_a_plan_for_that_patch_stores():
    network = network_for_patch("usema", [64, 64], 2, 4, {"head_dim": 8}, spacing=[1.0, 1.0])
    assert (network.name, network.spatial_dims, network.in_channels, network.num_classes) == ("usema", 2, 2, 4)
    strides = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]  # halved while the map keeps >= 4 pixels
    assert network.network_settings == network_settings_for("usema", 2, [64, 64], strides, {"head_dim": 8})
    # anisotropic images pool their fine axes first
    assert network_for_patch("usema", [64, 64], 1, 2, spacing=[1.0, 3.0]).network_settings["strides"][1] == [2, 1]

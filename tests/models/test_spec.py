"""NetworkSpec: a network as data, read in the current layout, and built as the registry builds its preset."""

import pytest

from usema.errors import UsemaError
from usema.models import build_model
from usema.models.spec import NetworkSpec, current_layout
from usema.models.summary import count_parameters
from usema.models.usema import USEMA

SETTINGS = {"strides": [[1, 1], [2, 2], [2, 2]], "base_features": 4, "head_dim": 4}


def test_a_description_round_trips_through_its_dict():
    spec = NetworkSpec("usema", 2, 3, 4, SETTINGS, deep_supervision=True)
    assert spec.to_dict() == {"name": "usema", "spatial_dims": 2, "in_channels": 3, "num_classes": 4,
                              "network_settings": SETTINGS, "deep_supervision": True}
    assert NetworkSpec.from_dict(spec.to_dict()) == spec
    unsaid = NetworkSpec("usema", 2, 3, 4, SETTINGS)
    assert "deep_supervision" not in unsaid.to_dict() and NetworkSpec.from_dict(unsaid.to_dict()) == unsaid
    given = dict(SETTINGS)
    held = NetworkSpec("usema", 2, 3, 4, given)
    given["head_dim"] = 8  # the description keeps what it was given
    assert held.network_settings["head_dim"] == 4


def test_it_builds_what_the_registry_builds():
    spec = NetworkSpec("usema", 2, 3, 4, SETTINGS)
    network = spec.build()
    assert count_parameters(network) == count_parameters(build_model("usema", 2, 3, 4, **SETTINGS))
    assert network.deep_supervision is False
    assert spec.build(deep_supervision=True).deep_supervision is True
    assert NetworkSpec("usema", 2, 3, 4, SETTINGS, deep_supervision=True).build().deep_supervision is True
    builder, arguments = spec.builder_call()
    assert builder is USEMA and arguments["attention"] == "sema" and arguments["head_dim"] == 4
    with pytest.raises(UsemaError, match="model 'usema' has no network setting 'head_dimm'"):
        NetworkSpec("usema", 2, 1, 2, {"head_dimm": 4}).build()


def test_the_older_layout_is_read_in_the_current_one():
    old = {"name": "usema", "spatial_dims": 2, "in_channels": 1, "num_classes": 2, "overrides": {"head_dim": 8}}
    assert current_layout(old)["network_settings"] == {"head_dim": 8} and "overrides" in old  # a copy
    assert NetworkSpec.from_dict(old) == NetworkSpec("usema", 2, 1, 2, {"head_dim": 8})
    assert current_layout({"name": "usema", "overrides": {}}) == {"name": "usema", "network_settings": {}}


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ({"name": "usema", "spatial_dims": 2}, "has no 'in_channels', 'num_classes'"),
        ({"name": "usema", "spatial_dims": "two", "in_channels": 1, "num_classes": 2}, "must be integers"),
        ({"name": "usema", "spatial_dims": 2, "in_channels": 1, "num_classes": 2, "network_settings": []},
         "network_settings a mapping"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_a_malformed_description_is_named(description, message):
    with pytest.raises(UsemaError, match=message):
        NetworkSpec.from_dict(description)


def test_the_first_difference_is_named_and_unknown_deep_supervision_is_not_compared():
    stored = NetworkSpec("usema", 2, 1, 3, {"head_dim": 8}, deep_supervision=True)
    assert NetworkSpec("usema", 2, 1, 3, {"head_dim": 8}).difference_from(stored) is None
    assert NetworkSpec("usema", 2, 1, 2, {}).difference_from(stored) == "num_classes=3, expected 2"
    assert stored.difference_from(NetworkSpec("usema", 2, 1, 3, {"head_dim": 8})) == (
        "deep_supervision=None, expected True")

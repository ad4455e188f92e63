"""The model registry: a network setting that a model does not take is named, with the settings it takes."""

import pytest

from usema.errors import UsemaError
from usema.models import build_model
from usema.models.registry import check_settings


def test_a_typo_in_the_settings_names_the_key_the_model_and_what_it_takes():
    with pytest.raises(
        UsemaError, match=r"model 'usema' has no network setting 'head_dimm'; .* head_dim, "
    ) as err:
        build_model("usema", 3, 1, 2, head_dimm=8)
    assert "base_features" in str(err.value) and "strides" in str(err.value)


@pytest.mark.parametrize(("model", "foreign"), [("nnunet", "head_dim"), ("unetr", "blocks_per_stage")])
def test_a_setting_of_another_model_is_refused_for_a_baseline(model, foreign):
    with pytest.raises(UsemaError, match=rf"model '{model}' has no network setting '{foreign}'"):
        check_settings(model, 3, {"strides": [[1, 1, 1]], foreign: 2})


def test_settings_passed_on_to_the_wrapped_network_are_accepted():
    # U-Mamba passes every setting it does not use itself on to USEMA: those are its settings too
    check_settings("umamba-bot", 3, {"head_dim": 16, "base_features": 8, "strides": [[1, 1, 1]]})
    check_settings("unetr", 3, {"patch_size": [16, 16, 16], "strides": [[1, 1, 1]]})


def test_a_shared_plans_settings_narrowed_to_what_each_model_takes():
    from usema.models.registry import settings_it_takes

    shared = {"base_features": 16, "blocks_per_stage": 1, "head_dim": 16, "sema_per_stage": "deepest-2"}
    assert settings_it_takes("usema", 3, shared) == shared
    nosema = settings_it_takes("usema-nosema", 3, shared)
    assert nosema == {"base_features": 16, "blocks_per_stage": 1, "head_dim": 16}
    assert settings_it_takes("nnunet", 3, shared) == {"base_features": 16, "blocks_per_stage": 1}


def test_the_preset_of_a_builder_is_found_by_its_own_settings():
    from usema.models.registry import preset_with

    assert preset_with("usema", {"attention": "sema"}) == "usema"
    assert preset_with("usema", {"attention": "window"}) == "usema-window"
    with pytest.raises(UsemaError, match=r"no usema preset has the settings \{'attention': 'soft'\}"):
        preset_with("usema", {"attention": "soft"})

"""SEMA windows that tile each SEMA stage's map of the planned patch."""

import pytest

from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans
from usema.planning.planner import plan_dataset
from usema.planning.windows import axis_window, sema_windows, stage_map_sizes, tiling_patch


@pytest.mark.parametrize("size,target,expected", [
    (40, 5, 5), (56, 5, 4), (28, 5, 4), (20, 5, 5), (7, 5, 7), (5, 5, 5), (3, 5, 3),
    (256, 7, 8), (12, 7, 6), (10, 7, 10), (34, 7, None), (26, 7, 13),
])
def test_axis_window_divides_the_map_near_the_target(size, target, expected):
    assert axis_window(size, target) == expected


def test_windows_per_stage_and_the_stages_nothing_tiles():
    strides = [[1, 1], [2, 2], [2, 2]]
    assert stage_map_sizes([68, 64], strides) == [[68, 64], [34, 32], [17, 16]]
    windows, untiled = sema_windows([68, 64], strides, sema_stages=[1, 2], target=7)
    assert windows == [None, None, None] and untiled == [1, 2]  # 34 and 17 have no divisor in 4..14
    windows, untiled = sema_windows([64, 64], strides, sema_stages=[1, 2], target=7)
    assert windows == [None, [8, 8], [8, 8]] and untiled == []


def test_the_patch_moves_to_the_nearest_length_that_tiles():
    strides = [[1, 1], [2, 2], [2, 2]]
    patch = tiling_patch([68, 64], lambda p: strides, lambda n: [1, 2], 7)
    assert patch == [64, 64]  # 68 -> 64 (one total stride shorter) tiles 32 and 16 with 8
    assert tiling_patch([64, 64], lambda p: strides, lambda n: [1, 2], 7) == [64, 64]
    assert tiling_patch([68, 64], lambda p: strides, lambda n: [], 7) == [68, 64]  # no SEMA, no change


def test_plans_give_usema_tiling_windows_and_other_models_none(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=4, shape=(28, 36, 28), seed=0)
    plans = plan_dataset(data, tmp_path / "run", model="usema", device="cpu",
                         network_settings={"sema_per_stage": "all"})
    settings = plans.network_settings
    sizes = stage_map_sizes(plans.patch_size, settings["strides"])
    assert len(settings["stage_windows"]) == len(sizes)
    for size, window in zip(sizes, settings["stage_windows"], strict=True):
        assert all(s % w == 0 for s, w in zip(size, window, strict=True)), (size, window)
    # `model_overrides`, the older name of the network settings, is still read (`--plan model_overrides=...`)
    with pytest.warns(FutureWarning, match="model_overrides is deprecated: use network_settings"):
        control = plan_dataset(data, tmp_path / "control", model="usema-nosema", device="cpu",
                               model_overrides={"base_features": 8}, num_workers=0)
    assert "stage_windows" not in control.network_settings and control.network_settings["base_features"] == 8
    assert "sema_per_stage" not in control.network_settings  # usema-nosema fixes its zero SEMA blocks
    assert control.training.num_workers == 0


def _sema_blocks(network):
    from usema.nn.sema_block import SEMABlock

    return [sum(isinstance(m, SEMABlock) for m in stage) for stage in network.encoder]


def test_plans_name_the_default_placement_and_older_plans_keep_every_stage(tmp_path):
    from usema.models.usema import DEFAULT_PLACEMENT

    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(64, 72), seed=0)
    plans = plan_dataset(data, tmp_path / "run", model="usema", device="cpu",
                         network_settings={"base_features": 8})
    settings = plans.network_settings
    assert settings["sema_per_stage"] == DEFAULT_PLACEMENT == "deepest-2"
    n_stages = len(settings["strides"])
    # windows only where the placement puts SEMA blocks
    assert [w is not None for w in settings["stage_windows"]] == [False] * (n_stages - 2) + [True, True]
    assert _sema_blocks(plans.network.build()) == [0] * (n_stages - 2) + [1, 1]
    # a plan made before placements were planned (version 1, `model.overrides`) names none: its network keeps
    # a SEMA block in every stage
    legacy = {**plans.to_dict(), "version": 1,
              "model": {"name": "usema", "overrides": {"strides": settings["strides"], "base_features": 8}}}
    assert _sema_blocks(Plans(legacy).network.build()) == [1] * n_stages
    # another model for this plan: usema-nosema takes no placement, usema gets the default one back
    nosema = plans.with_model("usema-nosema")
    assert "sema_per_stage" not in nosema.network_settings
    assert _sema_blocks(nosema.network.build()) == [0] * n_stages
    assert nosema.with_model("usema").network_settings["sema_per_stage"] == DEFAULT_PLACEMENT

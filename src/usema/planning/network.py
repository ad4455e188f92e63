"""The network a plan describes: the settings the planner stores for a model and checking them.

A plan stores a model's keyword arguments as its network settings (plans.json `model.network_settings`). The
network is a `usema.models.spec.NetworkSpec` ({name, spatial_dims, in_channels, num_classes,
network_settings}, and deep_supervision in checkpoints, which store it beside the weights): `Plans.network`
makes it, `network_for_patch` makes the one a plan would make for a patch, `NetworkSpec.build` builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from usema.models.spec import NetworkSpec
from usema.planning.windows import placement_settings, window_settings


def network_settings_for(
    model: str,
    spatial_dims: int,
    patch_size: Sequence[int],
    strides: list[list[int]],
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The network settings a plan stores for `model`: `given`, the planner's `strides` where it gives none,
    the SEMA placement (DEFAULT_PLACEMENT for USEMA presets that do not fix it) and SEMA windows that tile
    every SEMA stage's map of `patch_size` where it gives none (see windows.py)."""
    settings = {"strides": strides, **(given or {})}
    settings.update(placement_settings(model, spatial_dims, settings))
    if "stage_windows" not in settings:
        settings.update(window_settings(model, spatial_dims, patch_size, settings["strides"], settings))
    return settings


def settings_for_building(
    model: str, network_settings: dict[str, Any], patch_size: Sequence[int]
) -> dict[str, Any]:
    """The keyword arguments `model` is built with: the plan's network settings, plus the patch size for
    presets whose networks fix their input size at construction (UNETR)."""
    from usema.models.registry import load_presets

    settings = dict(network_settings)
    if load_presets().get(model, {}).get("needs_patch_size"):
        settings.setdefault("patch_size", [int(p) for p in patch_size])
    return settings


def check_network_settings(model: str, spatial_dims: int, settings: dict[str, Any]) -> None:
    """UsemaError naming the setting when `model` is unknown or `settings` hold one it does not take or may
    not change (see usema.models.registry.check_settings)."""
    from usema.models.registry import check_settings

    check_settings(model, spatial_dims, settings)


def network_for_patch(
    model: str,
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    given: dict[str, Any] | None = None,
    spacing: Sequence[float] | None = None,
) -> NetworkSpec:
    """The network a plan of `model` trains on a `patch_size` patch of images at `spacing` (1 mm along every
    axis when not given): the planner's strides for that patch, its SEMA placement and windows, the patch size
    for networks fixed to it (UNETR), `given` settings over them."""
    from usema.planning.planner import stage_strides  # the planner imports this module

    dims, patch = len(patch_size), [int(p) for p in patch_size]
    spacing = [1.0] * dims if spacing is None else [float(s) for s in spacing]
    strides = stage_strides([float(p) for p in patch], spacing)
    settings = network_settings_for(model, dims, patch, strides, given)
    return NetworkSpec(model, dims, in_channels, num_classes, settings_for_building(model, settings, patch))

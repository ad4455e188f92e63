"""The network a plan describes: the settings the planner stores for a model, checking them, and building it.

A plan stores a model's keyword arguments as its network settings (plans.json `model.network_settings`). The
network is built from a description, {name, spatial_dims, in_channels, num_classes, network_settings} (and
deep_supervision), which checkpoints store beside the weights; `Plans.network_description` makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def build_described_network(description: dict[str, Any], deep_supervision: bool | None = None):
    """The network of a description (`Plans.network_description`, a checkpoint's "model" entry), untrained;
    `deep_supervision` replaces the description's (absent: without)."""
    from usema.models import registry

    if deep_supervision is None:
        deep_supervision = bool(description.get("deep_supervision", False))
    return registry.build_model(
        description["name"],
        int(description["spatial_dims"]),
        int(description["in_channels"]),
        int(description["num_classes"]),
        deep_supervision=deep_supervision,
        **description["network_settings"],
    )

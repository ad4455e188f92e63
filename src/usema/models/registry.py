"""The model registry: presets (models/presets.json) map a name to a builder and its settings."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import torch
from torch import nn

from usema.errors import UsemaError

Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}


# Every builder takes these; they come from the plan's dataset, never from its network settings.
_BUILDER_ARGUMENTS = frozenset({"spatial_dims", "in_channels", "num_classes", "deep_supervision"})


def register_builder(name: str, builder: Builder) -> None:
    """Make `builder(spatial_dims, in_channels, num_classes, deep_supervision, **kwargs)` available to presets."""
    _BUILDERS[name] = builder


def passes_settings_to(load_target: Callable[[], Callable[..., Any]]) -> Callable[[Builder], Builder]:
    """Mark a builder whose **kwargs go on to `load_target()` (a loader, so that heavy imports wait until the
    model is built): the settings it takes are then the target's as well as its own."""

    def mark(builder: Builder) -> Builder:
        builder.passes_settings_to = load_target
        return builder

    return mark


def accepted_settings(builder: Callable[..., Any]) -> frozenset[str] | None:
    """The network settings (keyword arguments) `builder` takes, from its signature; None when it takes any."""
    parameters = inspect.signature(builder).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        load_target = getattr(builder, "passes_settings_to", None)
        forwarded = accepted_settings(load_target()) if load_target is not None else None
        if forwarded is None:
            return None
        named |= forwarded
    return frozenset(named - _BUILDER_ARGUMENTS)


@cache
def load_presets() -> dict[str, dict[str, Any]]:
    """The presets shipped with the package, as data: {name: {builder, description, kwargs, kwargs_2d, ...}}."""
    text = resources.files("usema.models").joinpath("presets.json").read_text()
    return json.loads(text)


def list_models() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(load_presets())


def preset_kwargs(name: str, spatial_dims: int) -> tuple[str, dict[str, Any]]:
    """The builder name and keyword arguments of preset `name` for `spatial_dims`."""
    presets = load_presets()
    if name not in presets:
        raise UsemaError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    preset = presets[name]
    kwargs = dict(preset.get("kwargs", {}))
    kwargs.update(preset.get(f"kwargs_{spatial_dims}d", {}))
    return preset["builder"], kwargs


@cache
def _distinguishing_keys(builder_name: str) -> frozenset[str]:
    """Keys set by the presets of `builder_name` where it has several: what makes each of them itself."""
    siblings = [p for p in load_presets().values() if p["builder"] == builder_name]
    if len(siblings) < 2:
        return frozenset()
    return frozenset(
        k for p in siblings for k in (*p.get("kwargs", {}), *p.get("kwargs_2d", {}), *p.get("kwargs_3d", {}))
    )


def check_settings(name: str, spatial_dims: int, settings: dict[str, Any]) -> Builder:
    """The builder of preset `name`, once `settings` (network settings) are known to be settings it takes and
    that do not change what makes the preset itself; UsemaError naming the setting, the model and what it
    takes otherwise."""
    builder_name, kwargs = preset_kwargs(name, spatial_dims)
    # The settings that tell presets of one builder apart (attention, sema_per_stage, layout, residual) are
    # what a preset is: a network setting may not change them, or a plan shared by several models would
    # silently turn usema-nosema into usema. Other settings (widths) stay open.
    changed = sorted(
        k
        for k, v in settings.items()
        if k in kwargs and k in _distinguishing_keys(builder_name) and v != kwargs[k]
    )
    if changed:
        raise UsemaError(
            f"model {name!r} fixes {', '.join(f'{k}={kwargs[k]!r}' for k in changed)}; a network setting may "
            "not change it (choose the preset that has the setting you want, e.g. usema-window for "
            "attention='window')"
        )
    _ensure_builders()
    if builder_name not in _BUILDERS:
        raise UsemaError(f"model {name!r} needs builder {builder_name!r}, which is not available here")
    builder = _BUILDERS[builder_name]
    accepted = accepted_settings(builder)
    unknown = sorted(set(settings) - accepted) if accepted is not None else []
    if unknown:
        raise UsemaError(
            f"model {name!r} has no network setting {', '.join(map(repr, unknown))}; "
            f"the settings it takes: {', '.join(sorted(accepted))}"
        )
    return builder


def settings_it_takes(name: str, spatial_dims: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The part of `settings` that model `name` takes: settings its builder has and its preset does not fix
    otherwise (usema-nosema keeps its zero SEMA blocks, UNETR takes no widths)."""
    taken = {}
    for key, value in settings.items():
        try:
            check_settings(name, spatial_dims, {key: value})
        except UsemaError:
            continue
        taken[key] = value
    return taken


def builder_call(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
    **network_settings: Any,
) -> tuple[Builder, dict[str, Any]]:
    """The builder of preset `name` and every keyword argument it is called with: the preset's settings,
    `network_settings` over them (checked: `check_settings`), the dimensions, channels and classes."""
    builder = check_settings(name, spatial_dims, network_settings)
    kwargs = {**preset_kwargs(name, spatial_dims)[1], **network_settings}
    return builder, dict(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        deep_supervision=deep_supervision,
        **kwargs,
    )


def build_model(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
    **network_settings: Any,
) -> nn.Module:
    """Build the preset `name`; `network_settings` add to the preset's settings (e.g. a plan's strides). A
    network described as data (a plan's, a checkpoint's) is built by `usema.models.spec.NetworkSpec.build`."""
    builder, kwargs = builder_call(name, spatial_dims, in_channels, num_classes, deep_supervision,
                                   **network_settings)
    return builder(**kwargs)


def preset_with(builder_name: str, kwargs: dict[str, Any]) -> str:
    """The preset of builder `builder_name` whose own settings are `kwargs` (e.g. "usema-window" for the usema
    builder with attention "window"); UsemaError when there is none."""
    for name, preset in load_presets().items():
        if preset["builder"] == builder_name and preset.get("kwargs", {}) == kwargs:
            return name
    raise UsemaError(f"no {builder_name} preset has the settings {kwargs}; presets: {', '.join(list_models())}")


def check_it_builds(build: Callable[[], nn.Module]) -> None:
    """Call `build` on the meta device (no memory, no weights; under a second for nnU-Net's largest networks):
    the ValueError or TypeError of a network that would not build (a setting it refuses) as UsemaError, now
    rather than when it trains."""
    try:
        with torch.device("meta"):
            build()
    except (TypeError, ValueError) as err:
        raise UsemaError(str(err)) from err


def _ensure_builders() -> None:
    if "usema" not in _BUILDERS:
        from usema.models.usema import USEMA

        register_builder("usema", USEMA)
    if "nnunet" not in _BUILDERS:
        from usema.models.baselines import register_baselines

        register_baselines(register_builder)

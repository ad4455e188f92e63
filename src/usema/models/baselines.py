"""The baselines' builders, registered with the model registry (their presets are in presets.json).

Each baseline's optional dependency (dynamic-network-architectures, mambapy, einops for MONAI's
transformers) is imported only when that baseline is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from usema.models.registry import passes_settings_to


def _lazy(module: str, name: str) -> Callable[..., nn.Module]:
    """A builder that imports `module` only when a model is built (or its settings are asked for) and calls its
    `name` with the settings."""

    def load() -> Callable[..., nn.Module]:
        return getattr(importlib.import_module(module), name)

    @passes_settings_to(load)
    def build(**kwargs) -> nn.Module:
        return load()(**kwargs)

    return build


BASELINE_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "nnunet": _lazy("usema.models.nnunet", "NNUNet"),
    "unetr": _lazy("usema.models.monai_nets", "UNETRNet"),
    "swinunetr": _lazy("usema.models.monai_nets", "SwinUNETRNet"),
    "umamba": _lazy("usema.models.umamba", "build_umamba"),
}


def register_baselines(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    """Register every baseline builder through `register(name, builder)` (the registry's `register_builder`)."""
    for name, builder in BASELINE_BUILDERS.items():
        register(name, builder)

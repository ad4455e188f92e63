"""The baselines' builders, registered with the model registry (their presets are in presets.json).

Each baseline's optional dependency (dynamic-network-architectures, mambapy, einops for MONAI's
transformers) is imported only when that baseline is built.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _nnunet(**kwargs) -> nn.Module:
    from usema.models.nnunet import NNUNet

    return NNUNet(**kwargs)


def _unetr(**kwargs) -> nn.Module:
    from usema.models.monai_nets import UNETRNet

    return UNETRNet(**kwargs)


def _swinunetr(**kwargs) -> nn.Module:
    from usema.models.monai_nets import SwinUNETRNet

    return SwinUNETRNet(**kwargs)


def _umamba(**kwargs) -> nn.Module:
    from usema.models.umamba import build_umamba

    return build_umamba(**kwargs)


BASELINE_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "nnunet": _nnunet,
    "unetr": _unetr,
    "swinunetr": _swinunetr,
    "umamba": _umamba,
}


def register_baselines(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    """Register every baseline builder through `register(name, builder)` (the registry's `register_builder`)."""
    for name, builder in BASELINE_BUILDERS.items():
        register(name, builder)

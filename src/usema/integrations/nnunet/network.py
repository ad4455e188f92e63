"""USEMA as an nnU-Net v2 network, built by nnU-Net's `get_network_from_plans` from a plans configuration.

A converted plans file keeps nnU-Net's residual-encoder arguments (`arch_kwargs`: stages, widths, kernels, strides,
blocks, decoder convs, norm, dropout, nonlinearity) and adds SEMA's (`sema_per_stage`, `attention`, `window_size`,
`head_dim`, ...). `usema_arguments` maps the first onto USEMA and refuses what USEMA cannot honour; the second
pass through. `network_spec` describes the result as the USEMA preset of its attention mode with those network
settings, and USEMAnnUNet is built from that description, as usema's own runs build theirs. Nothing here imports
nnU-Net.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from usema.errors import UsemaError
from usema.models.registry import preset_with
from usema.models.spec import NetworkSpec
from usema.models.usema import USEMA

NETWORK_CLASS_NAME = "usema.integrations.nnunet.network.USEMAnnUNet"
CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
# What USEMA's convs, norms and activations are (MONAI's blocks with usema.models.usema.NORM and ACT).
USEMA_NORM_KWARGS = {"eps": 1e-5, "affine": True}
USEMA_LEAKY_SLOPE = 0.01
RESENC_REQUIRED = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
                   "n_conv_per_stage_decoder")
RESENC_OPTIONAL = ("conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin",
                   "nonlin_kwargs", "block", "bottleneck_channels", "stem_channels")


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", repr(obj))


def _refuse(setting: str, value: Any, because: str) -> UsemaError:
    return UsemaError(f"USEMA cannot honour {setting}={value}: {because}")


def usema_arguments(arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """USEMA's keyword arguments for a plans configuration's `arch_kwargs` (with its classes imported).

    nnU-Net's residual-encoder arguments become strides, features, kernel sizes, blocks per stage and decoder
    convs; everything else (SEMA's settings) passes through to USEMA. `conv_bias` is accepted either way: each
    USEMA conv feeds an instance norm, whose mean subtraction cancels a bias. Raises UsemaError for a norm other
    than affine instance norm (eps 1e-5), a nonlinearity other than LeakyReLU(0.01), dropout, bottleneck blocks
    or a stem of its own width.
    """
    missing = [key for key in RESENC_REQUIRED if key not in arch_kwargs]
    if missing:
        raise UsemaError(f"arch_kwargs lack {', '.join(missing)} (nnU-Net's residual-encoder arguments)")
    resenc = {key: arch_kwargs.get(key) for key in RESENC_REQUIRED + RESENC_OPTIONAL}
    sema = {key: value for key, value in arch_kwargs.items() if key not in resenc}

    conv_op = resenc["conv_op"]
    if conv_op not in CONV_DIMS:
        raise _refuse("conv_op", _name(conv_op), "it is a plain Conv1d, Conv2d or Conv3d network")
    spatial_dims = CONV_DIMS[conv_op]
    norm_op, norm_kwargs = resenc["norm_op"], {"eps": 1e-5, "affine": False, **(resenc["norm_op_kwargs"] or {})}
    if norm_op not in INSTANCE_NORMS or norm_kwargs != USEMA_NORM_KWARGS:
        raise _refuse("norm_op", f"{_name(norm_op)}({resenc['norm_op_kwargs']})",
                      f"it normalises with instance norm {USEMA_NORM_KWARGS}")
    nonlin, slope = resenc["nonlin"], {"negative_slope": 0.01, **(resenc["nonlin_kwargs"] or {})}["negative_slope"]
    if nonlin is not nn.LeakyReLU or slope != USEMA_LEAKY_SLOPE:
        raise _refuse("nonlin", f"{_name(nonlin)}({resenc['nonlin_kwargs']})", "it uses LeakyReLU(0.01)")
    if resenc["dropout_op"] is not None and (resenc["dropout_op_kwargs"] or {}).get("p", 0.5) != 0:
        raise _refuse("dropout_op", _name(resenc["dropout_op"]), "it has no dropout")
    block = resenc["block"]
    if block is not None and _name(block) != "BasicBlockD":
        raise _refuse("block", _name(block), "its encoder has basic residual blocks")
    if resenc["bottleneck_channels"] is not None:
        raise _refuse("bottleneck_channels", resenc["bottleneck_channels"], "its encoder has no bottleneck blocks")

    n_stages = resenc["n_stages"]
    strides = resenc["strides"]
    strides = [strides] * n_stages if isinstance(strides, int) else list(strides)
    if len(strides) != n_stages:
        raise UsemaError(f"n_stages is {n_stages} but strides has {len(strides)} entries")
    features = resenc["features_per_stage"]
    stem = resenc["stem_channels"]
    first_width = features if isinstance(features, int) else features[0]
    if stem is not None and stem != first_width:
        raise _refuse("stem_channels", stem, f"its first stage works at its own width ({first_width})")
    mapped = dict(spatial_dims=spatial_dims, strides=strides, features=features, kernel_size=resenc["kernel_sizes"],
                  blocks_per_stage=resenc["n_blocks_per_stage"], decoder_convs=resenc["n_conv_per_stage_decoder"])
    clashing = sorted(set(sema) & {*mapped, "in_channels"})
    if clashing:
        raise UsemaError(f"{', '.join(clashing)} would override what nnU-Net's own arguments set")
    return {**mapped, **sema}


def network_spec(input_channels: int, num_classes: int, arch_kwargs: Mapping[str, Any]) -> NetworkSpec:
    """The network a plans configuration's `arch_kwargs` (with its classes imported) describe, for
    `input_channels` and `num_classes`: the USEMA preset of their attention mode (usema for "sema",
    usema-window for "window", ...) with `usema_arguments` as its network settings."""
    settings = usema_arguments(arch_kwargs)
    spatial_dims = settings.pop("spatial_dims")
    preset = preset_with("usema", {"attention": settings.get("attention", "sema")})
    return NetworkSpec(preset, spatial_dims, input_channels, num_classes, settings)


class USEMAnnUNet(USEMA):
    """USEMA with the constructor of nnU-Net's ResidualEncoderUNet, plus SEMA's settings.

    nnU-Net builds it as `USEMAnnUNet(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`
    and switches deep supervision through `network.decoder.deep_supervision`; with it on, forward returns the
    logits of every decoder stage, highest resolution first, else the full-resolution logits.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, **arch_kwargs: Any):
        builder, arguments = network_spec(input_channels, num_classes, arch_kwargs).builder_call(deep_supervision)
        if builder is not USEMA:
            raise UsemaError(f"the {builder} builds the preset, not USEMA")  # the presets changed
        super().__init__(**arguments)

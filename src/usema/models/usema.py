"""USEMA: a residual-encoder UNet with SEMA blocks after the convolutions of each encoder stage.

One network for 1D, 2D and 3D (docs/sema.md, section 4). The conv parts are MONAI's nnU-Net-style blocks
(residual encoder blocks, transposed-conv decoder blocks with two convs, 1x1 heads); only the SEMA stage
layout is ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.blocks.dynunet_block import UnetOutBlock, UnetResBlock, UnetUpBlock
from torch import nn

from usema.nn.attention import as_tuple
from usema.nn.cpu_guards import guard_strided_pointwise_convs
from usema.nn.mamba import MambaLayer
from usema.nn.padding import ceil_div, crop_outputs, pad_to_multiple, spatial_sizes, total_stride
from usema.nn.sema_block import SEMABlock

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})
MAX_FEATURES = {1: 512, 2: 512, 3: 320}
DEFAULT_STAGES = {1: 5, 2: 6, 3: 5}
MIXERS = ("sema", "mamba")


def _per_stage(value, n_stages: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n_stages
    if len(values) != n_stages:
        raise ValueError(f"{name} has {len(values)} entries, expected one per stage ({n_stages})")
    return values


PLACEMENTS = ("all", "bottleneck", "deepest-K", "from-S")
# Where the SEMA blocks go unless told otherwise, for the class, its presets and plans alike: the two deepest
# stages won the placement study (docs/results/placement.md): within the seeds' spread of the
# best accuracy at equal CPU time on both datasets, and the only placement of those that keeps the training
# step within 1.15x of the network without SEMA. Plans made before it was the default name the placement they
# were trained with (usema.planning.schema writes it into older plans).
DEFAULT_PLACEMENT = "deepest-2"


def blocks_per_placement(placement: int | str | Sequence[int], n_stages: int) -> list[int]:
    """Token-mixer blocks per encoder stage for a placement: a count for every stage, a list (one count per
    stage), or a name that does not depend on the stage count: "all", "bottleneck" (the deepest stage),
    "deepest-K" (the K deepest stages), "from-S" (stage S and every deeper one)."""
    if not isinstance(placement, str):
        return [int(v) for v in _per_stage(placement, n_stages, "sema_per_stage")]
    name, _, number = placement.partition("-")
    if placement == "all":
        return [1] * n_stages
    if placement == "bottleneck":
        return [0] * (n_stages - 1) + [1]
    if name in ("deepest", "from") and number.isdigit():
        first = n_stages - int(number) if name == "deepest" else int(number)
        if 0 <= first < n_stages:
            return [0] * first + [1] * (n_stages - first)
    raise ValueError(f"placement {placement!r} does not fit {n_stages} stages; use a list, a count, or one of "
                     f"{', '.join(PLACEMENTS)} with 1 <= K <= {n_stages} and 0 <= S < {n_stages}")


class USEMA(nn.Module):
    """Hybrid conv + SEMA UNet for inputs of any size (padded to the total stride, cropped back).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels / num_classes: input channels and output classes (logits, no softmax).
        strides: one per stage (int or per-axis tuple); stage 0 is usually 1. Default: 1 then 2s, with
            `n_stages` stages (5 in 3D, 6 in 2D).
        features: widths per stage; default `base_features` doubling per stage, capped at `max_features`
            (320 in 3D, 512 in 2D).
        blocks_per_stage: residual conv blocks per encoder stage (int or list).
        kernel_size: conv kernel, int or one per stage (int or per-axis tuple; nnU-Net plans 1 along the coarse
            axes of anisotropic data); each decoder stage uses the kernel of the stage it returns to.
        decoder_convs: convs after each upsampling, deepest decoder stage first (int or list): 2 is MONAI's up
            block, nnU-Net's residual-encoder UNets have 1.
        sema_per_stage: token-mixer blocks after the conv blocks of each encoder stage: a count for every
            stage, a list, or a placement by name ("all", "bottleneck", "deepest-K", "from-S";
            `blocks_per_placement`). Default: DEFAULT_PLACEMENT, the two deepest stages.
        mixer: the token mixer in those slots: "sema" (SEMA blocks) or "mamba" (U-Mamba's Mamba layer).
        attention: the SEMA block's attention mode ("sema", "window", "mean", "full", "linear").
        window_size, head_dim, mlp_ratio, use_rope, use_lepe, drop_path: passed to every SEMA block
            (drop_path grows linearly from 0 to this value over the blocks).
        stage_windows: a window per stage (int, per-axis list, or None for `window_size`), as the planner
            chooses them so that each stage's map in training is a whole number of windows.
        deep_supervision: return a list of logits at every decoder resolution, highest first (switchable later:
            nnU-Net sets `network.decoder.deep_supervision`, which is where the flag lives).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int | Sequence[int]] | None = None,
        n_stages: int | None = None,
        features: Sequence[int] | None = None,
        base_features: int = 32,
        max_features: int | None = None,
        blocks_per_stage: int | Sequence[int] = 2,
        kernel_size: int | Sequence[int | Sequence[int]] = 3,
        decoder_convs: int | Sequence[int] = 2,
        sema_per_stage: int | str | Sequence[int] = DEFAULT_PLACEMENT,
        mixer: str = "sema",
        attention: str = "sema",
        window_size: int | Sequence[int] | None = None,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        use_rope: bool = True,
        use_lepe: bool = True,
        drop_path: float = 0.0,
        deep_supervision: bool = False,
        stage_windows: Sequence[int | Sequence[int] | None] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if mixer not in MIXERS:
            raise ValueError(f"unknown mixer {mixer!r}; choose one of {MIXERS}")
        if strides is None:
            n_stages = n_stages or DEFAULT_STAGES[spatial_dims]
            strides = [1] + [2] * (n_stages - 1)
        self.strides = [as_tuple(s, spatial_dims, "stride") for s in strides]
        n_stages = len(self.strides)
        if any(s != 1 for s in self.strides[0]):
            raise ValueError(f"stage 0 keeps full resolution: its stride must be 1, got {self.strides[0]}")
        if features is None:
            cap = max_features or MAX_FEATURES[spatial_dims]
            features = [min(base_features * 2**i, cap) for i in range(n_stages)]
        features = _per_stage(features, n_stages, "features")
        blocks = _per_stage(blocks_per_stage, n_stages, "blocks_per_stage")
        semas = blocks_per_placement(sema_per_stage, n_stages)
        windows = _per_stage(stage_windows, n_stages, "stage_windows") if stage_windows is not None else [None] * n_stages
        kernels = [as_tuple(k, spatial_dims, "kernel_size") for k in _per_stage(kernel_size, n_stages, "kernel_size")]
        if any(k % 2 == 0 for kernel in kernels for k in kernel):
            raise ValueError(f"kernel sizes must be odd (the convs keep the size), got {kernels}")
        up_convs = _per_stage(decoder_convs, n_stages - 1, "decoder_convs")
        self.spatial_dims = spatial_dims
        self.features = features

        total_sema = sum(semas)
        # on the CPU whatever the default device: a network built on the meta device (to check it) needs values
        rates = torch.linspace(0, drop_path, max(total_sema, 1), device="cpu").tolist()
        self.encoder = nn.ModuleList()
        channels = in_channels
        for stage in range(n_stages):
            layers: list[nn.Module] = []
            for b in range(max(1, blocks[stage])):
                stride = self.strides[stage] if b == 0 else 1
                layers.append(UnetResBlock(spatial_dims, channels, features[stage], kernels[stage], stride, NORM, ACT))
                channels = features[stage]
            for _ in range(semas[stage]):
                if mixer == "mamba":
                    layers.append(MambaLayer(channels))
                else:
                    layers.append(SEMABlock(
                        channels, spatial_dims, mode=attention, head_dim=head_dim,
                        window_size=windows[stage] if windows[stage] is not None else window_size,
                        use_rope=use_rope, use_lepe=use_lepe, mlp_ratio=mlp_ratio, drop_path=rates.pop(0),
                    ))
            self.encoder.append(nn.Sequential(*layers))

        self.decoder = nn.ModuleList()
        self.decoder.deep_supervision = deep_supervision
        self.heads = nn.ModuleList()
        for stage, convs in zip(range(n_stages - 1, 0, -1), up_convs, strict=True):
            self.decoder.append(_up_block(
                spatial_dims, features[stage], features[stage - 1], kernels[stage - 1], self.strides[stage], convs
            ))
            self.heads.append(UnetOutBlock(spatial_dims, features[stage - 1], num_classes))
        # The SEMA blocks hand on channels-last maps, which the next stage's strided 1x1 shortcut conv must not
        # see on AVX512 CPUs (a heap-corrupting PyTorch bug; usema/nn/cpu_guards.py).
        guard_strided_pointwise_convs(self)

    @property
    def deep_supervision(self) -> bool:
        """Whether forward returns the logits of every decoder resolution (a list) or the full-resolution ones."""
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    @property
    def total_stride(self) -> tuple[int, ...]:
        """Per-axis product of the stage strides: inputs are padded to a multiple of this."""
        return total_stride(self.strides)

    @property
    def exports_any_size(self) -> bool:
        """Whether the network's traced graph (TorchScript, ONNX: usema.inference.export) takes any batch and
        spatial size, its padding and SEMA windows following the input: true unless it has Mamba layers, whose
        scan (mambapy) sizes its steps in Python, which tracing fixes to the example."""
        return not any(isinstance(module, MambaLayer) for module in self.modules())

    def stage_sizes(self, size: Sequence[int]) -> list[tuple[int, ...]]:
        """The part of each stage's map that holds data, for an input of `size` (ceil division by the strides)."""
        sizes, current = [], spatial_sizes(size)
        for stride in self.strides:
            current = tuple(ceil_div(c, s) for c, s in zip(current, stride, strict=True))
            sizes.append(current)
        return sizes

    def attention_plan(self, patch_size: Sequence[int]) -> list[str]:
        """One line per SEMA stage: what its attention computes on a `patch_size` input."""
        lines = []
        for stage, (layers, size) in enumerate(zip(self.encoder, self.stage_sizes(patch_size), strict=True)):
            for layer in layers:
                if isinstance(layer, SEMABlock):
                    lines.append(f"stage {stage}: {layer.attention_scope(size)}")
        return lines

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, num_classes, *S) of an input (B, in_channels, *S) of any spatial size S from which the
        deepest stage keeps more than one voxel: S is padded to a multiple of the total stride and the outputs
        cropped back (with deep supervision, one output per decoder stage, highest resolution first)."""
        tracing = torch.jit.is_tracing()  # a trace follows the example's shape, checked when it ran eagerly
        if not tracing and x.dim() != self.spatial_dims + 2:
            raise ValueError(f"input of shape {tuple(x.shape)}: a {self.spatial_dims}D network takes (batch, "
                             f"channels, {self.spatial_dims} spatial axes); add the batch axis with x[None]")
        size = tuple(x.shape[2:])
        if not tracing and all(ceil_div(s, t) == 1 for s, t in zip(size, self.total_stride, strict=True)):
            # instance normalisation of a single voxel is undefined (torch refuses it)
            raise ValueError(
                f"input of spatial size {size}: padded to the total stride {self.total_stride} it leaves the "
                "deepest stage a single voxel, which instance normalisation cannot normalise: give at least one "
                "axis more voxels than its total stride (pad the input)")
        x = pad_to_multiple(x, self.total_stride)

        skips = []
        for stage, valid in zip(self.encoder, self.stage_sizes(size), strict=True):
            for layer in stage:
                # the padding to the total stride is not data: SEMA keeps it out of its keys and its mean
                x = layer(x, valid) if isinstance(layer, SEMABlock) else layer(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, head in zip(self.decoder, self.heads, strict=True):
            x = up(x, skips.pop())
            if self.deep_supervision or len(skips) == 0:
                outputs.append(head(x))
        outputs.reverse()  # highest resolution first

        cropped = crop_outputs(outputs, size, self.strides)
        return cropped if self.deep_supervision else cropped[0]


def _up_block(spatial_dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int],
              convs: int) -> UnetUpBlock:
    """Transposed conv by `stride`, concatenation with the skip, then `convs` conv-norm-activation layers."""
    if convs < 1:
        raise ValueError(f"decoder_convs must be at least 1, got {convs}")
    up = UnetUpBlock(spatial_dims, in_channels, out_channels, kernel, 1, stride, NORM, ACT, trans_bias=True)
    if convs != 2:  # MONAI's block has two; another count (nnU-Net's ResEnc decoders have one) replaces them
        up.conv_block = nn.Sequential(*(
            Convolution(spatial_dims, out_channels * 2 if i == 0 else out_channels, out_channels,
                        kernel_size=kernel, norm=NORM, act=ACT, bias=False)
            for i in range(convs)
        ))
    return up

"""nnU-Net's own UNets (dynamic_network_architectures), configured from our plans the way nnU-Net does.

`PlainConvUNet` (the original nnU-Net: 2 convs per encoder and decoder stage) and `ResidualEncoderUNet` with
the ResEnc M layout (residual blocks per stage 1, 3, 4, 6, 6, ...; 1 conv per decoder stage, as nnU-Net's
ResEnc planners set it). Both: 3^d kernels, conv bias, InstanceNorm(affine, eps 1e-5), LeakyReLU(0.01),
features 32 doubling up to 320 (3D) or 512 (2D), He initialisation as nnU-Net applies it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from usema.models.usema import DEFAULT_STAGES, MAX_FEATURES
from usema.nn.padding import crop_outputs, pad_to_multiple, total_stride

RESENC_M_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)


class NNUNet(nn.Module):
    """nnU-Net's PlainConvUNet or ResidualEncoderUNet for inputs of any size (padded, then cropped back).

    Args:
        spatial_dims: 2 or 3 (nnU-Net has no 1D network).
        in_channels / num_classes: input channels and output classes (logits).
        strides: one per stage (int or per-axis tuple), stage 0 = 1; default 1 then 2s over `n_stages` stages.
        features: widths per stage; default `base_features` doubling, capped at 320 (3D) / 512 (2D).
        residual: ResidualEncoderUNet (ResEnc) instead of PlainConvUNet.
        blocks_per_stage: convs (plain) or residual blocks (ResEnc) per encoder stage; default 2 (plain) or
            the ResEnc M layout.
        decoder_convs: convs per decoder stage; default 2 (plain) or 1 (ResEnc).
        kernel_size: conv kernel, int or one per stage (nnU-Net: 3, and 1 along coarse axes of anisotropic data).
        deep_supervision: return logits at every decoder resolution, highest first.
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
        residual: bool = False,
        blocks_per_stage: int | Sequence[int] | None = None,
        decoder_convs: int | Sequence[int] | None = None,
        kernel_size: int | Sequence[int] = 3,
        deep_supervision: bool = False,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise NotImplementedError(f"nnU-Net's UNets are 2D or 3D, not {spatial_dims}D")
        try:
            from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
            from dynamic_network_architectures.building_blocks.helper import (
                convert_dim_to_conv_op,
                get_matching_instancenorm,
            )
        except ImportError as err:  # optional dependency
            raise ImportError("the nnU-Net baselines need dynamic-network-architectures: "
                              "pip install --no-deps dynamic-network-architectures") from err
        if strides is None:
            n_stages = n_stages or DEFAULT_STAGES[spatial_dims]
            strides = [1] + [2] * (n_stages - 1)
        self.strides = [tuple(int(v) for v in ensure_tuple_rep(s, spatial_dims)) for s in strides]
        n_stages = len(self.strides)
        if features is None:
            cap = max_features or MAX_FEATURES[spatial_dims]
            features = [min(base_features * 2**i, cap) for i in range(n_stages)]
        self.features = list(ensure_tuple_rep(features, n_stages))
        if blocks_per_stage is None:
            blocks_per_stage = list(RESENC_M_BLOCKS[:n_stages]) if residual else 2
        if decoder_convs is None:
            decoder_convs = 1 if residual else 2
        self.spatial_dims, self.deep_supervision = spatial_dims, deep_supervision
        conv = convert_dim_to_conv_op(spatial_dims)
        norm = get_matching_instancenorm(conv)
        common = dict(
            input_channels=in_channels, n_stages=n_stages, features_per_stage=self.features, conv_op=conv,
            kernel_sizes=list(ensure_tuple_rep(kernel_size, n_stages)),
            strides=[list(s) for s in self.strides], num_classes=num_classes,
            n_conv_per_stage_decoder=list(ensure_tuple_rep(decoder_convs, n_stages - 1)), conv_bias=True,
            norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True, "negative_slope": 0.01},
            deep_supervision=deep_supervision,
        )
        blocks = list(ensure_tuple_rep(blocks_per_stage, n_stages))
        if residual:
            self.net = ResidualEncoderUNet(n_blocks_per_stage=blocks, **common)
        else:
            self.net = PlainConvUNet(n_conv_per_stage=blocks, **common)
        self.net.apply(self.net.initialize)

    # Convolutions only, and the padding to the total stride is traced: an exported graph takes any batch and
    # spatial size (usema.inference.export).
    exports_any_size = True

    @property
    def total_stride(self) -> tuple[int, ...]:
        """Per-axis product of the stage strides: inputs are padded to a multiple of this."""
        return total_stride(self.strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = tuple(x.shape[2:])
        out = self.net(pad_to_multiple(x, self.total_stride))
        # dynamic_network_architectures already returns deep supervision highest resolution first, like ours
        outputs = crop_outputs(out if self.deep_supervision else [out], size, self.strides)
        return outputs if self.deep_supervision else outputs[0]


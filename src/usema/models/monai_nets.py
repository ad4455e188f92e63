"""MONAI's transformer UNets as baselines, with the settings U-Mamba compared against.

UNETR: ViT-B encoder (hidden 768, MLP 3072, 12 heads, 16^d patches), feature size 16. Its position embedding
fixes the input size at construction (`patch_size`, rounded up to multiples of 16); larger inputs are padded
to a multiple of it and run as non-overlapping tiles. Swin-UNETR: feature size 48 (v1), inputs padded to
multiples of 32. Neither has deep supervision: with `deep_supervision=True` they return a one-element list.
Both ignore the plan's `strides` and `features`, which their fixed topologies cannot use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from usema.nn.padding import crop_outputs, pad_to_multiple, pad_to_size, padded_size

DEFAULT_PATCH = {2: (256, 256), 3: (96, 96, 96)}
UNETR_MULTIPLE = 16  # the ViT patch size
SWIN_MULTIPLE = 32  # patch embedding 2 x four patch mergings


def _require_einops(network: str) -> None:
    from monai.utils import optional_import

    if not optional_import("einops")[1]:
        raise ImportError(f"MONAI's {network} needs einops: pip install einops")


def _check_dims(spatial_dims: int, network: str) -> None:
    if spatial_dims not in (2, 3):
        raise NotImplementedError(f"MONAI's {network} is 2D or 3D, not {spatial_dims}D")


def split_tiles(x: torch.Tensor, tile: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """(B, C, n1*t1, ..., nd*td) -> (B*n1*...*nd, C, t1, ..., td) and the tile counts (n1, ..., nd)."""
    b, c, d = x.shape[0], x.shape[1], len(tile)
    counts = [s // t for s, t in zip(x.shape[2:], tile, strict=True)]
    x = x.reshape(b, c, *[v for n, t in zip(counts, tile, strict=True) for v in (n, t)])
    order = [0, *(2 + 2 * i for i in range(d)), 1, *(3 + 2 * i for i in range(d))]
    return x.permute(order).reshape(b * math.prod(counts), c, *tile), counts


def merge_tiles(y: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Inverse of `split_tiles`: (B*n1*...*nd, K, t1, ..., td) -> (B, K, n1*t1, ..., nd*td)."""
    d, k, tile = len(counts), y.shape[1], y.shape[2:]
    batch = y.shape[0] // math.prod(counts)
    y = y.reshape(batch, *counts, k, *tile)
    order = [0, d + 1, *(v for i in range(d) for v in (1 + i, d + 2 + i))]
    return y.permute(order).reshape(batch, k, *(n * t for n, t in zip(counts, tile, strict=True)))


class UNETRNet(nn.Module):
    """MONAI's UNETR for any input size (padded to its fixed `img_size`, tiled beyond it, cropped back).

    Args:
        spatial_dims: 2 or 3.
        in_channels / num_classes: input channels and output classes.
        patch_size: the training patch (the plan's); rounded up to multiples of 16, it is UNETR's img_size.
        feature_size, hidden_size, mlp_dim, num_heads: UNETR's widths (U-Mamba's: 16, 768, 3072, 12).
        strides, features: accepted from the plan and ignored (the ViT has one fixed resolution).
        deep_supervision: return a one-element list.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        patch_size: int | Sequence[int] | None = None,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        strides=None,
        features=None,
        deep_supervision: bool = False,
    ):
        super().__init__()
        _check_dims(spatial_dims, "UNETR")
        _require_einops("UNETR")
        from monai.networks.nets import UNETR

        patch = ensure_tuple_rep(patch_size or DEFAULT_PATCH[spatial_dims], spatial_dims)
        patch = tuple(int(p) for p in patch)
        self.img_size = padded_size(patch, (UNETR_MULTIPLE,) * spatial_dims)
        self.deep_supervision = deep_supervision
        self.net = UNETR(
            in_channels, num_classes, self.img_size, feature_size=feature_size, hidden_size=hidden_size,
            mlp_dim=mlp_dim, num_heads=num_heads, proj_type="conv", norm_name="instance", res_block=True,
            spatial_dims=spatial_dims,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = tuple(x.shape[2:])
        x = pad_to_size(x, padded_size(size, self.img_size))
        if tuple(x.shape[2:]) == self.img_size:
            out = self.net(x)
        else:
            tiles, counts = split_tiles(x, self.img_size)
            out = merge_tiles(self.net(tiles), counts)
        out = crop_outputs([out], size)[0]
        return [out] if self.deep_supervision else out


class SwinUNETRNet(nn.Module):
    """MONAI's Swin-UNETR for any input size (padded to multiples of 32, cropped back).

    Args:
        spatial_dims: 2 or 3.
        in_channels / num_classes: input channels and output classes.
        feature_size: embedding width, a multiple of 12 (U-Mamba's: 48).
        depths, num_heads, window_size, use_v2: MONAI's Swin-UNETR settings (defaults: v1, (2, 2, 2, 2),
            (3, 6, 12, 24), 7).
        patch_size, strides, features: accepted from the plan and ignored (any multiple of 32 works).
        deep_supervision: return a one-element list.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        use_v2: bool = False,
        patch_size=None,
        strides=None,
        features=None,
        deep_supervision: bool = False,
    ):
        super().__init__()
        _check_dims(spatial_dims, "Swin-UNETR")
        _require_einops("Swin-UNETR")
        from monai.networks.nets import SwinUNETR

        self.spatial_dims, self.deep_supervision = spatial_dims, deep_supervision
        self.net = SwinUNETR(
            in_channels, num_classes, feature_size=feature_size, depths=tuple(depths),
            num_heads=tuple(num_heads), window_size=window_size, norm_name="instance", use_v2=use_v2,
            spatial_dims=spatial_dims,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = tuple(x.shape[2:])
        x = pad_to_multiple(x, (SWIN_MULTIPLE,) * self.spatial_dims)
        if math.prod(x.shape[2:]) == SWIN_MULTIPLE**self.spatial_dims:
            # a 1-voxel bottleneck cannot be instance-normalised: give the last axis a second one
            x = pad_to_size(x, (*x.shape[2:-1], 2 * SWIN_MULTIPLE))
        out = crop_outputs([self.net(x)], size)[0]
        return [out] if self.deep_supervision else out

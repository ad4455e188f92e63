"""Rotary position embedding over N spatial axes (RoPE with the frequencies shared out over the axes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rope_angles(spatial_shape: Sequence[int], head_dim: int, base: float = 10000.0,
                device: torch.device | None = None) -> torch.Tensor:
    """Rotation angles (N, head_dim // 2) for a row-major token grid.

    The head_dim // 2 rotation pairs are shared out evenly over the spatial axes; axis a rotates its pairs by
    position_a * base^(-j / pairs_per_axis). Pairs left over when they do not divide evenly stay unrotated.
    """
    ndim = len(spatial_shape)
    pairs = head_dim // 2
    per_axis = pairs // ndim
    if per_axis == 0:
        raise ValueError(f"head_dim {head_dim} is too small for RoPE over {ndim} axes (needs >= {2 * ndim})")
    freqs = base ** (-torch.arange(per_axis, device=device, dtype=torch.float32) / per_axis)
    axes = [torch.arange(s, device=device, dtype=torch.float32) for s in spatial_shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    angles = [g.reshape(-1, 1) * freqs for g in grid]
    leftover = pairs - per_axis * ndim
    if leftover:
        angles.append(torch.zeros(angles[0].shape[0], leftover, device=device))
    return torch.cat(angles, dim=1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (..., N, head_dim) features by `angles` (N, head_dim // 2); pairs are (i, i + head_dim // 2)."""
    half = angles.shape[-1]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    if x.shape[-1] > 2 * half:  # odd head_dim: the last feature is left as it is
        rotated = torch.cat([rotated, x[..., 2 * half :]], dim=-1)
    return rotated

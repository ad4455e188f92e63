"""Rotary position embedding over N spatial axes (RoPE with the frequencies shared out over the axes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from usema.nn.padding import exporting


def rope_angles(spatial_shape: Sequence[int], head_dim: int, base: float = 10000.0,
                device: torch.device | None = None) -> torch.Tensor:
    """Rotation angles (N, head_dim // 2) for a row-major token grid.

    The head_dim // 2 rotation pairs (features 2j, 2j + 1) are shared out evenly over the spatial axes; axis a
    rotates its pairs by position_a * base^(-j / pairs_per_axis). Pairs left over when they do not divide evenly stay unrotated.
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


def window_rope_table(window: Sequence[int], head_dim: int, scale: float = 1.0,
                      device: torch.device | None = None) -> torch.Tensor:
    """(2, T, 1, head_dim // 2, 2) rotations (cos, sin) for the T tokens of one window, row-major, to
    broadcast over heads: [0] for queries, multiplied by the logit `scale`, [1] for keys.

    Inside a window, RoPE scores depend only on the offset between query and key, so positions counted from
    the window's corner give the same scores as positions on the whole map: one small table serves every
    window, and folding the scale into the queries' rotation saves a pass over the logits.
    """
    unit = rotation_pairs(rope_angles(window, head_dim, device=device))[:, None]
    return torch.stack([unit * scale, unit])


def rotation_pairs(angles: torch.Tensor) -> torch.Tensor:
    """(..., pairs) angles -> (..., pairs, 2) (cos, sin): a complex rotation stored as real numbers, which
    export can trace (ONNX has no complex tensors)."""
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_pair_rotation(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate the adjacent feature pairs (2j, 2j + 1) of x (..., d) by `rotation` (..., d // 2, 2) (cos, sin),
    which broadcasts against x's pairs.

    One complex multiplication where it can run; the same product written with real tensors while tracing
    for export.
    """
    if exporting():
        even, odd = x[..., 0::2], x[..., 1::2]
        cos, sin = rotation[..., 0].to(x.dtype), rotation[..., 1].to(x.dtype)
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    real = x if x.dtype in (torch.float32, torch.float64) else x.float()  # no complex bf16 or fp16 here
    pairs = torch.view_as_complex(real.unflatten(-1, (-1, 2)).contiguous())
    product = pairs * torch.view_as_complex(rotation.to(real.dtype).contiguous())
    return torch.view_as_real(product).flatten(-2).to(x.dtype)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (..., N, head_dim) features by `angles` (N, head_dim // 2); pair j is features (2j, 2j + 1)."""
    pairs = 2 * angles.shape[-1]
    rotated = apply_pair_rotation(x[..., :pairs], rotation_pairs(angles))
    if x.shape[-1] > pairs:  # odd head_dim: the last feature is left as it is
        rotated = torch.cat([rotated, x[..., pairs:]], dim=-1)
    return rotated


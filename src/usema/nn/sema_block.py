"""The SEMA block: MLLA's Mamba-like macro-architecture with SEMA as its attention (docs/sema.md, section 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.layers import Conv, DropPath
from torch import nn

from usema.nn.attention import ATTENTION_MODES, DEFAULT_WINDOW, sema_attention
from usema.nn.rope import apply_rope, rope_angles


def depthwise_conv(spatial_dims: int, channels: int) -> nn.Module:
    """A 3^d depthwise convolution that keeps the spatial size."""
    return Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size=3, padding=1, groups=channels)


# The block keeps its feature maps channels-last: tokens (B, N, C) and grids (B, C, *S) are then views of one
# another, and PyTorch's CPU depthwise 3D convolution is >10x faster on channels-last input (its backward on
# channels-first input took 8 s where channels-last took 0.6 s for a 8x16x40x56x40 map).
def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1).reshape(x.shape[0], -1, x.shape[1])  # (B, C, *S) -> (B, N, C)


def _to_grid(t: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    return t.reshape(t.shape[0], *spatial_shape, t.shape[2]).movedim(-1, 1)  # (B, N, C) -> (B, C, *S)


class SEMABlock(nn.Module):
    """Mamba-like block with SEMA attention, on (batch, channels, *spatial) feature maps of any size.

    Args:
        channels: feature channels C.
        spatial_dims: 1, 2 or 3.
        mode: attention variant, one of `ATTENTION_MODES` ("sema" is the method).
        window_size: window per axis (int or tuple); default 7 in 1D/2D, 5 in 3D.
        num_heads: number of heads; default channels // head_dim.
        head_dim: channels per head when num_heads is not given.
        use_rope / use_lepe: rotary position embedding on q, k / locally enhanced positional encoding.
        mlp_ratio: hidden width of the MLP relative to C.
        drop_path: stochastic depth rate of both residual branches.
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int,
        mode: str = "sema",
        window_size: int | Sequence[int] | None = None,
        num_heads: int | None = None,
        head_dim: int = 32,
        use_rope: bool = True,
        use_lepe: bool = True,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; choose one of {ATTENTION_MODES}")
        num_heads = num_heads or max(1, channels // head_dim)
        if channels % num_heads:
            raise ValueError(f"channels {channels} are not divisible by num_heads {num_heads}")
        self.spatial_dims, self.mode, self.num_heads = spatial_dims, mode, num_heads
        self.window_size = window_size if window_size is not None else DEFAULT_WINDOW[spatial_dims]
        self.use_rope = use_rope

        self.cpe1 = depthwise_conv(spatial_dims, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.gate_proj = nn.Linear(channels, channels)
        self.in_proj = nn.Linear(channels, channels)
        self.in_dwconv = depthwise_conv(spatial_dims, channels)
        # The "mean" ablation reads only the values: no q/k projection that would sit unused (and break DDP).
        self.qk_proj = nn.Linear(channels, 2 * channels) if mode != "mean" else None
        self.lepe = depthwise_conv(spatial_dims, channels) if use_lepe else None
        self.out_proj = nn.Linear(channels, channels)
        self.cpe2 = depthwise_conv(spatial_dims, channels)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # Called as probe(block, q, k, spatial_shape) with the queries and keys that enter the attention
        # (after RoPE) when set; `usema analyze dispersion` reads the attention weights through it.
        self.attention_probe: Callable[..., None] | None = None
        self.apply(_init_weights)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_shape = tuple(x.shape[2:])
        x = _to_grid(_to_tokens(x).contiguous(), spatial_shape)  # channels-last (see _to_tokens)
        x = x + self.cpe1(x)
        shortcut = _to_tokens(x)
        h = self.norm1(shortcut)
        gate = nn.functional.silu(self.gate_proj(h))
        u = nn.functional.silu(self.in_dwconv(_to_grid(self.in_proj(h), spatial_shape)))
        u_tokens = _to_tokens(u)
        v = self._heads(u_tokens)
        if self.qk_proj is None:
            q = k = v
        else:
            q, k = (self._heads(t) for t in self.qk_proj(u_tokens).chunk(2, dim=-1))
            if self.use_rope:
                angles = rope_angles(spatial_shape, q.shape[-1], device=x.device)
                q, k = apply_rope(q, angles), apply_rope(k, angles)
        if self.attention_probe is not None:
            self.attention_probe(self, q, k, spatial_shape)
        a = sema_attention(q, k, v, spatial_shape, self.window_size, self.mode)
        a = a.transpose(1, 2).reshape(shortcut.shape)
        if self.lepe is not None:
            a = a + _to_tokens(self.lepe(u))
        t = shortcut + self.drop_path(self.out_proj(a * gate))
        x = _to_grid(t, spatial_shape)
        x = x + self.cpe2(x)
        t = _to_tokens(x)
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return _to_grid(t, spatial_shape)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)  # truncated at 2 std
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

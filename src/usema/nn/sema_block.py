"""The SEMA block: MLLA's Mamba-like macro-architecture with SEMA as its attention (docs/sema.md, section 3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

from usema.nn.attention import (
    ATTENTION_MODES,
    DEFAULT_WINDOW,
    attention_window,
    crop_to,
    grid_attention,
    pad_to_grid,
)
from usema.nn.depthwise import depthwise_conv
from usema.nn.padding import exporting, spatial_sizes
from usema.nn.rope import apply_rope, rope_angles, window_rope_table


# The block keeps its feature maps channels-last: tokens (B, N, C) and grids (B, C, *S) are then views of one
# another, and PyTorch's CPU depthwise convolutions are several times faster on channels-last input.
# The axes are counted from the front: the TorchScript-based ONNX exporter writes movedim's negative axes into
# the Transpose as they are, which onnxruntime refuses.
def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, x.dim() - 1).reshape(x.shape[0], -1, x.shape[1])  # (B, C, *S) -> (B, N, C)


def _to_grid(t: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    return t.reshape(t.shape[0], *spatial_shape, t.shape[2]).movedim(len(spatial_shape) + 1, 1)  # (B, N, C) -> (B, C, *S)


class SEMABlock(nn.Module):
    """Mamba-like block with SEMA attention, on (batch, channels, *spatial) feature maps of any size.

    Args:
        channels: feature channels C.
        spatial_dims: 1, 2 or 3.
        mode: attention variant, one of `ATTENTION_MODES` ("sema" is the method).
        window_size: window per axis (int or tuple); default 7 in 1D/2D, 5 in 3D. A map no larger than the
            window along an axis is one window along it; where that holds for every axis, the window term is
            exact softmax attention over the whole map (`attention_scope` says which applies).
        num_heads: number of heads; default channels // head_dim.
        head_dim: channels per head when num_heads is not given (even, for RoPE).
        use_rope / use_lepe: rotary position embedding on q, k / locally enhanced positional encoding.
        mlp_ratio: hidden width of the MLP relative to C.
        drop_path: stochastic depth rate of both residual branches.

    `forward(x, valid_shape)`: `valid_shape` is the leading part of the map that is data (the rest is the
    padding a network adds to reach its total stride): it stays out of the attention's keys and its mean.
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
        if use_rope and mode != "mean" and (channels // num_heads) % 2:
            raise ValueError(f"RoPE rotates feature pairs: channels per head must be even, got {channels // num_heads}")
        if use_rope and mode != "mean" and channels // num_heads < 2 * spatial_dims:
            # refused here, when the network is built, rather than at its first forward pass
            raise ValueError(f"RoPE over {spatial_dims} axes needs at least {2 * spatial_dims} channels per head "
                             f"(head_dim), got {channels // num_heads}")
        self.channels, self.spatial_dims, self.mode, self.num_heads = channels, spatial_dims, mode, num_heads
        self.window_size = window_size if window_size is not None else DEFAULT_WINDOW[spatial_dims]
        self.use_rope = use_rope

        self.cpe1 = depthwise_conv(spatial_dims, channels)
        self.norm1 = nn.LayerNorm(channels)
        # The gate and the main branch's input projection as one matrix product: [gate | main].
        self.gate_in_proj = nn.Linear(channels, 2 * channels)
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
        # (after RoPE, (batch, heads, N, head_dim)) when set; `usema analyze dispersion` reads the attention
        # weights through it.
        self.attention_probe: Callable[..., None] | None = None
        self.apply(_init_weights)

    def attention_scope(self, spatial_shape: Sequence[int]) -> str:
        """What the attention computes on a map of this size, in words (for plans and logs)."""
        shape = tuple(int(s) for s in spatial_shape)
        window = attention_window(self.mode, shape, self.window_size)
        size = "x".join(map(str, shape))
        if self.mode not in ("sema", "window"):
            return f"{self.mode} attention over the whole {size} map"
        mean = " + mean" if self.mode == "sema" else ""
        if window == shape:
            return f"one window covers the {size} map: exact softmax over all {math.prod(shape)} tokens{mean}"
        counts = [math.ceil(s / w) for s, w in zip(shape, window, strict=True)]
        tiles = all(s % w == 0 for s, w in zip(shape, window, strict=True))
        windows = "x".join(map(str, counts)) + " windows of " + "x".join(map(str, window))
        return f"{windows} on the {size} map{mean}" + ("" if tiles else " (last windows padded, keys masked)")

    def _attention(self, u_tokens: torch.Tensor, spatial_shape: tuple[int, ...],
                   valid_shape: tuple[int, ...]) -> torch.Tensor:
        batch, channels = u_tokens.shape[0], self.channels

        def grid(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, *valid, C), a view
            return crop_to(t.reshape(batch, *spatial_shape, t.shape[-1]), valid_shape)

        q = k = rope = None
        if self.qk_proj is not None:
            qk = self.qk_proj(u_tokens)
            q, k = grid(qk[..., :channels]), grid(qk[..., channels:])
            if self.attention_probe is not None:
                self._call_probe(qk, spatial_shape)
        window = attention_window(self.mode, valid_shape, self.window_size)
        if self.use_rope and q is not None:
            head_dim = channels // self.num_heads
            rope = window_rope_table(window, head_dim, scale=head_dim**-0.5, device=u_tokens.device)
        out = grid_attention(q, k, grid(u_tokens), valid_shape, window, self.mode, self.num_heads, rope)
        if exporting() or valid_shape != spatial_shape:  # no branch on symbolic sizes (see `exporting`)
            out = pad_to_grid(out, spatial_shape)
        return out.reshape(batch, -1, channels)

    def _call_probe(self, qk: torch.Tensor, spatial_shape: tuple[int, ...]) -> None:
        """The probe's queries and keys in (batch, heads, N, head_dim), RoPE'd on the whole map (analysis only)."""
        q, k = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in qk.chunk(2, dim=-1))
        if self.use_rope:
            angles = rope_angles(spatial_shape, q.shape[-1], device=qk.device)
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        self.attention_probe(self, q, k, spatial_shape)

    def forward(self, x: torch.Tensor, valid_shape: Sequence[int] | None = None) -> torch.Tensor:
        spatial_shape = tuple(x.shape[2:])
        valid = spatial_shape if valid_shape is None else spatial_sizes(valid_shape)
        x = _to_grid(_to_tokens(x).contiguous(), spatial_shape)  # channels-last (see _to_tokens)
        x = x + self.cpe1(x)
        shortcut = _to_tokens(x)
        gate, main = self.gate_in_proj(self.norm1(shortcut)).chunk(2, dim=-1)
        u = F.silu(self.in_dwconv(_to_grid(main, spatial_shape)))
        a = self._attention(_to_tokens(u), spatial_shape, valid)
        if self.lepe is not None:
            a = a + _to_tokens(self.lepe(u))
        t = shortcut + self.drop_path(self.out_proj(a * F.silu(gate)))
        x = _to_grid(t, spatial_shape)
        x = x + self.cpe2(x)
        t = _to_tokens(x)
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return _to_grid(t, spatial_shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of the first layout (before December 2026) hold separate gate_proj and in_proj, and
        # RoPE paired the features (i, i + d/2) of each head where pairs are now adjacent (2j, 2j + 1): fuse
        # the projections and reorder the q/k projection's outputs, which gives the same function.
        if f"{prefix}gate_proj.weight" in state_dict:
            for name in ("weight", "bias"):
                gate, main = state_dict.pop(f"{prefix}gate_proj.{name}"), state_dict.pop(f"{prefix}in_proj.{name}")
                state_dict[f"{prefix}gate_in_proj.{name}"] = torch.cat([gate, main])
                qk = state_dict.get(f"{prefix}qk_proj.{name}")
                if qk is not None and self.use_rope:
                    pairs = qk.unflatten(0, (2, self.num_heads, 2, -1)).transpose(2, 3)
                    state_dict[f"{prefix}qk_proj.{name}"] = pairs.reshape(qk.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)  # truncated at 2 std
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

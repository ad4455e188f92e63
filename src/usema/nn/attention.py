"""The SEMA operator and its ablation modes, for token grids of any dimension.

SEMA(Q, K, V) = A_w(Q, K, V) + mean_j(v_j): softmax attention inside non-overlapping windows plus the
arithmetic mean of all values (docs/sema.md, section 2). Written by hand because no library offers
N-dimensional window attention with masked end-padding and a global mean term.

Every mode but `mean` runs in one layout, (batch * heads, windows, window_tokens, head_dim): `full` and
`linear` are a single window that covers the map. Tokens enter it from a grid view (batch, *grid, heads,
head_dim) in one copy, which is how the SEMA block hands over its projections, and leave it in one copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from usema.nn.rope import apply_pair_rotation

ATTENTION_MODES = ("sema", "window", "mean", "full", "linear")
DEFAULT_WINDOW = {1: 7, 2: 7, 3: 5}


def as_tuple(value: int | Sequence[int], ndim: int, name: str = "value") -> tuple[int, ...]:
    """Broadcast an int to `ndim` entries, or check that a sequence has `ndim` entries."""
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"{name} {value} has {len(value)} entries, expected {ndim}")
    return value


def effective_window(spatial_shape: Sequence[int], window_size: int | Sequence[int]) -> tuple[int, ...]:
    """The window per axis, shrunk to the map where the map is smaller than the window."""
    window = as_tuple(window_size, len(spatial_shape), "window_size")
    if any(w < 1 for w in window):
        raise ValueError(f"window_size must be positive, got {window}")
    return tuple(min(w, s) for w, s in zip(window, spatial_shape, strict=True))


def window_padding(spatial_shape: Sequence[int], window: Sequence[int]) -> tuple[list[int], list[int]]:
    """The grid padded up to whole windows, and the matching F.pad list (head_dim, then the last axis first)."""
    padded = [math.ceil(s / w) * w for s, w in zip(spatial_shape, window, strict=True)]
    pad = [0, 0]
    for s, p in zip(reversed(spatial_shape), reversed(padded), strict=True):
        pad += [0, p - s]
    return padded, pad


def window_token_mask(
    spatial_shape: Sequence[int], window: Sequence[int], device: torch.device | None = None
) -> torch.Tensor | None:
    """(num_windows, window_tokens) bool, True where a window position holds a real (unpadded) token; None
    where the grid is a whole number of windows."""
    padded, pad = window_padding(spatial_shape, window)
    if not any(pad):
        return None
    valid = torch.zeros(1, *padded, 1, 1, dtype=torch.bool, device=device)
    valid[(slice(None), *(slice(0, s) for s in spatial_shape))] = True
    return to_window_layout(valid, padded, window)[0, :, :, 0]


def to_window_layout(
    grid: torch.Tensor, spatial_shape: Sequence[int], window: Sequence[int], interleave_pairs: bool = False
) -> torch.Tensor:
    """(B, *grid, H, d) tokens -> (B * H, num_windows, window_tokens, d) in one copy, zero-padded at the end of
    each axis up to whole windows (a second copy, only then).

    `interleave_pairs` reorders each head's features (i, i + d/2) into adjacent pairs, the layout in which the
    RoPE rotation is one complex multiplication (a feature order shared by q and k leaves q . k unchanged).
    """
    batch, heads, d = grid.shape[0], grid.shape[-2], grid.shape[-1]
    ndim = len(window)
    padded, pad = window_padding(spatial_shape, window)
    if any(pad):
        full = grid.new_zeros(batch, *padded, heads, d)
        full[(slice(None), *(slice(0, s) for s in spatial_shape))] = grid
        grid = full
    split = [batch]
    for p, w in zip(padded, window, strict=True):
        split += [p // w, w]
    if interleave_pairs:
        grid = grid.reshape(*split, heads, 2, d // 2)
        feature_order = [2 * ndim + 3, 2 * ndim + 2]
    else:
        grid = grid.reshape(*split, heads, d)
        feature_order = [2 * ndim + 2]
    # (B, n1, w1, n2, w2, ..., H, d) -> (B, H, n1, n2, ..., w1, w2, ..., d)
    order = [0, 2 * ndim + 1] + [1 + 2 * i for i in range(ndim)] + [2 + 2 * i for i in range(ndim)] + feature_order
    windows = math.prod(p // w for p, w in zip(padded, window, strict=True))
    return grid.permute(order).reshape(batch * heads, windows, math.prod(window), d)


def from_window_layout(
    out: torch.Tensor, batch: int, spatial_shape: Sequence[int], window: Sequence[int]
) -> torch.Tensor:
    """(B * H, num_windows, window_tokens, d) -> (B, *spatial_shape, H * d) tokens, padding cropped."""
    heads, d, ndim = out.shape[0] // batch, out.shape[-1], len(window)
    padded, pad = window_padding(spatial_shape, window)
    counts = [p // w for p, w in zip(padded, window, strict=True)]
    out = out.reshape(batch, heads, *counts, *window, d)
    # (B, H, n1, n2, ..., w1, w2, ..., d) -> (B, n1, w1, n2, w2, ..., H, d)
    order = [0]
    for i in range(ndim):
        order += [2 + i, 2 + ndim + i]
    order += [1, 2 + 2 * ndim]
    out = out.permute(order).reshape(batch, *padded, heads * d)
    if any(pad):
        out = out[(slice(None), *(slice(0, s) for s in spatial_shape))]
    return out


def attend_windows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Softmax attention within each window: q, k, v (L, num_windows, window_tokens, d) -> like v.

    `key_mask` (num_windows, window_tokens) marks real keys (None: all real). The kernel per device and
    precision is the one measured fastest, forward and backward, with torch 2.13 (`usema bench attention`):
    fused SDPA on CUDA and for unmasked fp32 on CPU; on CPU in bf16 or fp16 an explicit batched
    matmul-softmax-matmul (the CPU's fused kernel ran 2.5-4x slower than it there), and for masked fp32 one
    baddbmm that adds the mask and applies the scale inside the product (1.2x faster than SDPA with the mask,
    1.6x faster than masked_fill on the logits).
    """
    if q.device.type != "cpu" or (key_mask is None and q.dtype == torch.float32):
        attn_mask = None if key_mask is None else key_mask[:, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    length, windows, tokens, d = q.shape
    flat = (length * windows, tokens)
    if key_mask is None:
        logits = torch.baddbmm(q.new_zeros(()), q.reshape(*flat, d), k.reshape(*flat, d).transpose(1, 2),
                               beta=0.0, alpha=scale)
    else:
        additive = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~key_mask, -math.inf)
        additive = additive[None, :, None, :].expand(length, windows, tokens, tokens).reshape(*flat, tokens)
        logits = torch.baddbmm(additive, q.reshape(*flat, d), k.reshape(*flat, d).transpose(1, 2), alpha=scale)
    weights = torch.softmax(logits, dim=-1)
    return torch.bmm(weights, v.reshape(*flat, v.shape[-1])).reshape(length, windows, tokens, v.shape[-1])


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ELU+1 linear attention over the token axis (-2) (MLLA / "Demystify Mamba"); means instead of sums keep
    the magnitudes bounded in n."""
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    n = k.shape[-2]
    kv = torch.matmul(k.transpose(-1, -2), v) / n
    normaliser = torch.matmul(q, k.mean(dim=-2, keepdim=True).transpose(-1, -2)) + eps
    return torch.matmul(q, kv) / normaliser


def full_attention_materialized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full softmax attention with the n x n weight matrix built explicitly, as UNETR-style blocks do."""
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5), dim=-1)
    return torch.matmul(weights, v)


def attention_window(
    mode: str, spatial_shape: Sequence[int], window_size: int | Sequence[int] | None
) -> tuple[int, ...]:
    """The window a mode attends within: the (shrunk) window for `sema` and `window`, the whole map else."""
    if mode in ("sema", "window"):
        return effective_window(spatial_shape, window_size or DEFAULT_WINDOW.get(len(spatial_shape), 7))
    return tuple(spatial_shape)


def grid_attention(
    q: torch.Tensor | None,
    k: torch.Tensor | None,
    v: torch.Tensor,
    spatial_shape: Sequence[int],
    window: Sequence[int],
    mode: str,
    rope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of `mode` over grid views q, k, v (B, *grid, H, d) (q and k None for `mean`).

    Returns (B, *grid, H * d). `rope`, if given, is `window_rope_table` for `window` with the logit scale
    folded into its query half; without it the logits are scaled by 1/sqrt(d) here. Tokens past a map that
    is not a whole number of windows are padded and masked out of every softmax; the mean runs over the
    real tokens.
    """
    batch, grid_dims = v.shape[0], [1] * len(spatial_shape)
    mean = v.flatten(1, -3).mean(dim=1).flatten(-2)  # (B, H * d)
    if mode == "mean":
        return mean.reshape(batch, *grid_dims, -1).expand(*v.shape[:-2], -1)
    interleave = rope is not None
    qw = to_window_layout(q, spatial_shape, window, interleave_pairs=interleave)
    kw = to_window_layout(k, spatial_shape, window, interleave_pairs=interleave)
    if rope is not None:
        qw, kw = apply_pair_rotation(qw, rope[0]), apply_pair_rotation(kw, rope[1])
    vw = to_window_layout(v, spatial_shape, window)
    if mode == "linear":
        out = linear_attention(qw, kw, vw)
    else:
        mask = window_token_mask(spatial_shape, window, v.device)
        out = attend_windows(qw, kw, vw, mask, 1.0 if rope is not None else qw.shape[-1] ** -0.5)
    out = from_window_layout(out, batch, spatial_shape, window)
    if mode == "sema":
        out = out + mean.reshape(batch, *grid_dims, -1)
    return out


def crop_to(t: torch.Tensor, valid_shape: Sequence[int]) -> torch.Tensor:
    """The leading `valid_shape` part of the grid axes 1..ndim of `t` (a view)."""
    return t[(slice(None), *(slice(0, s) for s in valid_shape))]


def pad_to_grid(t: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """(B, *valid, C) -> (B, *spatial_shape, C), zeros where the grid is not data."""
    full = t.new_zeros(t.shape[0], *spatial_shape, t.shape[-1])
    full[(slice(None), *(slice(0, s) for s in t.shape[1:-1]))] = t
    return full


def sema_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spatial_shape: Sequence[int],
    window_size: int | Sequence[int] | None = None,
    mode: str = "sema",
    valid_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """Attention over a token grid.

    q, k, v: (batch, heads, N, head_dim) with N = prod(spatial_shape), tokens in row-major order over the
    spatial axes. `mode`: "sema" (window softmax + global mean), "window", "mean", "full" (softmax over all
    tokens) or "linear" (ELU+1 linear attention). Returns (batch, heads, N, head_dim). Window softmax logits are
    scaled by 1/sqrt(head_dim); sizes that are not multiples of the window are padded at the end of each axis
    with the padded keys masked out and the padded queries dropped; the mean runs over the real tokens only.
    `valid_shape`: the leading part of the grid that is data (the rest is padding, e.g. a network's padding
    to its total stride): attention runs on that part alone and the padding's outputs are zero.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"q, k, v must be (batch, heads, N, head_dim); got {q.shape}, {k.shape}, {v.shape}")
    if math.prod(spatial_shape) != q.shape[2]:
        raise ValueError(f"spatial_shape {spatial_shape} holds {math.prod(spatial_shape)} tokens, got N={q.shape[2]}")
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {ATTENTION_MODES}")
    batch, heads, _, d = q.shape

    valid = spatial_shape if valid_shape is None else tuple(int(s) for s in valid_shape)

    def grid(t: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) -> (B, *valid, H, d), a view
        return crop_to(t.transpose(1, 2).reshape(batch, *spatial_shape, heads, t.shape[-1]), valid)

    out = grid_attention(grid(q), grid(k), grid(v), valid, attention_window(mode, valid, window_size), mode)
    if valid != spatial_shape:
        out = pad_to_grid(out, spatial_shape)
    return out.reshape(batch, -1, heads, v.shape[-1]).transpose(1, 2)


def window_softmax_weights(
    q: torch.Tensor, k: torch.Tensor, spatial_shape: Sequence[int], window_size: int | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window softmax weights of SEMA's first term, for analysis: (batch * heads, num_windows,
    window_tokens, window_tokens) with padded keys at weight 0, and the token mask of `window_token_mask`."""
    window = effective_window(spatial_shape, window_size)
    mask = window_token_mask(spatial_shape, window, q.device)
    batch, heads = q.shape[:2]

    def windows(t: torch.Tensor) -> torch.Tensor:
        return to_window_layout(t.transpose(1, 2).reshape(batch, *spatial_shape, heads, t.shape[-1]),
                                spatial_shape, window)

    logits = torch.matmul(windows(q), windows(k).transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1), mask


"""The SEMA operator and its ablation modes, for token grids of any dimension.

SEMA(Q, K, V) = A_w(Q, K, V) + mean_j(v_j): softmax attention inside non-overlapping windows plus the
arithmetic mean of all values (docs/sema.md, section 2). Written by hand because no library offers
N-dimensional window attention with masked end-padding and a global mean term.

Every mode but `mean` runs in one layout, (batch * windows, window_tokens, channels), heads being views of
the channels: `full` and `linear` are a single window that covers the map. Tokens enter it from a grid
(batch, *grid, channels) in one copy and leave it in one copy; both copies move whole channel vectors, which
ran 7x faster than moving each head's features on their own (2-core CPU, torch 2.13), and CPU SDPA reads
the head views and writes its output in this layout without copies of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from usema.nn.padding import exporting, padded_size, spatial_sizes
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
    """The window per axis, shrunk to the map where the map is smaller than the window (not while exporting).

    Shrinking saves work only: a map shorter than the window along an axis is one window along it either way,
    and the whole window, its padded keys masked, gives the same attention. So an exported graph keeps the
    window it was given at every size rather than branch on the map's (see `usema.nn.padding.exporting`).
    """
    window = as_tuple(window_size, len(spatial_shape), "window_size")
    if any(w < 1 for w in window):
        raise ValueError(f"window_size must be positive, got {window}")
    if exporting():
        return window
    # a comparison rather than min(): on a symbolic size it settles the window to an int (a guard on the size)
    return tuple(w if s >= w else s for w, s in zip(window, spatial_shape, strict=True))


def window_padding(spatial_shape: Sequence[int], window: Sequence[int]) -> tuple[list[int], list[int]]:
    """The grid padded up to whole windows, and the matching F.pad list (head_dim, then the last axis first)."""
    padded = list(padded_size(spatial_shape, window))
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
    if exporting():
        # masked at every size (see `exporting`), from "position < size" per axis combined by broadcasting:
        # the exporters fix an assignment into a slice to the example's size
        ndim, valid = len(padded), None
        for axis, (p, s) in enumerate(zip(padded, spatial_shape, strict=True)):
            inside = (torch.arange(p, device=device) < s).reshape([-1 if a == axis else 1 for a in range(ndim)])
            valid = inside if valid is None else valid & inside
        return to_window_layout(valid[None, ..., None], padded, window)[..., 0]
    if not any(pad):
        return None
    valid = torch.zeros(1, *padded, 1, dtype=torch.bool, device=device)  # 3x faster to build in eager
    valid[(slice(None), *(slice(0, s) for s in spatial_shape))] = True
    return to_window_layout(valid, padded, window)[..., 0]


def pad_grid_end(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the grid axes 1..len(size) of `t` (B, *grid, *features) at their end up to `size`.

    F.pad, which the exporters record with sizes that follow the input; filling a slice of a zero tensor, as
    the eager path does, exports as an Expand to the example's shape."""
    pad = [0, 0] * (t.dim() - 1 - len(size))
    for have, want in zip(reversed(t.shape[1 : 1 + len(size)]), reversed(tuple(size)), strict=True):
        pad += [0, want - have]
    return F.pad(t, pad)


def to_window_layout(grid: torch.Tensor, spatial_shape: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """(B, *grid, *features) -> (B * num_windows, window_tokens, prod(features)) in one copy, zero-padded at
    the end of each axis up to whole windows (a second copy, only then). Windows and their tokens row-major."""
    batch, ndim = grid.shape[0], len(window)
    features = grid.shape[1 + ndim :]
    padded, pad = window_padding(spatial_shape, window)
    if exporting():  # padded at every size (see `exporting`)
        grid = pad_grid_end(grid, padded)
    elif any(pad):
        full = grid.new_zeros(batch, *padded, *features)
        full[(slice(None), *(slice(0, s) for s in spatial_shape))] = grid
        grid = full
    split = [batch]
    for p, w in zip(padded, window, strict=True):
        split += [p // w, w]
    grid = grid.reshape(*split, *features)
    # (B, n1, w1, n2, w2, ..., *features) -> (B, n1, n2, ..., w1, w2, ..., *features)
    order = [0] + [1 + 2 * i for i in range(ndim)] + [2 + 2 * i for i in range(ndim)]
    order += list(range(1 + 2 * ndim, grid.dim()))
    # -1 is batch * number of windows; a product over a generator here would break torch.compile's graph
    return grid.permute(order).reshape(-1, math.prod(window), math.prod(features))


def from_window_layout(
    out: torch.Tensor, batch: int, spatial_shape: Sequence[int], window: Sequence[int]
) -> torch.Tensor:
    """(B * num_windows, window_tokens, C) -> (B, *spatial_shape, C) tokens, padding cropped."""
    ndim = len(window)
    padded, pad = window_padding(spatial_shape, window)
    counts = [p // w for p, w in zip(padded, window, strict=True)]
    out = out.reshape(batch, *counts, *window, out.shape[-1])
    # (B, n1, n2, ..., w1, w2, ..., C) -> (B, n1, w1, n2, w2, ..., C)
    order = [0]
    for i in range(ndim):
        order += [1 + i, 1 + ndim + i]
    order.append(1 + 2 * ndim)
    out = out.permute(order).reshape(batch, *padded, out.shape[-1])
    if exporting() or any(pad):
        out = out[(slice(None), *(slice(0, s) for s in spatial_shape))]
    return out


def heads_view(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(L, T, H * d) -> (L, H, T, d), a view."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def attend_windows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Softmax attention within each window: q, k, v (B * num_windows, H, window_tokens, d) -> like v.

    `key_mask` (num_windows, window_tokens) marks real keys (None: all real). The kernel per device and
    precision is the one measured fastest, forward and backward, with torch 2.13 (`usema bench attention`):
    fused SDPA on CUDA and for unmasked fp32 on CPU; on CPU in bf16 or fp16 an explicit matmul-softmax-matmul
    (the CPU's fused kernel ran 2.5-4x slower than it there), and for masked fp32 one baddbmm that adds the
    mask and applies the scale inside the product (1.2x faster than SDPA with the mask, 1.6x faster than
    masked_fill on the logits). While exporting, broadcasting ops that name no size (see `exported_attention`).
    """
    if exporting():
        return exported_attention(q, k, v, key_mask, scale)
    length, heads, tokens, d = q.shape
    mask = None
    if key_mask is not None:  # window w of batch item b is row b * num_windows + w
        mask = key_mask[None, :, None, :].expand(length // key_mask.shape[0], -1, -1, -1).reshape(length, 1, 1, tokens)
    if q.device.type != "cpu" or (mask is None and q.dtype == torch.float32):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    flat = (length * heads, tokens)
    if mask is None:
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale if scale != 1.0 else torch.matmul(q, k.transpose(-1, -2))
    else:
        additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, -math.inf)
        additive = additive.expand(length, heads, tokens, tokens).reshape(*flat, tokens)
        logits = torch.baddbmm(additive, q.reshape(*flat, d), k.reshape(*flat, d).transpose(1, 2), alpha=scale)
        logits = logits.view(length, heads, tokens, tokens)
    return torch.matmul(torch.softmax(logits, dim=-1), v)


def exported_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """`attend_windows` as the exported graph computes it: explicit matmul-softmax-matmul, the mask broadcast
    over the batch by an unflatten. The eager kernels' reshapes to sizes multiplied out in Python came out of
    the TorchScript-based ONNX exporter fixed to the example's batch; this names no size but the mask's."""
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if key_mask is not None:  # (B * num_windows, ...) -> (B, num_windows, ...): window w of item b is row b * nw + w
        logits = logits.unflatten(0, (-1, key_mask.shape[0]))
        logits = logits.masked_fill(~key_mask[:, None, None, :], -math.inf).flatten(0, 1)
    return torch.matmul(torch.softmax(logits, dim=-1), v)


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
    heads: int,
    rope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of `mode` over grids q, k, v (B, *grid, *features), views welcome (q and k None for `mean`).

    Returns (B, *grid, C), C = prod(features) = heads * head_dim. `rope`, if given, is `window_rope_table` for
    `window` (the queries' half with the logit scale folded in); without it the logits are scaled by
    1/sqrt(head_dim) here. Tokens past a map that is not a whole number of windows are padded and masked out
    of every softmax; the mean runs over the real tokens.
    """
    batch, grid_dims = v.shape[0], [1] * len(spatial_shape)
    vw = to_window_layout(v, spatial_shape, window)
    channels = vw.shape[-1]
    mean = v.reshape(batch, -1, channels).mean(dim=1)  # (B, C)
    if mode == "mean":
        return mean.reshape(batch, *grid_dims, channels).expand(batch, *spatial_shape, channels)
    qw, kw = to_window_layout(q, spatial_shape, window), to_window_layout(k, spatial_shape, window)
    if rope is not None:  # (L, T, C) viewed as (L, T, H, d), rotated per token position
        qw = apply_pair_rotation(qw.unflatten(-1, (heads, -1)), rope[0]).flatten(-2)
        kw = apply_pair_rotation(kw.unflatten(-1, (heads, -1)), rope[1]).flatten(-2)
    qh, kh, vh = (heads_view(t, heads) for t in (qw, kw, vw))
    if mode == "linear":
        out = linear_attention(qh, kh, vh)
    else:
        mask = window_token_mask(spatial_shape, window, v.device)
        out = attend_windows(qh, kh, vh, mask, 1.0 if rope is not None else qh.shape[-1] ** -0.5)
    out = from_window_layout(out.transpose(1, 2).reshape(vw.shape), batch, spatial_shape, window)
    if mode == "sema":
        out = out + mean.reshape(batch, *grid_dims, channels)
    return out


def crop_to(t: torch.Tensor, valid_shape: Sequence[int]) -> torch.Tensor:
    """The leading `valid_shape` part of the grid axes 1..ndim of `t` (a view)."""
    return t[(slice(None), *(slice(0, s) for s in valid_shape))]


def pad_to_grid(t: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """(B, *valid, C) -> (B, *spatial_shape, C), zeros where the grid is not data."""
    if exporting():
        return pad_grid_end(t, spatial_shape)
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
    spatial_shape = spatial_sizes(spatial_shape)
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"q, k, v must be (batch, heads, N, head_dim); got {q.shape}, {k.shape}, {v.shape}")
    if not exporting() and math.prod(spatial_shape) != q.shape[2]:
        raise ValueError(f"spatial_shape {spatial_shape} holds {math.prod(spatial_shape)} tokens, got N={q.shape[2]}")
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {ATTENTION_MODES}")
    batch, heads = q.shape[:2]
    valid = spatial_shape if valid_shape is None else spatial_sizes(valid_shape)

    def grid(t: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) -> (B, *valid, H, d), a view
        return crop_to(t.transpose(1, 2).reshape(batch, *spatial_shape, heads, t.shape[-1]), valid)

    window = attention_window(mode, valid, window_size)
    out = grid_attention(grid(q), grid(k), grid(v), valid, window, mode, heads)
    if exporting() or valid != spatial_shape:
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

    def windows(t: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) -> (B * H, num_windows, window_tokens, d)
        grid = t.reshape(batch * heads, *spatial_shape, 1, t.shape[-1])
        return to_window_layout(grid, spatial_shape, window).unflatten(0, (batch * heads, -1))

    logits = torch.matmul(windows(q), windows(k).transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1), mask


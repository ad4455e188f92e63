"""The SEMA operator and its ablation modes, for token grids of any dimension.

SEMA(Q, K, V) = A_w(Q, K, V) + mean_j(v_j): softmax attention inside non-overlapping windows plus the
arithmetic mean of all values (docs/sema.md, section 2). Written by hand because no library offers
N-dimensional window attention with masked end-padding and a global mean term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

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


def _partition(x: torch.Tensor, padded: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """(L, *padded, d) -> (L, num_windows, window_tokens, d), windows in row-major order."""
    ndim = len(window)
    counts = [p // w for p, w in zip(padded, window, strict=True)]
    shape = [x.shape[0]]
    for count, w in zip(counts, window, strict=True):
        shape += [count, w]
    x = x.reshape(*shape, x.shape[-1])
    # (L, n1, w1, n2, w2, ..., d) -> (L, n1, n2, ..., w1, w2, ..., d)
    order = [0] + [1 + 2 * i for i in range(ndim)] + [2 + 2 * i for i in range(ndim)] + [1 + 2 * ndim]
    return x.permute(order).reshape(x.shape[0], math.prod(counts), math.prod(window), x.shape[-1])


def _unpartition(x: torch.Tensor, padded: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """Inverse of `_partition`: (L, num_windows, window_tokens, d) -> (L, *padded, d)."""
    ndim = len(window)
    counts = [p // w for p, w in zip(padded, window, strict=True)]
    x = x.reshape(x.shape[0], *counts, *window, x.shape[-1])
    order = [0]
    for i in range(ndim):
        order += [1 + i, 1 + ndim + i]
    order.append(1 + 2 * ndim)
    return x.permute(order).reshape(x.shape[0], *padded, x.shape[-1])


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
    valid = torch.zeros(padded, dtype=torch.bool, device=device)
    valid[tuple(slice(0, s) for s in spatial_shape)] = True
    return _partition(valid.unsqueeze(0).unsqueeze(-1), padded, window)[0, :, :, 0]


def to_windows(t: torch.Tensor, spatial_shape: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """(batch, heads, N, d) tokens -> (batch * heads, num_windows, window_tokens, d), zero-padded at the end."""
    padded, pad = window_padding(spatial_shape, window)
    t = t.reshape(t.shape[0] * t.shape[1], *spatial_shape, t.shape[-1])
    if any(pad):
        t = F.pad(t, pad)
    return _partition(t, padded, window)


def window_softmax_weights(
    q: torch.Tensor, k: torch.Tensor, spatial_shape: Sequence[int], window_size: int | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window softmax weights of SEMA's first term, for analysis: (batch * heads, num_windows,
    window_tokens, window_tokens) with padded keys at weight 0, and the token mask of `window_token_mask`."""
    window = effective_window(spatial_shape, window_size)
    mask = window_token_mask(spatial_shape, window, q.device)
    logits = torch.matmul(to_windows(q, spatial_shape, window), to_windows(k, spatial_shape, window).transpose(-1, -2))
    logits = logits * (q.shape[-1] ** -0.5)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1), mask


def _window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spatial_shape: Sequence[int], window: Sequence[int]
) -> torch.Tensor:
    batch, heads, n, d = q.shape
    padded, _ = window_padding(spatial_shape, window)
    qw, kw, vw = (to_windows(t, spatial_shape, window) for t in (q, k, v))
    mask = window_token_mask(spatial_shape, window, q.device)
    needs_pad = mask is not None

    if mask is None or q.device.type == "cuda":
        # The fused kernels are the fastest path on CUDA, and on CPU too where no key is masked: with torch
        # 2.13 on the project's 2-core CPU, SDPA over 7x7 windows ran 1.4x faster (forward+backward at 224^2
        # tokens) than the matmul-softmax-matmul below (`usema bench attention`, mode window-sdpa).
        attn_mask = None if mask is None else mask[:, None, :]
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask)
    else:
        # On CPU with padded (masked) keys the explicit form is kept: SDPA with a mask leaves the fused kernel
        # (`usema bench attention`, mode window-sdpa: 1.8x the time of unmasked SDPA at 224^2, slower than this).
        logits = torch.matmul(qw, kw.transpose(-1, -2)) * (d**-0.5)
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        out = torch.matmul(torch.softmax(logits, dim=-1), vw)

    out = _unpartition(out, padded, window)
    if needs_pad:
        out = out[(slice(None), *(slice(0, s) for s in spatial_shape))]
    return out.reshape(batch, heads, n, v.shape[-1])


def _full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # The fused kernel (flash/efficient on CUDA, flash on CPU) is the fastest correct path for full attention.
    return F.scaled_dot_product_attention(q, k, v)


def full_attention_materialized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full softmax attention with the n x n weight matrix built explicitly, as UNETR-style blocks do."""
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5), dim=-1)
    return torch.matmul(weights, v)


def _linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # ELU+1 feature map (MLLA / "Demystify Mamba"); means instead of sums keep the magnitudes bounded in n.
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    n = k.shape[-2]
    kv = torch.matmul(k.transpose(-1, -2), v) / n
    normaliser = torch.matmul(q, k.mean(dim=-2, keepdim=True).transpose(-1, -2)) + eps
    return torch.matmul(q, kv) / normaliser


def sema_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spatial_shape: Sequence[int],
    window_size: int | Sequence[int] | None = None,
    mode: str = "sema",
) -> torch.Tensor:
    """Attention over a token grid.

    q, k, v: (batch, heads, N, head_dim) with N = prod(spatial_shape), tokens in row-major order over the
    spatial axes. `mode`: "sema" (window softmax + global mean), "window", "mean", "full" (softmax over all
    tokens) or "linear" (ELU+1 linear attention). Returns (batch, heads, N, head_dim). Window softmax logits are
    scaled by 1/sqrt(head_dim); sizes that are not multiples of the window are padded at the end of each axis
    with the padded keys masked out and the padded queries dropped; the mean runs over the real tokens only.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"q, k, v must be (batch, heads, N, head_dim); got {q.shape}, {k.shape}, {v.shape}")
    if math.prod(spatial_shape) != q.shape[2]:
        raise ValueError(f"spatial_shape {spatial_shape} holds {math.prod(spatial_shape)} tokens, got N={q.shape[2]}")
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {ATTENTION_MODES}")
    if window_size is None:
        window_size = DEFAULT_WINDOW.get(len(spatial_shape), 7)

    if mode == "full":
        return _full_attention(q, k, v)
    if mode == "linear":
        return _linear_attention(q, k, v)
    if mode == "mean":
        return v.mean(dim=2, keepdim=True).expand_as(v)
    window = effective_window(spatial_shape, window_size)
    out = _window_attention(q, k, v, spatial_shape, window)
    if mode == "sema":
        out = out + v.mean(dim=2, keepdim=True)
    return out

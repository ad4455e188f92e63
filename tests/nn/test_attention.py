"""sema_attention against a reference written token by token, in 1D, 2D and 3D."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from usema.nn.attention import ATTENTION_MODES, effective_window, sema_attention


def reference_attention(q, k, v, spatial_shape, window, mode):
    """Token-by-token reference: for each query token, gather its keys by grid coordinates and weight them."""
    n, d = q.shape[2], q.shape[3]
    coords = list(itertools.product(*(range(s) for s in spatial_shape)))  # row-major, like the tokens
    window = [min(w, s) for w, s in zip(window, spatial_shape)]
    window_of = [tuple(c // w for c, w in zip(coord, window)) for coord in coords]
    mean_v = v.sum(dim=2) / n
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    out = torch.zeros_like(v)
    for m in range(n):
        if mode == "mean":
            out[:, :, m] = mean_v
            continue
        if mode == "linear":
            sims = torch.einsum("bhd,bhjd->bhj", phi_q[:, :, m], phi_k)
            out[:, :, m] = torch.einsum("bhj,bhjd->bhd", sims / sims.sum(-1, keepdim=True), v)
            continue
        keys = [j for j in range(n) if mode == "full" or window_of[j] == window_of[m]]
        logits = torch.einsum("bhd,bhjd->bhj", q[:, :, m], k[:, :, keys]) / math.sqrt(d)
        out[:, :, m] = torch.einsum("bhj,bhjd->bhd", torch.softmax(logits, dim=-1), v[:, :, keys])
        if mode == "sema":
            out[:, :, m] += mean_v
    return out


CASES = [
    # (spatial_shape, window): multiples, non-multiples, windows larger than the map, tuples
    ((17,), (5,)),
    ((3,), (7,)),
    ((14, 7), (7, 7)),
    ((9, 10), (7, 7)),
    ((5, 3), (7, 7)),
    ((8, 11), (3, 4)),
    ((10, 5, 5), (5, 5, 5)),
    ((6, 7, 4), (5, 5, 5)),
    ((4, 9, 3), (3, 7, 7)),
]


@pytest.mark.parametrize("mode", ATTENTION_MODES)
@pytest.mark.parametrize("spatial_shape,window", CASES)
def test_matches_token_by_token_reference(spatial_shape, window, mode):
    torch.manual_seed(0)
    n = math.prod(spatial_shape)
    q, k, v = (torch.randn(2, 3, n, 4, dtype=torch.float64) for _ in range(3))
    expected = reference_attention(q, k, v, spatial_shape, window, mode)
    got = sema_attention(q, k, v, spatial_shape, window, mode)
    assert got.shape == q.shape
    # linear attention adds eps=1e-6 to its normaliser, which the reference leaves out
    tol = 1e-5 if mode == "linear" else 1e-9
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_sema_is_window_plus_mean_and_padding_does_not_leak():
    torch.manual_seed(1)
    shape = (9, 10)
    q, k, v = (torch.randn(1, 2, 90, 8) for _ in range(3))
    sema = sema_attention(q, k, v, shape, 7, "sema")
    window = sema_attention(q, k, v, shape, 7, "window")
    torch.testing.assert_close(sema - window, v.mean(dim=2, keepdim=True).expand_as(v))
    # a query in the last, partly padded window only sees the real tokens of its window
    attn_rows = sema_attention(q, k, torch.eye(90).expand(1, 2, 90, 90).contiguous(), shape, 7, "window")
    weights = attn_rows[0, 0, 9 * 10 - 1].reshape(shape)  # token (8, 9): window rows 7..8, cols 7..9
    assert weights[7:, 7:].sum().item() == pytest.approx(1.0)
    assert weights[:7].abs().sum().item() == 0 and weights[:, :7].abs().sum().item() == 0


def test_gradients_flow_and_stay_finite():
    torch.manual_seed(2)
    shape = (5, 6, 4)
    n = math.prod(shape)
    for mode in ATTENTION_MODES:
        q, k, v = (torch.randn(2, 2, n, 8, requires_grad=True) for _ in range(3))
        sema_attention(q, k, v, shape, 3, mode).square().sum().backward()
        for name, t in zip("qkv", (q, k, v)):
            if mode == "mean" and name in "qk":
                assert t.grad is None or torch.count_nonzero(t.grad) == 0
                continue
            assert t.grad is not None and torch.isfinite(t.grad).all(), (mode, name)
            assert t.grad.abs().sum() > 0, (mode, name)


def test_gradcheck_with_padding():
    torch.manual_seed(3)
    shape = (4, 5)
    q, k, v = (torch.randn(1, 1, 20, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: sema_attention(a, b, c, shape, 3, "sema"), (q, k, v))


def test_effective_window_shrinks_to_the_map():
    assert effective_window((3, 40), 7) == (3, 7)
    assert effective_window((4, 30, 30), (3, 7, 7)) == (3, 7, 7)


@pytest.mark.parametrize("bad", [
    dict(spatial_shape=(4, 4), n=15, mode="sema"),
    dict(spatial_shape=(4, 4), n=16, mode="banana"),
])
def test_rejects_bad_arguments(bad):
    q = torch.randn(1, 1, bad["n"], 4)
    with pytest.raises(ValueError):
        sema_attention(q, q, q, bad["spatial_shape"], 3, bad["mode"])


@pytest.mark.parametrize("mode", ATTENTION_MODES)
@pytest.mark.parametrize("spatial_shape,valid_shape,window", [
    ((8, 12), (5, 9), (3, 4)),  # network padding, then window padding on what is left
    ((16, 8, 8), (13, 6, 8), (5, 5, 5)),
    ((10,), (7,), (7,)),
])
def test_padding_outside_valid_shape_stays_out_of_keys_and_mean(mode, spatial_shape, valid_shape, window):
    torch.manual_seed(4)
    n, valid_n = math.prod(spatial_shape), math.prod(valid_shape)
    q, k, v = (torch.randn(2, 2, n, 4, dtype=torch.float64) for _ in range(3))
    got = sema_attention(q, k, v, spatial_shape, window, mode, valid_shape=valid_shape)

    def crop(t):  # the same tokens on the unpadded grid
        grid = t.reshape(2, 2, *spatial_shape, 4)[(slice(None), slice(None), *(slice(0, s) for s in valid_shape))]
        return grid.reshape(2, 2, valid_n, 4)

    expected = reference_attention(crop(q), crop(k), crop(v), valid_shape, window, mode)
    tol = 1e-5 if mode == "linear" else 1e-9
    torch.testing.assert_close(crop(got), expected, rtol=tol, atol=tol)
    outside = torch.ones(spatial_shape, dtype=torch.bool)
    outside[tuple(slice(0, s) for s in valid_shape)] = False
    assert torch.count_nonzero(got.reshape(2, 2, *spatial_shape, 4)[:, :, outside]) == 0


def test_masked_cpu_kernel_matches_sdpa_in_bf16_and_fp32():
    torch.manual_seed(5)
    shape, window = (9, 10), (7, 7)  # 4 windows, three of them padded
    q, k, v = (torch.randn(1, 2, 90, 16) for _ in range(3))
    expected = reference_attention(q.double(), k.double(), v.double(), shape, window, "sema").float()
    torch.testing.assert_close(sema_attention(q, k, v, shape, window, "sema"), expected, rtol=1e-5, atol=1e-5)
    low = sema_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), shape, window, "sema")
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, rtol=0.05, atol=0.05)

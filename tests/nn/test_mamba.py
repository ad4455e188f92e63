"""U-Mamba's MambaLayer: shapes, raster-order causality, fp32 under autocast, optional residual."""

import pytest
import torch

pytest.importorskip("mambapy", reason="the Mamba layer needs mambapy")

from usema.nn.mamba import MambaLayer  # noqa: E402


def test_scans_the_flattened_map_in_raster_order():
    torch.manual_seed(0)
    layer = MambaLayer(8)
    x = torch.randn(2, 8, 5, 6, 3)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = x.clone()
    changed[:, :, 4, 5, 2] += 1.0  # the last voxel in raster order
    moved = (layer(changed) - out).abs().flatten(2).amax(dim=1)
    assert torch.all(moved[:, :-1] == 0)  # causal scan: no earlier token sees the change
    assert torch.all(moved[:, -1] > 0)


def test_runs_in_fp32_under_bf16_autocast_and_trains():
    torch.manual_seed(0)
    layer = MambaLayer(4)
    x = torch.randn(1, 4, 7, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    reference = layer(x)
    torch.testing.assert_close(out, reference)  # same fp32 result as without autocast
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in layer.parameters())


def test_residual_adds_the_input():
    torch.manual_seed(0)
    plain = MambaLayer(4)
    residual = MambaLayer(4, residual=True)
    residual.load_state_dict(plain.state_dict())  # the flag adds no parameters
    x = torch.randn(1, 4, 6, 5)
    torch.testing.assert_close(residual(x), plain(x) + x)

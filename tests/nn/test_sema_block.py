"""SEMABlock over 1D/2D/3D maps of odd sizes, each option, and the weight initialisation."""

import pytest
import torch

from usema.nn.attention import ATTENTION_MODES
from usema.nn.sema_block import SEMABlock


@pytest.mark.parametrize("spatial_dims,shape", [(1, (19,)), (2, (9, 13)), (3, (5, 7, 6))])
@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_forward_backward_any_size(spatial_dims, shape, mode):
    torch.manual_seed(0)
    block = SEMABlock(32, spatial_dims, mode=mode, head_dim=16, drop_path=0.1)
    x = torch.randn(2, 32, *shape, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_options_change_the_parameters():
    full = SEMABlock(32, 2)
    no_lepe = SEMABlock(32, 2, use_lepe=False)
    assert full.lepe is not None and no_lepe.lepe is None
    assert full.num_heads == 1 and SEMABlock(64, 2, head_dim=16).num_heads == 4
    assert SEMABlock(64, 2, num_heads=2).num_heads == 2
    assert SEMABlock(64, 2, mlp_ratio=2).mlp[0].out_features == 128
    assert SEMABlock(32, 3).window_size == 5 and SEMABlock(32, 2).window_size == 7
    assert SEMABlock(32, 2, mode="mean").qk_proj is None  # the mean reads no queries or keys


def test_rope_makes_the_block_position_aware():
    torch.manual_seed(1)
    block = SEMABlock(32, 2, mode="full", head_dim=16, use_lepe=False).eval()
    plain = SEMABlock(32, 2, mode="full", head_dim=16, use_lepe=False, use_rope=False).eval()
    with torch.no_grad():  # sharp logits: at the 0.02 init, attention is near uniform whatever the positions
        block.qk_proj.weight.normal_(0, 1)
    plain.load_state_dict(block.state_dict())
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(block(x), plain(x), atol=1e-5)


def test_initialisation():
    block = SEMABlock(64, 2)
    assert abs(block.qk_proj.weight.std().item() - 0.02) < 0.004
    assert block.qk_proj.weight.abs().max().item() <= 0.04 + 1e-6  # truncated at 2 std
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm1.bias == 0)
    assert torch.all(block.out_proj.bias == 0)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown attention mode"):
        SEMABlock(32, 2, mode="banana")

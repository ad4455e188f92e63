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


def test_attention_scope_says_when_a_window_covers_the_map():
    block = SEMABlock(32, 3, window_size=(5, 7, 5), head_dim=16)
    assert block.attention_scope((20, 28, 20)) == "4x4x4 windows of 5x7x5 on the 20x28x20 map + mean"
    assert block.attention_scope((5, 7, 5)).startswith("one window covers the 5x7x5 map: exact softmax over all 175")
    assert block.attention_scope((6, 7, 5)).endswith("(last windows padded, keys masked)")
    assert SEMABlock(32, 2, mode="linear", head_dim=16).attention_scope((9, 9)) == "linear attention over the whole 9x9 map"


def test_checkpoints_with_separate_gate_and_input_projections_load_fused():
    torch.manual_seed(6)
    block = SEMABlock(16, 2, head_dim=8)
    state = block.state_dict()
    gate_w, main_w = state.pop("gate_in_proj.weight").chunk(2)
    gate_b, main_b = state.pop("gate_in_proj.bias").chunk(2)
    state.update({"gate_proj.weight": gate_w, "in_proj.weight": main_w, "gate_proj.bias": gate_b,
                  "in_proj.bias": main_b})
    fresh = SEMABlock(16, 2, head_dim=8)
    fresh.load_state_dict(state)
    x = torch.randn(1, 16, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), block(x))


def test_odd_channels_per_head_are_refused_with_rope():
    with pytest.raises(ValueError, match="even"):
        SEMABlock(24, 2, head_dim=3)
    SEMABlock(24, 2, head_dim=3, use_rope=False)
    # fewer channels per head than RoPE rotates over the axes: refused when built, not at the first forward pass
    with pytest.raises(ValueError, match="RoPE over 3 axes needs at least 6 channels per head"):
        SEMABlock(8, 3, head_dim=4)
    SEMABlock(8, 3, head_dim=4, mode="mean")  # the mean reads no queries or keys: nothing to rotate


@pytest.mark.parametrize("valid_shape", [None, (5, 10, 10)])
def test_the_block_compiles_to_one_graph_without_breaks(valid_shape):
    # nnU-Net compiles its network on CUDA; a graph break per window partition made 33 graphs of one USEMA
    torch.manual_seed(0)
    block = SEMABlock(16, 3, head_dim=8).eval()
    explanation = torch._dynamo.explain(block)(torch.randn(1, 16, 6, 10, 10), valid_shape)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), [
        reason.reason for reason in explanation.break_reasons
    ]

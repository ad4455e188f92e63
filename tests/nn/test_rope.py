"""RoPE over N axes: norms preserved, dot products depend only on relative position."""

import math

import pytest
import torch

from usema.nn.rope import apply_rope, rope_angles


@pytest.mark.parametrize("shape,head_dim", [((12,), 8), ((5, 6), 16), ((3, 4, 5), 16), ((4, 4, 4), 14)])
def test_rotation_keeps_norms(shape, head_dim):
    x = torch.randn(2, 3, math.prod(shape), head_dim)
    rotated = apply_rope(x, rope_angles(shape, head_dim))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(rotated, x)


def test_scores_depend_on_relative_position_only():
    shape, head_dim = (6, 7, 5), 24
    angles = rope_angles(shape, head_dim).reshape(*shape, -1)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(p, r):
        return apply_rope(q, angles[p]) @ apply_rope(k, angles[r])

    # the same offset (1, -2, 3) at two different places gives the same score
    assert score((0, 3, 0), (1, 1, 3)).item() == pytest.approx(score((4, 5, 1), (5, 3, 4)).item(), rel=1e-4)
    # another offset gives another score
    assert score((0, 3, 0), (1, 1, 3)).item() != pytest.approx(score((0, 3, 0), (2, 1, 3)).item(), rel=1e-3)


def test_each_axis_gets_its_share_of_frequencies():
    angles = rope_angles((4, 5, 6), 16)  # 8 pairs: 2 per axis, 2 left unrotated
    assert angles.shape == (120, 8)
    grid = angles.reshape(4, 5, 6, 8)
    torch.testing.assert_close(grid[1, 0, 0, :2], torch.tensor([1.0, 0.01]))
    assert torch.count_nonzero(grid[..., 6:]) == 0
    assert torch.count_nonzero(grid[:, 0, 0, 2:6]) == 0  # axes 1 and 2 do not move with axis 0


def test_head_dim_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        rope_angles((4, 4, 4), 4)

"""MONAI's transformer UNets as baselines: any input size (padded, tiled for UNETR), deep supervision as a
list."""

import pytest
import torch

from usema.models import build_model

pytest.importorskip("einops", reason="MONAI's UNETR and Swin-UNETR need einops")

SHAPES = {2: (27, 21), 3: (11, 13, 7)}
SWIN_SMALL = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), strides=[1, 2, 2])


def _train_once(model, x, deep_supervision):
    out = model(x)
    outputs = out if deep_supervision else [out]
    assert isinstance(out, list) == deep_supervision
    sum(o.float().square().mean() for o in outputs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return outputs


@pytest.mark.parametrize("spatial_dims,deep_supervision", [(2, False), (2, True), (3, True)])
def test_swinunetr_trains_on_odd_sizes(spatial_dims, deep_supervision):
    torch.manual_seed(0)
    model = build_model("swinunetr", spatial_dims, 2, 3, deep_supervision=deep_supervision, **SWIN_SMALL)
    shape = SHAPES[spatial_dims]
    outputs = _train_once(model, torch.randn(1, 2, *shape), deep_supervision)
    assert [tuple(o.shape) for o in outputs] == [(1, 3, *shape)]


@pytest.mark.parametrize(
    "spatial_dims,shape,deep_supervision", [(3, (29, 32, 31), True), (2, (31, 29), False)]
)
def test_unetr_at_full_width_trains_on_odd_sizes(spatial_dims, shape, deep_supervision):
    torch.manual_seed(0)
    model = build_model(
        "unetr",
        spatial_dims,
        1,
        2,
        deep_supervision=deep_supervision,
        patch_size=[30] * spatial_dims,
        strides=[1, 2, 2],
    )  # the plan's strides are accepted and ignored
    assert model.img_size == (32,) * spatial_dims and model.net.hidden_size == 768
    outputs = _train_once(model, torch.randn(1, 1, *shape), deep_supervision)
    assert [tuple(o.shape) for o in outputs] == [(1, 2, *shape)]


def test_unetr_runs_inputs_larger_than_its_size_as_tiles():
    torch.manual_seed(0)
    model = build_model(
        "unetr", 2, 1, 2, patch_size=16, hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4
    ).eval()
    x = torch.randn(1, 1, 32, 16)
    with torch.no_grad():
        whole = model(x)
        halves = torch.cat([model(x[:, :, :16]), model(x[:, :, 16:])], dim=2)
    torch.testing.assert_close(whole, halves)


def test_tiles_round_trip():
    from usema.models.monai_nets import merge_tiles, split_tiles

    x = torch.arange(2 * 3 * 8 * 12 * 4, dtype=torch.float32).reshape(2, 3, 8, 12, 4)
    tiles, counts = split_tiles(x, (4, 6, 4))
    assert counts == [2, 2, 1] and tiles.shape == (8, 3, 4, 6, 4)
    torch.testing.assert_close(tiles[1], x[0, :, :4, 6:, :])
    torch.testing.assert_close(merge_tiles(tiles, counts), x)

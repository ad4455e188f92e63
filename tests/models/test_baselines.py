"""The baselines through the registry: odd sizes, deep supervision, plan overrides, and their specs."""

import pytest
import torch
from torch import nn

from usema.models import build_model, list_models

pytest.importorskip("dynamic_network_architectures", reason="nnU-Net baselines need dynamic-network-architectures")
pytest.importorskip("mambapy", reason="U-Mamba baselines need mambapy")

BASELINES = ["nnunet", "nnunet-resenc", "swinunetr", "umamba-bot", "umamba-enc", "unetr"]
SHAPES = {2: (27, 21), 3: (11, 13, 7)}
# small widths per baseline (all through build_model overrides, as a plan would pass them)
SMALL = {
    "nnunet": dict(base_features=4),
    "nnunet-resenc": dict(base_features=4),
    "umamba-bot": dict(base_features=8, blocks_per_stage=1),
    "umamba-enc": dict(base_features=8, blocks_per_stage=1),
    "swinunetr": dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), strides=[1, 2, 2]),
}


def needs_einops():
    pytest.importorskip("einops", reason="MONAI's UNETR and Swin-UNETR need einops")


def _strides(spatial_dims):
    """A plan's strides: four stages, anisotropic in 3D."""
    return [1, (2, 2, 1), 2, 2] if spatial_dims == 3 else [1, 2, 2, 2]


def _train_once(model, x, deep_supervision):
    out = model(x)
    outputs = out if deep_supervision else [out]
    assert isinstance(out, list) == deep_supervision
    sum(o.float().square().mean() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    return outputs


def test_every_baseline_is_a_preset():
    assert set(BASELINES) <= set(list_models())


@pytest.mark.parametrize("name", ["nnunet", "nnunet-resenc", "umamba-bot", "umamba-enc"])
@pytest.mark.parametrize("spatial_dims,deep_supervision", [(2, False), (3, True)])  # each: 2D and 3D, with and without
def test_unets_train_on_odd_sizes_with_plan_strides(name, spatial_dims, deep_supervision):
    torch.manual_seed(0)
    kwargs = dict(SMALL[name], strides=_strides(spatial_dims))
    model = build_model(name, spatial_dims, 2, 3, deep_supervision=deep_supervision, **kwargs)
    shape = SHAPES[spatial_dims]
    outputs = _train_once(model, torch.randn(1, 2, *shape), deep_supervision)
    if deep_supervision:  # highest resolution first, one per decoder level, covering the unpadded input
        scales = [(1, 1, 1), (2, 2, 1), (4, 4, 2)] if spatial_dims == 3 else [(1, 1), (2, 2), (4, 4)]
        expected = [tuple(-(-s // f) for s, f in zip(shape, scale)) for scale in scales]
        assert [tuple(o.shape[2:]) for o in outputs] == expected
    else:
        assert tuple(outputs[0].shape) == (1, 3, *shape)


def test_nnunet_follows_nnunets_configuration():
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD

    plain = build_model("nnunet", 3, 1, 3)
    assert plain.features == [32, 64, 128, 256, 320]
    assert build_model("nnunet", 2, 1, 3).features == [32, 64, 128, 256, 512, 512]

    def convs(module, kernel=3):
        return [m for m in module.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (kernel,) * 3]

    assert [len(convs(s)) for s in plain.net.encoder.stages] == [2] * 5
    assert [len(convs(s)) for s in plain.net.decoder.stages] == [2] * 4
    assert [c.out_channels for s in plain.net.encoder.stages for c in convs(s)] == [
        32, 32, 64, 64, 128, 128, 256, 256, 320, 320]
    assert all(c.bias is not None for c in convs(plain))
    norms = [m for m in plain.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(n.affine and n.eps == 1e-5 for n in norms)
    acts = [m for m in plain.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.01 for a in acts)

    resenc = build_model("nnunet-resenc", 3, 1, 3)
    blocks = [[m for m in s.modules() if isinstance(m, BasicBlockD)] for s in resenc.net.encoder.stages]
    assert [len(b) for b in blocks] == [1, 3, 4, 6, 6]
    assert [len(convs(s)) for s in resenc.net.decoder.stages] == [1] * 4
    assert [b[0].conv2.conv.out_channels for b in blocks] == [32, 64, 128, 256, 320]


def test_umamba_places_mamba_layers_at_the_bottleneck_or_every_encoder_stage():
    from usema.nn.mamba import MambaLayer
    from usema.nn.sema_block import SEMABlock

    def layers_per_stage(model):
        return [sum(isinstance(m, MambaLayer) for m in stage.modules()) for stage in model.encoder]

    bot = build_model("umamba-bot", 3, 1, 2)
    assert layers_per_stage(bot) == [0, 0, 0, 0, 1]
    assert isinstance(bot.encoder[-1][-1], MambaLayer) and bot.encoder[-1][-1].channels == 320
    enc = build_model("umamba-enc", 2, 1, 2, strides=[1, 2, 2])  # a plan's three stages
    assert layers_per_stage(enc) == [1, 1, 1]
    assert [stage[-1].channels for stage in enc.encoder] == [32, 64, 128]
    assert not any(isinstance(m, SEMABlock) for m in [*bot.modules(), *enc.modules()])


@pytest.mark.parametrize("spatial_dims,deep_supervision", [(2, False), (2, True), (3, True)])
def test_swinunetr_trains_on_odd_sizes(spatial_dims, deep_supervision):
    needs_einops()
    torch.manual_seed(0)
    model = build_model("swinunetr", spatial_dims, 2, 3, deep_supervision=deep_supervision, **SMALL["swinunetr"])
    shape = SHAPES[spatial_dims]
    outputs = _train_once(model, torch.randn(1, 2, *shape), deep_supervision)
    assert [tuple(o.shape) for o in outputs] == [(1, 3, *shape)]


@pytest.mark.parametrize("spatial_dims,shape,deep_supervision", [(3, (29, 32, 31), True), (2, (31, 29), False)])
def test_unetr_at_full_width_trains_on_odd_sizes(spatial_dims, shape, deep_supervision):
    needs_einops()
    torch.manual_seed(0)
    model = build_model("unetr", spatial_dims, 1, 2, deep_supervision=deep_supervision, patch_size=[30] * spatial_dims,
                        strides=[1, 2, 2])  # the plan's strides are accepted and ignored
    assert model.img_size == (32,) * spatial_dims and model.net.hidden_size == 768
    outputs = _train_once(model, torch.randn(1, 1, *shape), deep_supervision)
    assert [tuple(o.shape) for o in outputs] == [(1, 2, *shape)]


def test_unetr_runs_inputs_larger_than_its_size_as_tiles():
    needs_einops()
    torch.manual_seed(0)
    model = build_model("unetr", 2, 1, 2, patch_size=16, hidden_size=32, mlp_dim=64, num_heads=2,
                        feature_size=4).eval()
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


def test_baselines_refuse_1d_with_a_clear_error():
    for name in ["nnunet", "unetr", "swinunetr"]:
        with pytest.raises((NotImplementedError, ImportError), match="2D or 3D|einops"):
            build_model(name, 1, 1, 2)

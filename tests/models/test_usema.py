"""Every preset, 2D and 3D, odd sizes, with and without deep supervision; the controls; export."""

import pytest
import torch

from usema.errors import UsemaError
from usema.models import USEMA, build_model, list_models
from usema.nn.sema_block import SEMABlock

USEMA_PRESETS = [name for name in list_models() if name.startswith("usema")]
SMALL = dict(base_features=8, n_stages=4, blocks_per_stage=1, head_dim=8)


@pytest.mark.parametrize("name", USEMA_PRESETS)
@pytest.mark.parametrize("spatial_dims,shape", [(2, (37, 29)), (3, (13, 19, 11))])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_every_preset_trains_on_odd_sizes(name, spatial_dims, shape, deep_supervision):
    torch.manual_seed(0)
    model = build_model(name, spatial_dims, 2, 3, deep_supervision=deep_supervision, **SMALL)
    x = torch.randn(2, 2, *shape)
    out = model(x)
    if deep_supervision:
        assert isinstance(out, list) and len(out) == 3
        expected = [shape, tuple((s + 1) // 2 for s in shape), tuple((s + 3) // 4 for s in shape)]
        assert [tuple(o.shape[2:]) for o in out] == expected
        assert all(o.shape[:2] == (2, 3) for o in out)
        loss = sum(o.square().mean() for o in out)
    else:
        assert out.shape == (2, 3, *shape)
        loss = out.square().mean()
    loss.backward()
    last_head = f"heads.{len(model.heads) - 1}."
    for pname, p in model.named_parameters():
        if not deep_supervision and pname.startswith("heads.") and not pname.startswith(last_head):
            assert p.grad is None  # lower-resolution heads only serve deep supervision
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_default_network_follows_the_spec():
    model = build_model("usema", 3, 1, 3)
    assert model.features == [32, 64, 128, 256, 320]
    assert model.total_stride == (16, 16, 16)
    assert build_model("usema", 2, 1, 3).features == [32, 64, 128, 256, 512, 512]
    # DEFAULT_PLACEMENT: a SEMA block in each of the two deepest stages
    assert [sum(isinstance(m, SEMABlock) for m in stage) for stage in model.encoder] == [0, 0, 0, 1, 1]
    sema_blocks = [m for m in model.modules() if isinstance(m, SEMABlock)]
    assert all(b.mode == "sema" and b.window_size == 5 for b in sema_blocks)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 20, 17, 9)).shape == (1, 3, 20, 17, 9)


def test_anisotropic_strides_and_overrides():
    model = build_model("usema", 3, 1, 2, strides=[1, (2, 2, 1), 2], features=(8, 16, 32), head_dim=8,
                        deep_supervision=True)
    assert model.total_stride == (4, 4, 2)
    out = model(torch.randn(1, 1, 9, 10, 5))
    assert [tuple(o.shape[2:]) for o in out] == [(9, 10, 5), (5, 5, 5)]


def test_nosema_control_has_no_attention_parameters():
    control = build_model("usema-nosema", 2, 1, 3)
    method = build_model("usema", 2, 1, 3)
    assert not any(isinstance(m, (SEMABlock, torch.nn.LayerNorm, torch.nn.Linear)) for m in control.modules())
    conv_names = {n for n, _ in control.named_parameters()}
    assert conv_names < {n for n, _ in method.named_parameters()}  # same conv network, SEMA blocks removed


def test_a_network_setting_cannot_turn_one_preset_into_another():
    # a plan shared by several models may carry sema_per_stage for usema; the control must not take it
    with pytest.raises(UsemaError, match="fixes sema_per_stage=0"):
        build_model("usema-nosema", 2, 1, 3, sema_per_stage=[0, 1, 1])
    with pytest.raises(UsemaError, match="fixes attention='full'"):
        build_model("usema-full", 2, 1, 3, attention="sema")
    with pytest.raises(UsemaError, match="layout"):
        build_model("umamba-enc", 2, 1, 3, sema_per_stage=1)
    # a setting equal to the preset's own, or one the preset leaves open, is fine
    assert build_model("usema-nosema", 2, 1, 3, sema_per_stage=0, base_features=8) is not None


@pytest.mark.parametrize("name,mode", [("usema-window", "window"), ("usema-mean", "mean"),
                                       ("usema-full", "full"), ("usema-linear", "linear")])
def test_ablations_change_only_the_attention(name, mode):
    blocks = [m for m in build_model(name, 2, 1, 3, **SMALL).modules() if isinstance(m, SEMABlock)]
    assert blocks and all(b.mode == mode for b in blocks)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="stage 0"):
        USEMA(2, 1, 2, strides=[2, 2])
    with pytest.raises(ValueError, match="one per stage"):
        USEMA(2, 1, 2, strides=[1, 2, 2], features=[8, 16])
    from usema.errors import UsemaError

    with pytest.raises(UsemaError, match="unknown model"):
        build_model("not-a-model", 2, 1, 2)


def test_inputs_the_network_cannot_take_are_named():
    model = build_model("usema", 3, 1, 2, **SMALL).eval()  # total stride 8 on every axis
    with pytest.raises(ValueError, match=r"input of shape \(1, 13, 19, 11\): a 3D network takes \(batch, channels, "
                                         r"3 spatial axes\); add the batch axis with x\[None\]"):
        model(torch.randn(1, 13, 19, 11))
    with pytest.raises(ValueError, match=r"input of spatial size \(7, 8, 5\): padded to the total stride "
                                         r"\(8, 8, 8\) it leaves the deepest stage a single voxel"):
        model(torch.randn(1, 1, 7, 8, 5))
    assert model(torch.randn(1, 1, 7, 9, 5)).shape == (1, 2, 7, 9, 5)  # one axis past the stride is enough


def test_placements_by_name_fit_any_stage_count():
    from usema.models.usema import blocks_per_placement

    assert blocks_per_placement("all", 4) == [1, 1, 1, 1]
    assert blocks_per_placement("bottleneck", 6) == [0, 0, 0, 0, 0, 1]
    assert blocks_per_placement("deepest-2", 4) == [0, 0, 1, 1]
    assert blocks_per_placement("from-1", 5) == [0, 1, 1, 1, 1]
    assert blocks_per_placement([0, 2, 1], 3) == [0, 2, 1]
    for bad in ("deepest-5", "from-4", "middle", "deepest-x"):
        with pytest.raises(ValueError, match="placement"):
            blocks_per_placement(bad, 4)
    model = build_model("usema", 3, 1, 2, sema_per_stage="deepest-2", n_stages=4, **{k: v for k, v in SMALL.items() if k != "n_stages"})
    assert [sum(isinstance(m, SEMABlock) for m in stage) for stage in model.encoder] == [0, 0, 1, 1]


def test_stage_windows_and_the_attention_plan():
    model = build_model("usema", 3, 1, 2, strides=[1, 2, 2, 2], features=(8, 16, 32, 32), head_dim=8,
                        sema_per_stage="all", stage_windows=[None, [5, 7, 5], [5, 7, 5], 7])
    plan = model.attention_plan((40, 56, 40))
    assert plan == [
        "stage 0: 8x12x8 windows of 5x5x5 on the 40x56x40 map + mean (last windows padded, keys masked)",
        "stage 1: 4x4x4 windows of 5x7x5 on the 20x28x20 map + mean",
        "stage 2: 2x2x2 windows of 5x7x5 on the 10x14x10 map + mean",
        "stage 3: one window covers the 5x7x5 map: exact softmax over all 175 tokens + mean",  # 7^3 shrunk
    ]


def test_network_padding_is_handed_to_sema_as_not_data():
    model = build_model("usema", 3, 1, 2, strides=[1, 2, 2], features=(8, 16, 16), head_dim=8,
                        sema_per_stage="all")
    seen = []
    for block in (m for m in model.modules() if isinstance(m, SEMABlock)):
        block.register_forward_pre_hook(lambda module, args: seen.append((tuple(args[0].shape[2:]), args[1])))
    with torch.no_grad():
        model(torch.randn(1, 1, 9, 13, 4))
    # padded to 12x16x4 (total stride 4); the data covers 9x13x4, 5x7x2, 3x4x1
    assert seen == [((12, 16, 4), (9, 13, 4)), ((6, 8, 2), (5, 7, 2)), ((3, 4, 1), (3, 4, 1))]


def test_kernel_sizes_decoder_convs_and_the_deep_supervision_switch():
    model = USEMA(3, 1, 2, strides=[1, (1, 2, 2), 2], features=(8, 16, 16), kernel_size=[(1, 3, 3), 3, 3],
                  decoder_convs=[3, 1], blocks_per_stage=1, head_dim=8, deep_supervision=True)
    assert model.encoder[0][0].conv1.conv.weight.shape[2:] == (1, 3, 3)
    assert [len(up.conv_block) for up in model.decoder] == [3, 1]
    assert model.decoder[1].conv_block[0].conv.weight.shape[2:] == (1, 3, 3)
    x = torch.randn(1, 1, 6, 10, 10)
    assert [tuple(o.shape[2:]) for o in model(x)] == [(6, 10, 10), (6, 5, 5)]
    model.deep_supervision = False
    assert model.decoder.deep_supervision is False and model(x).shape == (1, 2, 6, 10, 10)
    # the default decoder is MONAI's two-conv up block, so existing checkpoints keep their parameter names
    default = USEMA(2, 1, 2, n_stages=3, base_features=8, head_dim=8)
    assert "decoder.0.conv_block.conv2.conv.weight" in default.state_dict()
    with pytest.raises(ValueError, match="kernel sizes must be odd"):
        USEMA(2, 1, 2, n_stages=3, kernel_size=2)
    with pytest.raises(ValueError, match="decoder_convs must be at least 1"):
        USEMA(2, 1, 2, n_stages=3, decoder_convs=0)


def _sema_layout(network):
    return [sum(isinstance(m, SEMABlock) for m in stage) for stage in network.encoder]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_builder_builds_the_default_placement(spatial_dims, monkeypatch):
    from usema.models import summary
    from usema.models.spec import NetworkSpec
    from usema.models.summary import count_parameters
    from usema.models.usema import DEFAULT_PLACEMENT, blocks_per_placement
    from usema.planning.network import network_settings_for

    settings = dict(base_features=8, max_features=32, blocks_per_stage=1, head_dim=8)
    direct = USEMA(spatial_dims, 1, 3, n_stages=4, **settings)
    preset = build_model("usema", spatial_dims, 1, 3, n_stages=4, **settings)
    strides = [[1] * spatial_dims] + [[2] * spatial_dims] * 3
    planned_settings = network_settings_for("usema", spatial_dims, [32] * spatial_dims, strides, settings)
    assert planned_settings["sema_per_stage"] == DEFAULT_PLACEMENT  # plans name it, so old plans keep theirs
    planned = NetworkSpec("usema", spatial_dims, 1, 3, planned_settings).build()
    expected = blocks_per_placement(DEFAULT_PLACEMENT, 4)
    assert expected == [0, 0, 1, 1]
    for network in (direct, preset, planned):
        assert _sema_layout(network) == expected
        assert count_parameters(network) == count_parameters(direct)
    # `usema models` counts the network a plan trains, not a SEMA block per stage
    monkeypatch.setattr(summary, "list_models", lambda: ["usema"])
    row = summary.model_table(in_channels=1, num_classes=3)[0]
    assert row[f"params_{spatial_dims}d"] == count_parameters(USEMA(spatial_dims, 1, 3))
    assert row[f"params_{spatial_dims}d"] < count_parameters(USEMA(spatial_dims, 1, 3, sema_per_stage="all"))

"""USEMAnnUNet: nnU-Net's residual-encoder arguments mapped onto USEMA, and what it refuses."""

import pytest
import torch
from torch import nn

from usema.errors import UsemaError
from usema.integrations.nnunet.network import USEMAnnUNet, network_spec, usema_arguments
from usema.nn.sema_block import SEMABlock


def arch_kwargs(**changes) -> dict:
    """A 3-stage anisotropic 3D ResEnc configuration with its classes imported, as nnU-Net hands it over."""
    kwargs = dict(
        n_stages=3, features_per_stage=[8, 16, 32], conv_op=nn.Conv3d,
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        n_blocks_per_stage=[1, 2, 2], n_conv_per_stage_decoder=[1, 1], conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        sema_per_stage=[0, 1, 1], head_dim=8,
    )
    kwargs.update(changes)
    return kwargs


def test_resenc_arguments_give_usema_their_layout_and_switchable_deep_supervision():
    torch.manual_seed(0)
    net = USEMAnnUNet(input_channels=2, num_classes=3, deep_supervision=True, **arch_kwargs())
    assert net.spatial_dims == 3 and net.features == [8, 16, 32] and net.total_stride == (2, 4, 4)
    assert [sum(isinstance(m, SEMABlock) for m in stage) for stage in net.encoder] == [0, 1, 1]
    assert [len(stage) for stage in net.encoder] == [1, 3, 3]  # residual blocks, then SEMA blocks
    assert net.encoder[0][0].conv1.conv.weight.shape[2:] == (1, 3, 3)
    assert net.decoder[-1].conv_block[0].conv.weight.shape[2:] == (1, 3, 3)  # the kernel of the stage it returns to
    assert [len(up.conv_block) for up in net.decoder] == [1, 1]

    x = torch.randn(1, 2, 5, 12, 12)
    outputs = net(x)
    # one output per decoder stage, as nnU-Net's deep supervision expects: n_stages - 1, highest resolution first
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 5, 12, 12), (1, 3, 5, 6, 6)]
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    assert net.deep_supervision is False
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 5, 12, 12)
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.encoder.parameters())


def test_a_2d_configuration_and_the_defaults_nnunet_leaves_out():
    kwargs = arch_kwargs(conv_op=nn.Conv2d, norm_op=nn.InstanceNorm2d, kernel_sizes=3, strides=[1, 2, 2],
                         n_blocks_per_stage=1, n_conv_per_stage_decoder=2)
    for optional in ("conv_bias", "dropout_op", "dropout_op_kwargs", "sema_per_stage", "head_dim"):
        kwargs.pop(optional)
    usema = usema_arguments(kwargs)
    assert usema["spatial_dims"] == 2 and usema["decoder_convs"] == 2 and "sema_per_stage" not in usema
    net = USEMAnnUNet(input_channels=1, num_classes=2, head_dim=8, **kwargs)  # nnU-Net 2.3 passes no deep_supervision
    assert net.deep_supervision is False and net(torch.randn(1, 1, 9, 10)).shape == (1, 2, 9, 10)


class BottleneckD(nn.Module):
    """Stands in for dynamic-network-architectures' bottleneck block (only its name is looked at)."""


@pytest.mark.parametrize("changes,message", [
    ({"norm_op": nn.BatchNorm3d}, "norm_op=BatchNorm3d"),
    ({"norm_op_kwargs": {"eps": 1e-5, "affine": False}}, "instance norm"),
    ({"norm_op_kwargs": {"eps": 1e-3, "affine": True}}, "instance norm"),
    ({"nonlin": nn.ReLU}, "nonlin=ReLU"),
    ({"nonlin_kwargs": {"negative_slope": 0.2}}, "LeakyReLU(0.01)"),
    ({"dropout_op": nn.Dropout3d, "dropout_op_kwargs": {"p": 0.2}}, "no dropout"),
    ({"block": BottleneckD, "bottleneck_channels": [4, 8, 16]}, "block=BottleneckD"),
    ({"stem_channels": 16}, "stem_channels=16"),
    ({"conv_op": nn.Linear}, "conv_op=Linear"),
    ({"strides": [1, 2]}, "strides has 2 entries"),
    ({"features": [4, 8, 16]}, "features would override"),
])
def test_what_usema_cannot_honour_is_refused_by_name(changes, message):
    with pytest.raises(UsemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        usema_arguments(arch_kwargs(**changes))


def test_missing_resenc_arguments_are_named():
    kwargs = arch_kwargs()
    del kwargs["kernel_sizes"], kwargs["n_conv_per_stage_decoder"]
    with pytest.raises(UsemaError, match="lack kernel_sizes, n_conv_per_stage_decoder"):
        usema_arguments(kwargs)


def test_zero_dropout_and_unused_bias_are_accepted():
    usema = usema_arguments(arch_kwargs(dropout_op=nn.Dropout3d, dropout_op_kwargs={"p": 0.0}, conv_bias=False))
    assert usema["kernel_size"] == [[1, 3, 3], [3, 3, 3], [3, 3, 3]] and usema["blocks_per_stage"] == [1, 2, 2]


def test_the_network_is_the_usema_preset_of_its_attention_mode_built_from_its_description():
    from usema.models.summary import count_parameters

    spec = network_spec(2, 3, arch_kwargs(attention="window", window_size=3))
    assert (spec.name, spec.spatial_dims, spec.in_channels, spec.num_classes) == ("usema-window", 3, 2, 3)
    assert spec.network_settings["features"] == [8, 16, 32] and spec.network_settings["head_dim"] == 8
    assert network_spec(1, 2, arch_kwargs()).name == "usema"  # no attention named: SEMA's own
    torch.manual_seed(0)
    net = USEMAnnUNet(input_channels=2, num_classes=3, attention="window", window_size=3, **arch_kwargs())
    assert count_parameters(net) == count_parameters(spec.build())
    with pytest.raises(UsemaError, match="model 'usema' has no network setting 'head_dimm'"):
        USEMAnnUNet(input_channels=1, num_classes=2, head_dimm=8, **arch_kwargs())

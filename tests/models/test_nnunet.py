"""nnU-Net's UNets (dynamic-network-architectures) configured from our settings as nnU-Net configures them."""

import pytest
import torch
from torch import nn

from usema.models import build_model

pytest.importorskip(
    "dynamic_network_architectures", reason="nnU-Net baselines need dynamic-network-architectures"
)


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
        32,
        32,
        64,
        64,
        128,
        128,
        256,
        256,
        320,
        320,
    ]
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


def test_per_stage_settings_are_broadcast_or_checked():
    net = build_model(
        "nnunet",
        2,
        1,
        2,
        strides=[1, (2, 1), 2],
        features=[4, 8, 16],
        kernel_size=3,
        decoder_convs=[1, 2],
        blocks_per_stage=1,
    )
    assert (
        net.strides == [(1, 1), (2, 1), (2, 2)] and net.features == [4, 8, 16] and net.total_stride == (4, 2)
    )
    assert [len(stage.convs) for stage in net.net.decoder.stages] == [1, 2]
    out = net(torch.randn(1, 1, 9, 7))
    assert out.shape == (1, 2, 9, 7)
    with pytest.raises(ValueError, match="length 3"):
        build_model("nnunet", 2, 1, 2, strides=[1, 2, 2], features=[4, 8])

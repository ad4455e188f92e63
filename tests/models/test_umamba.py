"""U-Mamba on our residual UNet: Mamba layers in the token-mixer slot, placed by the layout."""

import pytest

from usema.models import build_model
from usema.models.umamba import mamba_per_stage

pytest.importorskip("mambapy", reason="U-Mamba baselines need mambapy")


def test_layouts_place_one_layer_at_the_bottleneck_or_after_every_stage():
    assert mamba_per_stage("bottleneck", 4) == [0, 0, 0, 1]
    assert mamba_per_stage("encoder", 3) == [1, 1, 1]
    with pytest.raises(ValueError, match="unknown U-Mamba layout"):
        mamba_per_stage("decoder", 3)


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

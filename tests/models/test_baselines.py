"""The baselines through the registry (models/baselines.py): every one a preset, the conv UNets on odd sizes
with a plan's strides, 1D refused. Each network's own tests: test_nnunet, test_umamba, test_monai_nets."""

import pytest
import torch

from usema.models import build_model, list_models

pytest.importorskip("dynamic_network_architectures", reason="nnU-Net baselines need dynamic-network-architectures")
pytest.importorskip("mambapy", reason="U-Mamba baselines need mambapy")

BASELINES = ["nnunet", "nnunet-resenc", "swinunetr", "umamba-bot", "umamba-enc", "unetr"]
SHAPES = {2: (27, 21), 3: (11, 13, 7)}
# small widths per baseline (network settings, as a plan passes them)
SMALL = {
    "nnunet": dict(base_features=4),
    "nnunet-resenc": dict(base_features=4),
    "umamba-bot": dict(base_features=8, blocks_per_stage=1),
    "umamba-enc": dict(base_features=8, blocks_per_stage=1),
}


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


def test_baselines_refuse_1d_with_a_clear_error():
    for name in ["nnunet", "unetr", "swinunetr"]:
        with pytest.raises((NotImplementedError, ImportError), match="2D or 3D|einops"):
            build_model(name, 1, 1, 2)

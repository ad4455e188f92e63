"""The deep-supervision Dice + cross-entropy loss: level weights and downsampled labels."""

import pytest
import torch
from monai.losses import DiceCELoss

from usema.training.losses import DiceCEDeepSupervisionLoss, deep_supervision_weights


def test_deep_supervision_weights_halve_and_drop_the_lowest_level():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]
    weights = deep_supervision_weights(4)
    assert weights == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert sum(weights) == pytest.approx(1.0)


def test_loss_weights_every_level_against_downsampled_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8)).float()
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    dice_ce = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
    )
    low = labels[:, :, 1::2, 1::2, 1::2]  # nearest-exact halving keeps the voxel right of each pair centre
    expected = (dice_ce(outputs[0], labels) + 0.5 * dice_ce(outputs[1], low)) / 1.5
    loss = DiceCEDeepSupervisionLoss()
    assert float(loss(outputs, labels)) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(outputs[0], labels)) == pytest.approx(float(dice_ce(outputs[0], labels)), rel=1e-6)

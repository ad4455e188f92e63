"""The deep-supervision Dice + cross-entropy loss: MONAI's numbers, level weights and downsampled labels, and
nnU-Net's ignore label, whose voxels move neither term."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCELoss

from usema.training.losses import DiceCEDeepSupervisionLoss, DiceCELoss, deep_supervision_weights

IGNORE = 3


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
    dice_ce = MonaiDiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
    )
    low = labels[:, :, 1::2, 1::2, 1::2]  # nearest-exact halving keeps the voxel right of each pair centre
    expected = (dice_ce(outputs[0], labels) + 0.5 * dice_ce(outputs[1], low)) / 1.5
    loss = DiceCEDeepSupervisionLoss()
    assert float(loss(outputs, labels)) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(outputs[0], labels)) == pytest.approx(float(dice_ce(outputs[0], labels)), rel=1e-6)


def _example(seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(2, 3, 6, 5, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 6, 5, 4))
    labels[:, :, :2] = IGNORE  # two slabs without annotation
    return logits, labels.float()


def test_ignored_voxels_get_no_gradient_and_do_not_change_the_loss():
    logits, labels = _example()
    loss = DiceCELoss(IGNORE)(logits, labels)
    loss.backward()
    assert torch.all(logits.grad[:, :, :2] == 0) and torch.any(logits.grad[:, :, 2:] != 0)

    changed = logits.detach().clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2]) * 10
    torch.testing.assert_close(DiceCELoss(IGNORE)(changed, labels), loss.detach())


def test_the_cross_entropy_term_is_torchs_with_ignore_index_and_the_dice_that_of_the_rest():
    logits, labels = _example(1)
    loss = DiceCELoss(IGNORE)(logits, labels)
    cross_entropy = F.cross_entropy(logits, labels[:, 0].long(), ignore_index=IGNORE)
    kept = labels[:, :, 2:]  # the annotated part alone, where the loss without an ignore label applies
    dice = DiceCELoss()(logits[:, :, 2:], kept) - F.cross_entropy(logits[:, :, 2:], kept[:, 0].long())
    torch.testing.assert_close(loss, cross_entropy + dice)


def test_without_ignored_voxels_both_losses_agree():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 1, 8, 8)).float()
    torch.testing.assert_close(DiceCELoss(IGNORE)(logits, labels), DiceCELoss()(logits, labels))


def test_deep_supervision_keeps_the_ignore_label_at_every_level():
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (1, 1, 8, 8)).float()
    labels[..., :4, :] = IGNORE
    outputs = [torch.randn(1, 3, 8, 8, requires_grad=True), torch.randn(1, 3, 4, 4, requires_grad=True)]
    DiceCEDeepSupervisionLoss(IGNORE)(outputs, labels).backward()
    assert torch.all(outputs[0].grad[..., :4, :] == 0) and torch.all(outputs[1].grad[..., :2, :] == 0)

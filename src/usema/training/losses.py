"""The training loss: Dice + cross-entropy over every deep-supervision output, weighted as nnU-Net does, with
the voxels of nnU-Net's ignore label left out of both terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from torch import nn

SMOOTH = 1e-5


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1/2^i per level (highest resolution first), the lowest level 0, summing to 1."""
    weights = [0.5**i for i in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DiceCELoss(nn.Module):
    """Soft Dice of the foreground classes plus cross-entropy, from logits (B, K, *S) and labels (B, 1, *S).

    The numbers of MONAI's DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
    smooth 1e-5): the Dice of each foreground class sums over the batch and the voxels, 1 - (2 |P G| + s) /
    (|P| + |G| + s), averaged over the classes, and the cross-entropy is averaged over the voxels. Voxels
    whose label is `ignore_label` count in neither (nnU-Net masks them out of both terms the same way).
    """

    def __init__(self, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one output against labels of its resolution."""
        logits = logits.float()
        labels = target[:, 0].long()
        keep = None
        if self.ignore_label is not None:
            keep = labels != self.ignore_label
            labels = torch.where(keep, labels, torch.zeros_like(labels))
        cross_entropy = F.cross_entropy(logits, labels, reduction="none")
        probabilities = torch.softmax(logits, dim=1)
        one_hot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
        if keep is not None:
            cross_entropy = (cross_entropy * keep).sum() / keep.sum().clamp(min=1)
            probabilities = probabilities * keep.unsqueeze(1)
            one_hot = one_hot * keep.unsqueeze(1)
        else:
            cross_entropy = cross_entropy.mean()
        axes = [0, *range(2, logits.ndim)]
        foreground, reference = probabilities[:, 1:], one_hot[:, 1:]
        overlap = (foreground * reference).sum(axes)
        sizes = foreground.sum(axes) + reference.sum(axes)
        dice = 1.0 - (2.0 * overlap + SMOOTH) / (sizes + SMOOTH)
        return dice.mean() + cross_entropy


class DiceCEDeepSupervisionLoss(DeepSupervisionLoss):
    """`DiceCELoss` over every deep supervision level, weighted by `deep_supervision_weights`; MONAI's
    DeepSupervisionLoss downsamples the targets by nearest neighbour (the ignore label keeps its value)."""

    def __init__(self, ignore_label: int | None = None):
        super().__init__(DiceCELoss(ignore_label))

    def get_weights(self, levels: int = 1) -> list[float]:
        """The weights of `levels` outputs (MONAI calls this with the number of outputs)."""
        return deep_supervision_weights(max(1, levels))

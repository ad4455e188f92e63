"""The training loss: Dice + cross-entropy over every deep-supervision output, weighted as nnU-Net does."""

from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1/2^i per level (highest resolution first), the lowest level 0, normalised to sum 1."""
    weights = [0.5**i for i in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DiceCEDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's Dice + cross-entropy (softmax, one-hot targets) over every deep supervision level, weighted by
    `deep_supervision_weights`; targets are downsampled by nearest neighbour. Takes float (B, 1, *S) labels."""

    def __init__(self):
        dice_ce = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        super().__init__(dice_ce)

    def get_weights(self, levels: int = 1) -> list[float]:
        """The weights of `levels` outputs (MONAI calls this with the number of outputs)."""
        return deep_supervision_weights(max(1, levels))

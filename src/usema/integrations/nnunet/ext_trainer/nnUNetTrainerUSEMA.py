"""nnUNetTrainerUSEMA where nnU-Net looks for trainers: put this folder in `nnUNet_extTrainer` (nnU-Net 2.8+) or
link this file into nnunetv2/training/nnUNetTrainer/ (any nnU-Net 2.3+)."""

from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA

__all__ = ["nnUNetTrainerUSEMA"]

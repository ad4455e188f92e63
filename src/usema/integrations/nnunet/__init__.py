"""USEMA inside nnU-Net v2 without forking it: a network nnU-Net builds from its plans, a plans converter, a trainer.

- `convert_plans` (`usema nnunet-plans`): an nnU-Net residual-encoder plans file -> one that builds USEMA.
- `network.USEMAnnUNet`: the class those plans name; nnU-Net's `get_network_from_plans` builds it.
- `trainer.nnUNetTrainerUSEMA` (imports nnU-Net): builds USEMA from plain residual-encoder plans too;
  `ext_trainer_folder()` is the folder to put in `nnUNet_extTrainer` so that `-tr nnUNetTrainerUSEMA` finds it.

Importing this package does not import nnU-Net.
"""

from __future__ import annotations

from pathlib import Path

from usema.integrations.nnunet.plans import convert_plans, usema_architecture

__all__ = ["convert_plans", "ext_trainer_folder", "usema_architecture"]


def ext_trainer_folder() -> Path:
    """The folder holding the one-line trainer module for nnU-Net's `nnUNet_extTrainer` (nnU-Net 2.8+), or to
    link into nnunetv2/training/nnUNetTrainer/ (older versions)."""
    return Path(__file__).resolve().parent / "ext_trainer"

"""nnUNetTrainerUSEMA: nnU-Net's own trainer, with USEMA as its network also for plain residual-encoder plans.

Converted plans (`usema nnunet-plans`) need no trainer of ours: nnU-Net's default trainer builds the network they
name. This trainer builds USEMA from unconverted residual-encoder plans as well (SEMA blocks where usema's own
plans put them, DEFAULT_PLACEMENT; convert the plans for another placement). It imports nnU-Net; nnU-Net finds
it by name (`-tr nnUNetTrainerUSEMA`) through `ext_trainer_folder()` (see usema.integrations.nnunet).
"""

from __future__ import annotations

from typing import Any

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from usema.integrations.nnunet.network import NETWORK_CLASS_NAME
from usema.integrations.nnunet.plans import usema_architecture


class nnUNetTrainerUSEMA(nnUNetTrainer):
    """nnU-Net's trainer (schedule, loss, augmentation, validation unchanged) whose network is USEMA."""

    @staticmethod
    def build_network_architecture(plans_manager: Any, configuration_manager: Any, num_input_channels: Any,
                                   num_output_channels: Any, *legacy: Any,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """USEMA for the configuration, called as nnU-Net 2.7+ does, (plans_manager, configuration_manager,
        num_input_channels, num_output_channels, enable_deep_supervision), or as 2.3-2.6 did,
        (architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import, num_input_channels,
        num_output_channels, enable_deep_supervision); the last positionally or by name in both."""
        if isinstance(plans_manager, str):  # the 2.3-2.6 form: the architecture comes in three pieces
            architecture = {"network_class_name": plans_manager, "arch_kwargs": configuration_manager,
                            "_kw_requires_import": num_input_channels}
            num_input_channels, num_output_channels, *legacy = num_output_channels, *legacy
        else:
            architecture = {"network_class_name": configuration_manager.network_arch_class_name,
                            "arch_kwargs": configuration_manager.network_arch_init_kwargs,
                            "_kw_requires_import": configuration_manager.network_arch_init_kwargs_req_import}
        if legacy:
            (enable_deep_supervision,) = legacy
        if architecture["network_class_name"] != NETWORK_CLASS_NAME:
            architecture = usema_architecture(architecture)
        return get_network_from_plans(
            architecture["network_class_name"], dict(architecture["arch_kwargs"]), architecture["_kw_requires_import"],
            num_input_channels, num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision,
        )

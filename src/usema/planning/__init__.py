"""usema.planning: the plan (plans.json), the contract between the stages. The fingerprint and the planner
make it for a device (`plan_for_device`, which `usema.plan` and `usema plan` call with the trainer's timing);
`Plans` is how every later stage reads it (see docs/architecture.md). Planning imports nothing from training.
"""

import warnings
from typing import Any

from usema.planning.device import plan_for_device
from usema.planning.estimate import TrainingEstimate
from usema.planning.network import network_for_patch
from usema.planning.plans import PLANS_NAME, DatasetInfo, Normalization, Plans
from usema.planning.settings import TrainingSettings

__all__ = [
    "PLANS_NAME",
    "DatasetInfo",
    "Normalization",
    "Plans",
    "TrainingEstimate",
    "TrainingSettings",
    "network_for_patch",
    "plan_for_device",
]


def __getattr__(name: str) -> Any:
    """`usema.planning.plan_dataset`, deprecated: the planner without the device's profile (no compact CPU
    network, no time budget, no estimate), now `usema.planning.planner.plan_dataset`."""
    if name == "plan_dataset":
        warnings.warn(
            "usema.planning.plan_dataset is deprecated and will be removed in the next release: plan with "
            "usema.plan (the device's plan, as `usema plan` makes it); the planner without the device's profile "
            "is usema.planning.planner.plan_dataset",
            FutureWarning,
            stacklevel=2,
        )
        from usema.planning.planner import plan_dataset

        return plan_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

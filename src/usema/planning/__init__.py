"""usema.planning: the plan (plans.json), the contract between the stages. The fingerprint and the planner
make it; `Plans` is how every later stage reads it (see docs/architecture.md)."""

from usema.planning.planner import plan_dataset
from usema.planning.plans import PLANS_NAME, DatasetInfo, Plans
from usema.planning.settings import TrainingSettings

__all__ = ["PLANS_NAME", "DatasetInfo", "Plans", "TrainingSettings", "plan_dataset"]

"""Plan values that the command line, training, inference and evaluation read beyond the core keys, in one
place (the typed plans object of issue 11 is their future home): the ignore label, the device a plan was made
for, the edits it was made with, and the sizes that time estimates need."""

from __future__ import annotations

from typing import Any

import numpy as np

# Where a plan records what it was made for (device, memory budget) and with which --plan edits.
PLANNED_FOR = "planned_for"


def ignore_label_of(plans: dict[str, Any]) -> int | None:
    """The training-class value of nnU-Net's "ignore" label (= num_classes); None without one."""
    value = plans["dataset"].get("ignore_label")
    return None if value is None else int(value)


def planned_device(plans: dict[str, Any]) -> str | None:
    """The kind of device the plan was made for, "cpu" or "cuda" (None for plans that do not say)."""
    return plans.get(PLANNED_FOR, {}).get("device")


def plan_edits_of(plans: dict[str, Any]) -> dict[str, Any]:
    """The --plan KEY=JSON edits the plan was made with ({} for none)."""
    return dict(plans.get(PLANNED_FOR, {}).get("plan_edits") or {})


def record_planning(plans: dict[str, Any], **facts: Any) -> None:
    """Add `facts` (e.g. plan_edits, estimate) to what the plan records of its making."""
    plans.setdefault(PLANNED_FOR, {}).update(facts)


def median_shape_at_target(plans: dict[str, Any]) -> list[int]:
    """The median image shape at the plan's target spacing (the patch for plans without a fingerprint)."""
    fingerprint = plans.get("fingerprint") or {}
    if not fingerprint.get("shapes"):
        return [int(s) for s in plans["patch_size"]]
    shapes = np.asarray(fingerprint["shapes"], dtype=float) * np.asarray(fingerprint["spacings"], dtype=float)
    return [max(1, int(round(s))) for s in np.median(shapes / np.asarray(plans["target_spacing"]), axis=0)]


def validated_cases_per_epoch(plans: dict[str, Any], folds: int = 5) -> int:
    """How many held-out cases each epoch validates: a fold's share of the cases, at most val_max_cases."""
    held_out = max(1, len(plans["dataset"]["cases"]) // folds)
    limit = plans["training"].get("val_max_cases")
    return min(held_out, int(limit)) if limit else held_out

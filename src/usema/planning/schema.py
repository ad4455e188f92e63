"""What a plans.json must hold: checked on every load, so that a user's edit that breaks it is named; and how
plans of an older version are read.

Versions: 1 named the network's keyword arguments `model.overrides`; 2 names them `model.network_settings`;
3 came with DEFAULT_PLACEMENT as the USEMA class's own default: a plan of an earlier version that names no SEMA
placement was trained with the class default of its time, a block in every stage, which the migration writes
into it. 4 records the label files' value of each training class (`dataset.label_values`) and of the ignore label
(`dataset.ignore_value`). Plans before version 4 were trained on classes that are the file values (semantic) or
on 0/1 masks whatever the files held (binary), and predicted those: they are read with the values
[0, 1, ..., K-1] and an ignore value equal to their ignore label, which keeps what they predict.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from usema.data.datasets import LABEL_MODES
from usema.errors import DataError, UsemaError
from usema.models.spec import current_layout

PLANS_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
# label modes whose classes have label file values (instance labels hold instance ids)
VALUED_LABEL_MODES = ("semantic", "binary")
NORMALIZATION_SCHEMES = ("zscore_per_image", "ct", "none", "per_channel")
# The SEMA placement of plans before version 3 that name none: the USEMA class's default then.
EARLIER_PLACEMENT = "all"


def migrate_plans(plans: Any) -> Any:
    """Plans of an older version in the current format (a copy; anything else is returned as it is, for
    `validate_plans` to name what is wrong)."""
    if not isinstance(plans, dict) or plans.get("version") not in READABLE_VERSIONS[:-1]:
        return plans
    plans = copy.deepcopy(plans)
    model, dataset = plans.get("model"), plans.get("dataset")
    if isinstance(model, dict) and isinstance(dataset, dict):
        plans["model"] = _migrate_model(model, dataset.get("spatial_dims"), plans["version"])
    if isinstance(dataset, dict) and isinstance(dataset.get("num_classes"), int):
        if dataset.get("label_mode") in VALUED_LABEL_MODES:
            dataset.setdefault("label_values", list(range(dataset["num_classes"])))
        if dataset.get("ignore_label") is not None:
            dataset.setdefault("ignore_value", dataset["ignore_label"])
    plans["version"] = PLANS_VERSION
    return plans


def migrate_network_description(description: Any, plans_version: int) -> Any:
    """A checkpoint's network description ({name, spatial_dims, ..., network_settings}: a NetworkSpec's
    `to_dict`) made with plans of `plans_version`, in the current form (a copy; anything malformed is returned
    as it is, for `NetworkSpec.from_dict` to name)."""
    if not isinstance(description, dict) or plans_version >= PLANS_VERSION:
        return description
    return _migrate_model(description, description.get("spatial_dims"), plans_version)


def _migrate_model(model: dict[str, Any], spatial_dims: Any, version: int) -> dict[str, Any]:
    """A plan's "model" section or a network description of plans `version`, in the current form: its keys
    under their current names (`usema.models.spec.current_layout`: version 1 named the network settings
    "overrides"), and, before version 3, the SEMA placement it was built with written out where it names none."""
    model = current_layout(model)
    settings, name = model.get("network_settings", {}), model.get("name")
    if version < 3 and isinstance(settings, dict) and isinstance(name, str) and spatial_dims in (1, 2, 3):
        from usema.planning.windows import placement_settings

        try:
            earlier = placement_settings(name, spatial_dims, settings, EARLIER_PLACEMENT)
        except UsemaError:  # an unknown model: building it names the problem
            earlier = {}
        if earlier:
            model["network_settings"] = {**settings, **earlier}
    return model


def is_count(value: Any, low: int = 1) -> bool:
    """Whether `value` is an integer (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_positive(value: Any) -> bool:
    """Whether `value` is a finite number (not a bool) above 0: JSON's NaN and Infinity are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def validate_plans(plans: Any, source: str | Path) -> None:
    """Raise DataError(source, ...) naming the first key of (current-version) plans that is missing or has the
    wrong type or value."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise DataError(source, f"plans key {key!r} {what}")

    need(isinstance(plans, dict), "(top level)", "must be a JSON object")
    for key in (
        "version",
        "dataset",
        "target_spacing",
        "normalization",
        "patch_size",
        "batch_size",
        "model",
        "training",
    ):
        need(key in plans, key, "is missing")
    need(plans["version"] == PLANS_VERSION, "version", f"must be one of {', '.join(map(str, READABLE_VERSIONS))}")
    info = plans["dataset"]
    need(isinstance(info, dict), "dataset", "must be an object")
    for key in (
        "path",
        "format",
        "spatial_dims",
        "num_channels",
        "label_mode",
        "num_classes",
        "cases",
        "labels",
    ):
        need(key in info, f"dataset.{key}", "is missing")
    dims = info["spatial_dims"]
    need(dims in (2, 3), "dataset.spatial_dims", "must be 2 or 3")
    need(is_count(info["num_channels"]), "dataset.num_channels", "must be an integer >= 1")
    need(is_count(info["num_classes"], 2), "dataset.num_classes", "must be an integer >= 2")
    need(
        info.get("ignore_label") in (None, info["num_classes"]),
        "dataset.ignore_label",
        "must be dataset.num_classes (the training class one past the last) or absent",
    )
    need(info["label_mode"] in LABEL_MODES, "dataset.label_mode", f"must be one of {', '.join(LABEL_MODES)}")
    _validate_label_values(info, need, is_count)
    need(
        isinstance(info["cases"], list)
        and len(info["cases"]) > 0
        and all(isinstance(c, str) for c in info["cases"]),
        "dataset.cases",
        "must be a non-empty list of case ids",
    )
    spacing = plans["target_spacing"]
    need(
        isinstance(spacing, list) and len(spacing) == dims and all(map(is_positive, spacing)),
        "target_spacing",
        f"must be {dims} positive numbers",
    )
    patch = plans["patch_size"]
    need(
        isinstance(patch, list) and len(patch) == dims and all(map(is_count, patch)),
        "patch_size",
        f"must be {dims} positive integers",
    )
    need(is_count(plans["batch_size"]), "batch_size", "must be an integer >= 1")
    _validate_normalization(plans["normalization"], info["num_channels"], need)
    model = plans["model"]
    need(isinstance(model, dict) and isinstance(model.get("name"), str), "model.name", "must be a string")
    need(isinstance(model.get("network_settings", {}), dict), "model.network_settings", "must be an object")
    strides = model.get("network_settings", {}).get("strides")
    if strides is not None:
        need(
            isinstance(strides, list)
            and len(strides) >= 1
            and all(isinstance(s, list) and len(s) == dims and all(map(is_count, s)) for s in strides),
            "model.network_settings.strides",
            f"must be a list of [{dims} positive integers] per stage",
        )
    training = plans["training"]
    need(isinstance(training, dict), "training", "must be an object")
    need(training.get("optimizer") in ("sgd", "adamw"), "training.optimizer", "must be 'sgd' or 'adamw'")
    need(is_positive(training.get("lr")), "training.lr", "must be a positive number")
    need(is_count(training.get("epochs")), "training.epochs", "must be an integer >= 1")
    need(is_count(training.get("iters_per_epoch")), "training.iters_per_epoch", "must be an integer >= 1")
    workers = training.get("num_workers")
    need(workers is None or is_count(workers, 0), "training.num_workers", "must be an integer >= 0 or absent")
    budget = training.get("time_budget_minutes")
    need(budget is None or is_positive(budget), "training.time_budget_minutes", "must be a positive number or null")
    cases = training.get("val_max_cases")
    need(cases is None or is_count(cases, 0), "training.val_max_cases", "must be an integer >= 0 or null")


def _validate_label_values(info: dict[str, Any], need: Any, count: Any) -> None:
    """`label_values`: the file value of each class, 0 first, increasing (semantic and binary labels only);
    `ignore_value`: the ignore label's file value, beside `ignore_label` and none of the classes' values."""
    values = info.get("label_values")
    if info["label_mode"] in VALUED_LABEL_MODES:
        need(
            isinstance(values, list)
            and len(values) == info["num_classes"]
            and all(count(v, 0) for v in values)
            and values[0] == 0
            and all(a < b for a, b in zip(values, values[1:])),
            "dataset.label_values",
            f"must list the label file value of each of the {info['num_classes']} classes, 0 first, increasing",
        )
    else:
        need(values is None, "dataset.label_values", "must be absent for instance labels")
    ignore = info.get("ignore_value")
    need(
        (ignore is None) == (info.get("ignore_label") is None)
        and (ignore is None or (count(ignore, 0) and ignore not in (values or []))),
        "dataset.ignore_value",
        "must be the ignore label's value in the label files (no class's), given with dataset.ignore_label",
    )


def _validate_normalization(norm: Any, num_channels: int, need: Any) -> None:
    need(
        isinstance(norm, dict) and norm.get("scheme") in NORMALIZATION_SCHEMES,
        "normalization.scheme",
        f"must be one of {', '.join(NORMALIZATION_SCHEMES)}",
    )
    entries = [norm]
    if norm["scheme"] == "per_channel":
        entries = norm.get("channels")
        need(
            isinstance(entries, list) and len(entries) == num_channels,
            "normalization.channels",
            f"must list {num_channels} per-channel schemes",
        )
        need(
            all(isinstance(e, dict) and e.get("scheme") in NORMALIZATION_SCHEMES[:3] for e in entries),
            "normalization.channels",
            "entries need a scheme of zscore_per_image, ct or none",
        )
    for entry in entries:
        if entry["scheme"] == "ct":
            clip = entry.get("clip")
            need(
                isinstance(clip, list) and len(clip) == 2 and clip[0] <= clip[1],
                "normalization.clip",
                "must be [low, high]",
            )
            need(isinstance(entry.get("mean"), (int, float)), "normalization.mean", "must be a number")
            need(
                isinstance(entry.get("std"), (int, float)) and entry["std"] > 0,
                "normalization.std",
                "must be a positive number",
            )

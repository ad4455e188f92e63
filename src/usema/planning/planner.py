"""Planning: from a dataset's fingerprint to plans.json (target spacing, normalisation, patch, batch, network
strides, training settings), in the spirit of nnU-Net.

Memory estimate (analytic, for sizing patch and batch): a UNet stage s at stride r_s holds feature maps of
prod(patch / r_s) voxels x F_s channels, F_s = 32 * 2^s capped at 320 (3D) or 512 (2D). Training keeps about
32 such maps per stage in memory (encoder and decoder convolutions, norms and activations, skip
concatenations, attention projections, and their gradients at the backward peak) at 4 bytes each: 128 bytes
per feature-map element and sample. This is deliberately conservative and device independent; the default
budget of 5 GiB reproduces nnU-Net's choices on the reference datasets (hippocampus 40x56x40 x 9, DSB2018
256x256 x 10).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from usema.data.datasets import (
    DATASET_SUBFOLDERS,
    Case,
    DatasetSpec,
    dataset_holding,
    is_within,
    lexical_absolute,
    resolve_label_values,
    with_channel_count,
)
from usema.data.layouts import dataset_folder, load_dataset
from usema.errors import DataError, UsemaError
from usema.planning.fingerprint import compute_fingerprint
from usema.planning.network import network_settings_for
from usema.planning.plans import PLANS_NAME, Plans
from usema.planning.schema import PLANS_VERSION, is_count, is_positive
from usema.planning.settings import TRAINING_KEYS, TrainingSettings, check_setting
from usema.planning.windows import placement_settings, sema_stages_of, target_window, tiling_patch
from usema.utils.memory import physical_memory_bytes

DEFAULT_MEMORY_BUDGET_GB = 5.0
BYTES_PER_FEATURE_ELEMENT = 128
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MAX_STAGES = {2: 6, 3: 5}
MIN_FEATURE_MAP = 4
# The smallest image (voxels along every axis, at the planned spacing) that planning accepts: see
# _refuse_tiny_images.
MIN_IMAGE_VOXELS = 2
MIN_BATCH = 2
# On a CPU, a compact USEMA trained faster per sample at batch 4 than at nnU-Net's larger batches (per sample:
# 0.61 s at batch 4 against 0.93 s at batch 9 on 40x56x40 volumes, 0.59 s against 0.82 s at batch 10 on 256^2
# images, 2-core CPU, torch 2.13), and a short CPU budget needs steps: the planner caps the batch there.
CPU_MAX_BATCH = 4
# nnU-Net's cap: one batch covers at most this share of the dataset's voxels (tiny sets would overfit).
MAX_BATCH_SHARE_OF_DATASET = 0.05
# What `plan_dataset` takes besides the training settings (its plan edits). `model_overrides` is the older
# name of `network_settings` (still read, e.g. from `--plan model_overrides=...`: `given_network_settings`).
PLAN_EDITS = (
    "case_ids",
    "max_cases",
    "time_budget_minutes",
    "device",
    "patch_size",
    "batch_size",
    "target_spacing",
    "num_channels",
    "network_settings",
    "model_overrides",
    "seed",
)


# ------------------------------------------------------------------------------------------ pure planning
def target_spacing_for(spacings: list[list[float]]) -> list[float]:
    """Median spacing per axis; for strongly anisotropic data (coarsest axis > 3x the finest) the coarse axis
    takes the 10th percentile instead, as nnU-Net, so it is not over-interpolated."""
    spacings_arr = np.asarray(spacings, dtype=float)
    target = np.median(spacings_arr, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > 3 * target.min():
        target[coarse] = max(np.percentile(spacings_arr[:, coarse], 10), 3 * target.min())
    return [float(t) for t in target]


def stage_strides(patch: list[float], spacing: list[float]) -> list[list[int]]:
    """Stage 0 has stride 1; each later stage halves every axis whose feature map stays >= 4 voxels and whose
    spacing is not coarser than twice the finest poolable axis (anisotropic data pools in-plane first)."""
    dims = len(patch)
    strides, total, current = [[1] * dims], [1] * dims, list(spacing)
    while len(strides) < MAX_STAGES[dims]:
        poolable = [a for a in range(dims) if patch[a] / (total[a] * 2) >= MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current[a] for a in poolable)
        step = [2 if a in poolable and current[a] <= 2 * finest else 1 for a in range(dims)]
        strides.append(step)
        total = [t * s for t, s in zip(total, step, strict=True)]
        current = [c * s for c, s in zip(current, step, strict=True)]
    return strides


def total_stride(strides: list[list[int]]) -> list[int]:
    """Product of the per-stage strides per axis: the patch must be a multiple of it."""
    return [int(np.prod([s[a] for s in strides])) for a in range(len(strides[0]))]


def estimate_activation_bytes(patch: list[int], strides: list[list[int]], batch_size: int) -> int:
    """Training activation memory of a UNet with these strides (see the module docstring)."""
    dims, total, elements = len(patch), [1] * len(patch), 0
    for stage, step in enumerate(strides):
        total = [t * s for t, s in zip(total, step, strict=True)]
        features = min(BASE_FEATURES * 2**stage, MAX_FEATURES[dims])
        elements += int(np.prod([p / t for p, t in zip(patch, total, strict=True)])) * features
    return elements * BYTES_PER_FEATURE_ELEMENT * batch_size


def _round_up(patch: list[float], spacing: list[float]) -> tuple[list[int], list[list[int]]]:
    """Round the patch up to a multiple of its total stride, recomputing strides until both agree."""
    shape = [max(float(p), 1.0) for p in patch]
    for _ in range(8):
        strides = stage_strides(shape, spacing)
        rounded = [math.ceil(s / t) * t for s, t in zip(shape, total_stride(strides), strict=True)]
        if rounded == shape:
            break
        shape = [float(r) for r in rounded]
    return [int(s) for s in shape], stage_strides(shape, spacing)


def plan_network(
    median_shape: list[float],
    spacing: list[float],
    dataset_voxels: float,
    budget_bytes: float,
    patch_size: list[int] | None = None,
) -> dict[str, Any]:
    """Patch size (median shape clipped to the budget at the minimum batch, rounded up to the total stride),
    strides and batch size (what the budget allows, at most 5% of the dataset's voxels, at least 2).
    A given `patch_size` is taken as it is."""
    if patch_size is not None:
        patch, strides = [int(p) for p in patch_size], stage_strides([float(p) for p in patch_size], spacing)
    else:
        patch, strides = _round_up(median_shape, spacing)
        for _ in range(1000):  # each pass shrinks one axis by its stride; the cap only guards the loop
            if estimate_activation_bytes(patch, strides, MIN_BATCH) <= budget_bytes:
                break
            steps = total_stride(strides)
            shrinkable = [a for a in range(len(patch)) if patch[a] > max(steps[a], 2 * MIN_FEATURE_MAP)]
            if not shrinkable:
                break
            # shrink the axis with the largest physical extent, keeping the patch close to isotropic in mm
            axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
            smaller = list(map(float, patch))
            smaller[axis] = max(patch[axis] - steps[axis], 2 * MIN_FEATURE_MAP)
            patch, strides = _round_up(smaller, spacing)
    per_sample = estimate_activation_bytes(patch, strides, 1)
    by_memory = int(budget_bytes // per_sample)
    by_dataset = int(MAX_BATCH_SHARE_OF_DATASET * dataset_voxels // np.prod(patch))
    batch = max(MIN_BATCH, min(by_memory, by_dataset))
    return {
        "patch_size": patch,
        "batch_size": batch,
        "strides": strides,
        "estimated_memory_gb": round(per_sample * batch / 2**30, 3),
    }


def normalization_for(channel_names: list[str], intensity: list[dict[str, float]]) -> dict[str, Any]:
    """CT channels: clip to the foreground 0.5-99.5 percentiles, then a global z-score; channels named
    "noNorm": none; everything else (MR, ultrasound, microscopy, ...): z-score per image."""
    per_channel = []
    for name, stats in zip(channel_names, intensity, strict=True):
        if name.strip().lower() == "ct":
            per_channel.append(
                {
                    "scheme": "ct",
                    "clip": [stats["p00_5"], stats["p99_5"]],
                    "mean": stats["mean"],
                    "std": max(stats["std"], 1e-8),
                }
            )
        elif name.strip().lower() == "nonorm":
            per_channel.append({"scheme": "none"})
        else:
            per_channel.append({"scheme": "zscore_per_image"})
    if all(entry == per_channel[0] for entry in per_channel):
        return per_channel[0]
    return {"scheme": "per_channel", "channels": per_channel}


def default_memory_budget_gb(device: str) -> float:
    """5 GiB (device independent, so plans are reproducible), at most half the machine's memory on CPU."""
    ram = physical_memory_bytes() if device == "cpu" else None
    return min(DEFAULT_MEMORY_BUDGET_GB, ram / 2 / 2**30) if ram else DEFAULT_MEMORY_BUDGET_GB


def check_plan_edits(edits: dict[str, Any], spatial_dims: int) -> None:
    """UsemaError naming the first plan edit (--plan KEY=JSON) whose value a plan of a `spatial_dims`-D dataset
    cannot take, and what it can; None means "planned". Run before any case is read."""
    def per_axis(check: Any) -> Any:
        return lambda v: isinstance(v, list) and len(v) == spatial_dims and all(map(check, v))

    axes = f"one per axis of this {spatial_dims}D dataset"
    allowed = {
        "patch_size": (per_axis(is_count), f"{spatial_dims} positive integers, {axes}"),
        "target_spacing": (per_axis(is_positive), f"{spatial_dims} positive numbers (mm), {axes}"),
        "batch_size": (is_count, "an integer >= 1"),
        "num_channels": (is_count, "an integer >= 1"),
        "max_cases": (is_count, "an integer >= 1"),
        "case_ids": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of case ids"),
        "seed": (lambda v: is_count(v, 0), "an integer >= 0"),
        "device": (lambda v: isinstance(v, str), "a device name"),
        "network_settings": (lambda v: isinstance(v, dict), "a JSON object of the network's settings"),
        "model_overrides": (lambda v: isinstance(v, dict), "a JSON object of the network's settings"),
    }
    for key, value in edits.items():
        check_setting(key, value, allowed if key in allowed else None)


def given_network_settings(edits: dict[str, Any]) -> Any:
    """The network settings that plan edits give, under `network_settings` or their older name
    `model_overrides` (the first where both are given), taken out of `edits`; None when neither is. The older
    name gives a FutureWarning: it is read for one release more."""
    if "model_overrides" in edits:
        warnings.warn("the plan edit model_overrides is deprecated: use network_settings "
                      "(--plan network_settings=JSON)", FutureWarning, stacklevel=2)
    return edits.pop("network_settings", None) or edits.pop("model_overrides", None)


# ------------------------------------------------------------------------------------------------ planning
def plan_dataset(
    data: str | Path,
    run_dir: str | Path,
    model: str = "usema",
    label_mode: str | None = None,
    memory_budget_gb: float | None = None,
    overwrite: bool = False,
    **plan_edits: Any,
) -> Plans:
    """Fingerprint the dataset (reading and checking every case) and write `run_dir/plans.json` atomically.

    Plan edits: `device` ("auto"), `time_budget_minutes` (None: no limit) choose the optimizer; `case_ids` or
    `max_cases` plan on a subset; `patch_size`, `batch_size`, `target_spacing`, `num_channels`,
    `network_settings` (dict: the network's keyword arguments) and any training setting (`epochs`,
    `optimizer`, `lr`, `num_workers`, ...; None means "planned") replace the planned value. A `run_dir`
    holding trained folds keeps its plans.json (their networks were built from it) unless `overwrite`; one
    that is the dataset folder or lies in its image or label folders is refused (`check_run_folder`).
    """
    training_edits = {
        k: plan_edits.pop(k) for k in list(plan_edits) if k in TRAINING_KEYS and k != "time_budget_minutes"
    }
    unknown = sorted(set(plan_edits) - set(PLAN_EDITS))
    if unknown:
        raise UsemaError(f"unknown plan edit(s) {', '.join(unknown)} (--plan KEY=JSON); the keys are: "
                         f"{', '.join(sorted({*PLAN_EDITS, *TRAINING_KEYS}))}")
    if memory_budget_gb is not None and not is_positive(memory_budget_gb):
        raise UsemaError(f"memory budget {memory_budget_gb!r} GiB: must be a positive, finite number")
    edits = dict(plan_edits)
    from usema.utils.device import device_kind  # imports torch: only when planning

    device = device_kind(edits.get("device") or "auto")  # a plan for a GPU may be made without one
    spec = load_dataset(data, label_mode)
    check_run_folder(data, run_dir, spec)
    check_plan_edits({**edits, **training_edits}, spec.spatial_dims)
    given_settings = dict(given_network_settings(edits) or {})
    run_dir = Path(run_dir)
    if not overwrite:
        _check_no_trained_folds(run_dir / PLANS_NAME)
    if edits.get("num_channels"):
        spec = with_channel_count(spec, int(edits["num_channels"]))
    cases = _planned_cases(spec, edits.get("case_ids"), edits.get("max_cases"))
    spec = resolve_label_values(spec, cases)

    fingerprint = compute_fingerprint(spec, cases, seed=int(edits.get("seed") or 0))
    spacing = [float(s) for s in (edits.get("target_spacing") or target_spacing_for(fingerprint["spacings"]))]
    resampled = np.asarray(fingerprint["shapes"]) * np.asarray(fingerprint["spacings"]) / np.asarray(spacing)
    _refuse_tiny_images(cases, resampled, spacing)
    budget_gb = memory_budget_gb if memory_budget_gb is not None else default_memory_budget_gb(device)
    dataset_voxels, budget_bytes = float(resampled.prod(axis=1).sum()), budget_gb * 2**30
    network = plan_network(
        np.median(resampled, axis=0).tolist(), spacing, dataset_voxels, budget_bytes, edits.get("patch_size")
    )
    # the placement decides which stages' maps the patch must tile, so it is settled before the patch
    given_settings.update(placement_settings(model, spec.spatial_dims, given_settings))
    if edits.get("patch_size") is None:
        tiled = tiling_patch(
            network["patch_size"],
            lambda patch: stage_strides([float(p) for p in patch], spacing),
            sema_stages_of(model, spec.spatial_dims, given_settings),
            target_window(model, spec.spatial_dims, given_settings),
        )
        if tiled != network["patch_size"]:
            network = plan_network(tiled, spacing, dataset_voxels, budget_bytes, tiled)
    training = TrainingSettings.planned(device, edits.get("time_budget_minutes"))
    training = dataclasses.replace(training, **{k: v for k, v in training_edits.items() if v is not None})
    planned_batch = min(network["batch_size"], CPU_MAX_BATCH) if device == "cpu" else network["batch_size"]
    plans = Plans(
        {
            "version": PLANS_VERSION,
            "dataset": {
                "path": str(lexical_absolute(spec.root)),
                "format": spec.format,
                "spatial_dims": spec.spatial_dims,
                "num_channels": spec.num_channels,
                "channel_names": spec.channel_names,
                "modality": spec.modality,
                "labels": {str(k): v for k, v in spec.labels.items()},
                "label_mode": spec.label_mode,
                "num_classes": spec.num_classes,
                "cases": [c.case_id for c in cases],
                # the label files' value of each class: training reads them as classes, prediction writes
                # them back (instance labels hold instance ids: none)
                **({"label_values": spec.class_values} if spec.label_mode != "instance" else {}),
                # nnU-Net's ignore label: its voxels (training class num_classes) count in no loss, no score
                **(
                    {"ignore_label": spec.ignore_label, "ignore_value": spec.ignore_value}
                    if spec.ignore_label is not None
                    else {}
                ),
            },
            "fingerprint": fingerprint,
            "target_spacing": spacing,
            "normalization": normalization_for(spec.channel_names, fingerprint["intensity"]),
            "patch_size": network["patch_size"],
            "batch_size": planned_batch if edits.get("batch_size") is None else edits["batch_size"],
            "model": {
                "name": model,
                "network_settings": network_settings_for(
                    model, spec.spatial_dims, network["patch_size"], network["strides"], given_settings
                ),
            },
            "training": training.to_dict(),
            "planned_for": {
                "device": device,
                "memory_budget_gb": budget_gb,
                "estimated_memory_gb": network["estimated_memory_gb"],
            },
        },
        run_dir / PLANS_NAME,
    )
    plans.check_network()  # a network that would not build (e.g. --plan network_settings) is no plan
    plans.save(run_dir)
    return plans


def _check_no_trained_folds(plans_path: Path) -> None:
    """UsemaError when `plans_path` exists and folds of its run were trained from it: a new plan would leave
    their checkpoints without the plan that builds their network."""
    trained = sorted({p.parent.name for p in plans_path.parent.glob("fold_*/checkpoint_*.pt")})
    if plans_path.is_file() and trained:
        raise UsemaError(
            f"{plans_path}: the run holds trained folds ({', '.join(trained)}) built from this plan; plan into "
            "another folder, or pass --overwrite (in Python: overwrite=True) to replace it"
        )


def check_run_folder(data: str | Path, run_dir: str | Path, spec: DatasetSpec | None = None) -> None:
    """DataError naming both folders when the run folder `run_dir` is the dataset folder of `data` or lies in
    one of its image or label folders (links resolved): plans.json, preprocessed cases and checkpoints are
    never written among a dataset's files, where they could replace them or be read as cases. A folder of its
    own inside the dataset folder (DATA/runs/a, beside images/ and labels/) is no layout's input and is
    allowed. With the dataset's `spec`, a folder holding a case's image or label is refused too (a dataset.json
    may list them elsewhere in the dataset folder). `usema plan` and `usema train` both check here before writing
    anything."""
    root = dataset_holding(dataset_folder(data))  # None: no dataset, which load_dataset names
    if root is not None and (Path(run_dir).resolve() == root.resolve() or any(
            is_within(run_dir, root / name) for name in DATASET_SUBFOLDERS)):
        raise DataError(
            run_dir,
            f"the run folder is the dataset folder {root} or one of its image or label folders; a run is never "
            f"written among its dataset's files: choose a run folder outside them (e.g. "
            f"{root.resolve().parent / (root.resolve().name + '_run')})",
        )
    manifest = {lexical_absolute(spec.manifest)} if spec is not None and spec.manifest else set()
    for folder in sorted({path.parent for path in (spec.input_files() - manifest if spec else ())}):
        if is_within(run_dir, folder):
            raise DataError(run_dir, f"the run folder is {folder} or inside it, which holds the dataset's images "
                                     "or labels; a run is never written among its dataset's files: choose a run "
                                     "folder outside it")


def _planned_cases(spec: DatasetSpec, case_ids: list[str] | None, max_cases: int | None) -> list[Case]:
    """The cases to plan (all, `case_ids`, the first `max_cases`); DataError when none is left or one has no
    label."""
    cases = spec.cases
    if case_ids is not None:
        cases = [spec.case(str(c)) for c in case_ids]
    if max_cases is not None:
        cases = cases[: int(max_cases)]
    if not cases:
        raise DataError(spec.manifest or spec.root, "empty dataset: no cases selected")
    unlabelled = [case for case in cases if case.label is None]
    if unlabelled:
        first = unlabelled[0]
        raise DataError(
            spec.manifest or spec.root,
            f"the training case {first.case_id!r} ({first.images[0].name}) has no label"
            + (f", nor have {len(unlabelled) - 1} more" if len(unlabelled) > 1 else "")
            + "; every case planned for training needs one",
        )
    return cases


def _refuse_tiny_images(cases: list[Case], resampled: np.ndarray, spacing: list[float]) -> None:
    """DataError naming the images with fewer than MIN_IMAGE_VOXELS voxels along an axis at the planned spacing.

    The network convolves and normalises along every axis: an image one voxel thick carries no context along
    that axis, and a dataset of such images gives a patch whose feature maps hold one value per channel, which
    instance normalisation cannot normalise (training would crash after planning).
    """
    shapes = np.maximum(np.round(resampled), 1).astype(int)
    small = [
        (case, shape) for case, shape in zip(cases, shapes, strict=True) if shape.min() < MIN_IMAGE_VOXELS
    ]
    if small:
        (case, shape), more = small[0], len(small) - 1
        raise DataError(
            case.images[0],
            f"is {'x'.join(map(str, shape))} voxels at the planned spacing {spacing}: too small to train on (at "
            f"least {MIN_IMAGE_VOXELS} voxels along every axis)"
            + (f"; so are {more} more, e.g. {small[1][0].images[0].name}" if more else ""),
        )

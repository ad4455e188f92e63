"""Preprocessing as planned: channel count, normalisation, resampling to the target spacing (only where the
spacing differs), and the way back to the input's grid for predictions. Nothing is cropped.

`preprocess_dataset` writes one `run_dir/preprocessed/<case_id>.npz` per case with keys `image` (C, *S)
float32, `label` (*S) uint8 (int32 beyond 256 classes), `geometry` (JSON of the input's ImageGeometry),
`class_locations_<k>` (N, spatial_dims) int32 voxel coordinates of class k (a sample of at most
LOCATIONS_PER_CLASS, for foreground oversampling) and `plans_key` (which plan settings made the file).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from usema.data.channels import convert_channels
from usema.data.datasets import load_case
from usema.data.io import ImageGeometry, atomic_path
from usema.errors import DataError
from usema.planning.planner import PLANS_NAME, dataset_from_plans
from usema.planning.schema import validate_plans

LOCATIONS_PER_CLASS = 5000
PREPROCESSED_DIR = "preprocessed"
# Bump when the preprocessing itself changes, so that files written by an older version are redone.
_PREPROCESS_VERSION = 1


def target_shape(geometry: ImageGeometry, plans: dict[str, Any]) -> tuple[int, ...]:
    """Spatial shape of the image once resampled to the plan's target spacing (unchanged if spacings
    agree)."""
    target = np.asarray(plans["target_spacing"], dtype=float)
    spacing = np.asarray(geometry.spacing, dtype=float)
    if np.allclose(spacing, target, rtol=1e-3, atol=1e-6):
        return geometry.shape
    return tuple(
        max(1, int(round(s * sp / t))) for s, sp, t in zip(geometry.shape, spacing, target, strict=True)
    )


def _resize(array: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """Resample channel-first `array` to spatial `shape`, pixel centres aligned (align_corners=False), so
    that a resize and its inverse map the same points. torch's interpolate is called directly: it is what
    MONAI's Resize runs, without the metadata tracking and the seconds of importing MONAI."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    import torch
    import torch.nn.functional as F

    linear = mode in ("bilinear", "bicubic", "trilinear")
    batch = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    resized = F.interpolate(
        batch, size=tuple(int(s) for s in shape), mode=mode, align_corners=False if linear else None
    )
    return resized[0].numpy()


def _image_mode(spatial_dims: int) -> str:
    return "bicubic" if spatial_dims == 2 else "trilinear"  # torch has no tricubic interpolation


def normalize(image: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Apply the plan's normalisation to (C, *S): z-score per image, CT clip + global z-score, or none."""
    entries = (
        normalization["channels"]
        if normalization["scheme"] == "per_channel"
        else [normalization] * len(image)
    )
    out = np.empty(image.shape, dtype=np.float32)
    for channel, (values, entry) in enumerate(zip(image, entries, strict=True)):
        if entry["scheme"] == "ct":
            clipped = np.clip(values, *entry["clip"])
            out[channel] = (clipped - entry["mean"]) / max(float(entry["std"]), 1e-8)
        elif entry["scheme"] == "zscore_per_image":
            out[channel] = (values - values.mean()) / max(float(values.std()), 1e-8)
        else:
            out[channel] = values
    return out


def preprocess_image(image: np.ndarray, geometry: ImageGeometry, plans: dict[str, Any]) -> np.ndarray:
    """(C, *S) input image -> (C, *S_target) float32: channel count as planned, normalised, then resampled
    (normalising first, as nnU-Net, keeps CT clipping on the original intensities)."""
    image = convert_channels(
        np.asarray(image, dtype=np.float32), int(plans["dataset"]["num_channels"]), geometry, "input image"
    )
    image = normalize(image, plans["normalization"])
    return _resize(image, target_shape(geometry, plans), _image_mode(geometry.spatial_dims)).astype(
        np.float32
    )


def preprocess_label(label: np.ndarray, geometry: ImageGeometry, plans: dict[str, Any]) -> np.ndarray:
    """(*S) training-class label -> (*S_target) int64, resampled by nearest neighbour."""
    shape = target_shape(geometry, plans)
    label = np.asarray(label)
    if tuple(label.shape) == tuple(shape):
        return label.astype(np.int64, copy=False)
    return _resize(label[None].astype(np.float32), shape, "nearest-exact")[0].round().astype(np.int64)


def restore_geometry(probabilities: np.ndarray, geometry: ImageGeometry, plans: dict[str, Any]) -> np.ndarray:
    """(K, *S_target) class probabilities -> (K, *geometry.shape) on the input's grid (linear
    interpolation)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    mode = "bilinear" if geometry.spatial_dims == 2 else "trilinear"
    return _resize(probabilities, geometry.shape, mode)


def class_locations(label: np.ndarray, num_classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """{"class_locations_<k>": (N, spatial_dims) int32} for every foreground class k, N <=
    LOCATIONS_PER_CLASS."""
    out = {}
    for k in range(1, num_classes):
        where = np.argwhere(label == k)
        if len(where) > LOCATIONS_PER_CLASS:
            where = where[np.sort(rng.choice(len(where), LOCATIONS_PER_CLASS, replace=False))]
        out[f"class_locations_{k}"] = where.astype(np.int32)
    return out


def preprocessing_key(plans: dict[str, Any]) -> str:
    """A short hash of the plan settings that shape a preprocessed file: a user's edit makes files stale."""
    info = plans["dataset"]
    relevant = {
        "version": _PREPROCESS_VERSION,
        "path": info["path"],
        "label_mode": info["label_mode"],
        "num_channels": info["num_channels"],
        "num_classes": info["num_classes"],
        "target_spacing": plans["target_spacing"],
        "normalization": plans["normalization"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _stored_key(path: Path) -> str | None:
    """The plans key a preprocessed file was made with; "" for a file that is not ours; None if absent."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return str(stored["plans_key"])
    except Exception:  # unreadable, or an .npz of someone else's
        return ""


def preprocess_dataset(plans: dict[str, Any], run_dir: str | Path) -> Path:
    """Preprocess every case of the plan into `run_dir/preprocessed/<case_id>.npz` (atomic writes). Cases done
    with the same plan settings are skipped, so an interrupted run resumes. Returns the folder."""
    run_dir = Path(run_dir)
    validate_plans(plans, run_dir / PLANS_NAME)
    spec = dataset_from_plans(plans)
    out_dir = run_dir / PREPROCESSED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    key = preprocessing_key(plans)
    num_classes = int(plans["dataset"]["num_classes"])
    todo = []
    for case_id in plans["dataset"]["cases"]:
        path = out_dir / f"{case_id}.npz"
        stored = _stored_key(path)
        if stored == "" and spec.holds(path):
            raise DataError(
                path,
                "exists in the dataset folder and is not a usema preprocessed case; refusing to overwrite it",
            )
        if stored != key:
            todo.append(case_id)
    for case_id in tqdm(todo, desc="preprocess", unit="case", disable=None):
        image, label, geometry = load_case(spec, spec.case(case_id))
        arrays = {
            "image": preprocess_image(image, geometry, plans),
            "geometry": np.array(json.dumps(geometry.to_dict())),
            "plans_key": np.array(key),
        }
        if label is not None:
            label = preprocess_label(label, geometry, plans)
            arrays["label"] = label.astype(np.uint8 if num_classes <= 256 else np.int32)
            # seeded by the case id: the same case always stores the same sample of locations
            arrays.update(
                class_locations(label, num_classes, np.random.default_rng(zlib.crc32(case_id.encode())))
            )
        with atomic_path(out_dir / f"{case_id}.npz") as tmp:
            np.savez(tmp, **arrays)
    return out_dir

"""Preprocessing of one image as planned: channel count, normalisation, resampling to the target spacing (only
where the spacing differs), and the way back to the input's grid for predictions. Nothing is cropped.
"""

from __future__ import annotations

import numpy as np

from usema.data.channels import convert_channels
from usema.data.io import ImageGeometry
from usema.planning.plans import Normalization, Plans


def target_shape(geometry: ImageGeometry, plans: Plans) -> tuple[int, ...]:
    """Spatial shape of the image once resampled to the plan's target spacing (unchanged if spacings
    agree)."""
    target = np.asarray(plans.target_spacing, dtype=float)
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


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Apply the plan's normalisation to (C, *S): z-score per image, CT clip + global z-score, or none."""
    entries = normalization.for_channels(len(image))
    out = np.empty(image.shape, dtype=np.float32)
    for channel, (values, entry) in enumerate(zip(image, entries, strict=True)):
        if entry.scheme == "ct":
            clipped = np.clip(values, *entry.clip)
            out[channel] = (clipped - entry.mean) / max(float(entry.std), 1e-8)
        elif entry.scheme == "zscore_per_image":
            out[channel] = (values - values.mean()) / max(float(values.std()), 1e-8)
        else:
            out[channel] = values
    return out


def preprocess_image(image: np.ndarray, geometry: ImageGeometry, plans: Plans) -> np.ndarray:
    """(C, *S) input image -> (C, *S_target) float32: channel count as planned, normalised, then resampled
    (normalising first, as nnU-Net, keeps CT clipping on the original intensities)."""
    image = convert_channels(
        np.asarray(image, dtype=np.float32), plans.dataset.num_channels, geometry, "input image"
    )
    image = normalize(image, plans.normalization)
    return _resize(image, target_shape(geometry, plans), _image_mode(geometry.spatial_dims)).astype(
        np.float32
    )


def preprocess_label(label: np.ndarray, geometry: ImageGeometry, plans: Plans) -> np.ndarray:
    """(*S) training-class label -> (*S_target) int64, resampled by nearest neighbour."""
    shape = target_shape(geometry, plans)
    label = np.asarray(label)
    if tuple(label.shape) == tuple(shape):
        return label.astype(np.int64, copy=False)
    return _resize(label[None].astype(np.float32), shape, "nearest-exact")[0].round().astype(np.int64)


def restore_geometry(probabilities: np.ndarray, geometry: ImageGeometry, plans: Plans) -> np.ndarray:
    """(K, *S_target) class probabilities -> (K, *geometry.shape) on the input's grid (linear
    interpolation)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    mode = "bilinear" if geometry.spatial_dims == 2 else "trilinear"
    return _resize(probabilities, geometry.shape, mode)

"""Quick-look PNGs of a prediction: the image in gray with each label filled translucently and outlined.

Drawn with numpy and Pillow rather than matplotlib figures: one RGB array per case, no figure machinery, and the
PNG keeps the image's own pixel grid (enlarged by an integer factor for small images).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from usema.data.io import ImageGeometry, atomic_path

FILL_ALPHA = 0.35
# Small images (a 35 x 51 hippocampus slice) are enlarged by an integer factor to at least this many pixels.
MIN_OVERLAY_SIZE = 256
PALETTE = (np.asarray(colormaps["tab10"].colors) * 255).astype(np.float32)


def axial_axis(geometry: ImageGeometry) -> int:
    """The array axis running inferior-superior (from the NIfTI affine), else the last axis (NIfTI/ITK z)."""
    if geometry.affine is not None:
        import nibabel as nib

        codes = nib.orientations.aff2axcodes(np.asarray(geometry.affine))
        for axis, code in enumerate(codes):
            if code in ("S", "I"):
                return axis
    return 0 if geometry.format == "tiff" else geometry.spatial_dims - 1  # TIFF stacks are (z, y, x)


def display_plane(
    image: np.ndarray, segmentation: np.ndarray, geometry: ImageGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """The 2D (rows, columns) gray image and label plane to show from `image` (C, *S) and `segmentation` (*S):
    the image itself in 2D, the middle axial slice in 3D (turned so that the first remaining array axis runs
    left-right, the second bottom-up)."""
    image = np.asarray(image, dtype=np.float32)
    # An RGB picture is shown as its mean (the labels carry the colour); of several modalities, the first.
    gray = image.mean(axis=0) if geometry.spatial_dims == 2 and image.shape[0] == 3 else image[0]
    labels = np.asarray(segmentation)
    if geometry.spatial_dims == 2:
        return gray, labels
    axis = axial_axis(geometry)
    middle = labels.shape[axis] // 2
    gray, labels = np.take(gray, middle, axis=axis), np.take(labels, middle, axis=axis)
    if geometry.format in ("nifti", "itk"):
        gray, labels = np.rot90(gray), np.rot90(labels)
    return gray, labels


def _to_uint8(gray: np.ndarray) -> np.ndarray:
    """Window the intensities to their 0.5-99.5 percentiles (robust to a few extreme voxels) as 0..255."""
    low, high = np.percentile(gray, [0.5, 99.5]) if gray.size else (0.0, 1.0)
    scaled = (gray - low) / max(float(high - low), 1e-8)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.float32)


def render_overlay(gray: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W) gray image and (H, W) label plane -> (H*f, W*f, 3) uint8 RGB with labels filled and outlined.

    Label (or instance id) k takes colour k-1 of matplotlib's tab10 palette, cycling beyond ten.
    """
    factor = max(1, math.ceil(MIN_OVERLAY_SIZE / max(1, *labels.shape)))
    gray = np.kron(_to_uint8(gray), np.ones((factor, factor), dtype=np.float32))
    labels = np.kron(np.asarray(labels, dtype=np.int64), np.ones((factor, factor), dtype=np.int64))
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    colours = PALETTE[(np.maximum(labels, 1) - 1) % len(PALETTE)]
    inside = labels > 0
    rgb[inside] = (1 - FILL_ALPHA) * rgb[inside] + FILL_ALPHA * colours[inside]
    # Outline: pixels whose 3x3 neighbourhood holds another label, drawn on the label's side of the edge.
    footprint = np.ones((3, 3), dtype=bool)
    edge = inside & (
        ndimage.grey_dilation(labels, footprint=footprint)
        != ndimage.grey_erosion(labels, footprint=footprint)
    )
    rgb[edge] = colours[edge]
    return np.round(rgb).astype(np.uint8)


def write_overlay(
    image: np.ndarray, segmentation: np.ndarray, geometry: ImageGeometry, path: str | Path
) -> Path:
    """Write the overlay PNG of `image` (C, *S) and its `segmentation` (*S) at `path`, atomically."""
    gray, labels = display_plane(image, segmentation, geometry)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(render_overlay(gray, labels)).save(tmp, format="PNG")
    return path

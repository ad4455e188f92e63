"""Per-class overlap and surface scores: Dice, normalised surface Dice (NSD) and HD95, in physical units.

The numbers come from MONAI (`compute_dice`, `compute_surface_dice`, `compute_hausdorff_distance`); this module
only decides what an empty mask scores, because MONAI returns NaN there (NSD and HD95 when both masks are empty,
HD95 when one of them is), and a NaN silently drops the case from every mean.

Empty-mask rules (as the Medical Segmentation Decathlon scores them):
- class absent from both prediction and reference: a perfect score, Dice 1, NSD 1, HD95 0;
- class in only one of them: Dice 0, NSD 0, and HD95 = the image diagonal in mm (the largest distance the image
  can hold). We chose the diagonal over "NaN, excluded from the mean" because excluding the case would reward a
  model for missing a structure entirely, and it keeps every reported value finite (valid JSON, stable means).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

METRIC_NAMES = ("dice", "nsd", "hd95")

# Default NSD tolerances: 1 mm in 3D; 2 pixels in 2D (PNG/TIFF spacing is 1, so 2 spacing units).
DEFAULT_TOLERANCE_3D_MM = 1.0
DEFAULT_TOLERANCE_2D = 2.0


def default_tolerance(spatial_dims: int) -> float:
    """The NSD tolerance used when none is given: 1 mm for 3D images, 2 pixels for 2D images."""
    return DEFAULT_TOLERANCE_2D if spatial_dims == 2 else DEFAULT_TOLERANCE_3D_MM


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the image's diagonal: the HD95 given to a class present in only one of the two masks."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A binary mask as the (batch=1, channel=1, *spatial) float tensor MONAI's metrics expect."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def binary_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> dict[str, float]:
    """Dice, NSD (at `tolerance_mm`) and HD95 (mm) of one binary prediction against one binary reference."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {ref.ndim}D mask")
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    if pred_any != ref_any:
        return {"dice": 0.0, "nsd": 0.0, "hd95": image_diagonal_mm(ref.shape, spacing)}

    y_pred, y = _as_batch(pred), _as_batch(ref)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI's own surface-distance helpers pass an argument it has deprecated; the warning is not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)
        nsd = compute_surface_dice(y_pred, y, [float(tolerance_mm)], include_background=True, spacing=spacing)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
    return {"dice": float(dice[0, 0]), "nsd": float(nsd[0, 0]), "hd95": float(hd95[0, 0])}


def score_classes(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float],
    tolerances_mm: Sequence[float],
) -> dict[int, dict[str, float]]:
    """Dice, NSD and HD95 of every class of two label maps: {class: {"dice", "nsd", "hd95"}}.

    `tolerances_mm[i]` is the NSD tolerance of `classes[i]`.
    """
    if len(tolerances_mm) != len(classes):
        raise ValueError(f"{len(tolerances_mm)} tolerances given for {len(classes)} classes")
    return {
        int(c): binary_scores(pred == c, ref == c, spacing, tol) for c, tol in zip(classes, tolerances_mm, strict=True)
    }

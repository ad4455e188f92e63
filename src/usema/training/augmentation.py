"""The augmentation of training patches, in the spirit of nnU-Net, for 2D and 3D: a random rotation and
scaling (applied by usema.training.patches to the region a patch covers), then MONAI's intensity transforms
(noise, blur, brightness, contrast, gamma) on the image and mirroring on image and label, each with nnU-Net's
probability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
)
from monai.transforms.utils import create_rotate, create_scale

# nnU-Net's probabilities per sample ("mirror" is per axis).
DEFAULT_PROBABILITIES: dict[str, float] = {
    "rotation": 0.2,
    "scaling": 0.2,
    "noise": 0.1,
    "blur": 0.2,
    "brightness": 0.15,
    "contrast": 0.15,
    "gamma_inverted": 0.1,
    "gamma": 0.3,
    "mirror": 0.5,
}
ROTATION_DEGREES = {2: 180.0, 3: 30.0}
SCALE_RANGE = (0.7, 1.4)


def intensity_transforms(probabilities: Mapping[str, float] | None = None) -> Compose:
    """MONAI's intensity augmentations of the "image" key, in nnU-Net's order and with its ranges (the blur's
    third sigma applies to 3D images only)."""
    p = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
    sigma = (0.5, 1.0)
    return Compose(
        [
            RandGaussianNoised("image", prob=p["noise"], mean=0.0, std=0.1),
            RandGaussianSmoothd("image", sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=p["blur"]),
            # brightness: multiplicative, v * U(0.75, 1.25)
            RandScaleIntensityd("image", factors=0.25, prob=p["brightness"]),
            # contrast: scale around the mean, clipped to the original range (nnU-Net's ContrastAugmentation)
            RandScaleIntensityFixedMeand("image", factors=0.25, preserve_range=True, prob=p["contrast"]),
            RandAdjustContrastd(
                "image", gamma=(0.7, 1.5), invert_image=True, retain_stats=True, prob=p["gamma_inverted"]
            ),
            RandAdjustContrastd("image", gamma=(0.7, 1.5), retain_stats=True, prob=p["gamma"]),
        ]
    )


def mirror_transforms(spatial_dims: int, probability: float = DEFAULT_PROBABILITIES["mirror"]) -> Compose:
    """Mirroring of image and label along each spatial axis independently."""
    return Compose(
        [RandFlipd(["image", "label"], prob=probability, spatial_axis=axis) for axis in range(spatial_dims)]
    )


def random_spatial_matrix(
    spatial_dims: int, rng: np.random.Generator, probabilities: Mapping[str, float] | None = None
) -> np.ndarray | None:
    """A random rotation/scaling matrix ((d+1) x (d+1), patch coordinates -> image coordinates), or None."""
    p = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
    rotate = rng.random() < p["rotation"]
    scale = rng.random() < p["scaling"]
    if not (rotate or scale):
        return None
    matrix = np.eye(spatial_dims + 1)
    if rotate:
        limit = math.radians(ROTATION_DEGREES[spatial_dims])
        angles = rng.uniform(-limit, limit, size=1 if spatial_dims == 2 else 3)
        matrix = matrix @ np.asarray(create_rotate(spatial_dims, angles.tolist()))
    if scale:
        # one factor for all axes, as nnU-Net; > 1 samples a larger region (zooms out)
        matrix = matrix @ np.asarray(create_scale(spatial_dims, [rng.uniform(*SCALE_RANGE)] * spatial_dims))
    return matrix


def covered_region_size(matrix: np.ndarray, patch_size: Sequence[int]) -> tuple[int, ...]:
    """Odd size of the image region that the patch, mapped by `matrix`, covers (with a margin for interpolation)."""
    half = (np.asarray(patch_size, dtype=float) - 1) / 2
    corners = np.array(np.meshgrid(*[[-h, h] for h in half], indexing="ij")).reshape(len(half), -1)
    reach = np.abs(matrix[: len(half), : len(half)] @ corners).max(axis=1)
    return tuple(2 * (math.ceil(r) + 1) + 1 for r in reach)



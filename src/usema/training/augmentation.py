"""Training patches and their augmentation, in the spirit of nnU-Net, for 2D and 3D.

A patch is centred on a random foreground voxel (a share `oversample_foreground` of the samples) or placed at
random. The spatial transform (rotation, scaling) is applied to the patch only: we crop the region the rotated
and scaled patch covers and let MONAI's `Affine` resample it to the patch size, so the cost grows with the
patch, not the image. Then come MONAI's intensity transforms (noise, blur, brightness, contrast, gamma) on the
image and mirroring on image and label, each with nnU-Net's probability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Affine,
    Compose,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
)
from monai.transforms.utils import create_rotate, create_scale
from monai.utils import convert_to_tensor

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


@dataclass
class TrainingCase:
    """One preprocessed case held in memory: image (C, *S) float32, label (*S) int, foreground voxel lists."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    # class index -> (N, spatial_dims) voxel coordinates of that class (a sample of them is enough)
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)


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


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop the trailing len(size) axes of `array` at `start` (may lie outside), zero-padding what falls outside.

    Written by hand because MONAI's croppers clip at the border instead of padding, and a patch centred near
    the border must keep the requested size and centre.
    """
    lead = array.ndim - len(size)
    src, dst, pad = [slice(None)] * lead, [slice(None)] * lead, []
    for begin, length, extent in zip(start, size, array.shape[lead:], strict=True):
        lo, hi = max(begin, 0), min(begin + length, extent)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - begin, lo - begin + max(hi - lo, 0)))
        pad.append(length)
    out = np.zeros(array.shape[:lead] + tuple(pad), dtype=array.dtype)
    out[tuple(dst)] = array[tuple(src)]
    return out


def choose_center(
    case: TrainingCase, patch_size: Sequence[int], rng: np.random.Generator, foreground: bool
) -> tuple[int, ...]:
    """A patch centre: a random voxel of a random present class if `foreground`, else a random placement."""
    present = [k for k, where in sorted(case.class_locations.items()) if len(where) > 0]
    if foreground and present:
        where = case.class_locations[present[int(rng.integers(len(present)))]]
        return tuple(int(v) for v in where[int(rng.integers(len(where)))])
    center = []
    for extent, length in zip(case.label.shape, patch_size, strict=True):
        # the patch lies inside the image when it fits, else covers all of it
        low = int(rng.integers(min(0, extent - length), max(0, extent - length) + 1))
        center.append(low + length // 2)
    return tuple(center)


class PatchSampler:
    """Draws augmented (image, label) patches of `patch_size` from in-memory training cases."""

    def __init__(
        self,
        cases: Sequence[TrainingCase],
        patch_size: Sequence[int],
        oversample_foreground: float = 0.33,
        probabilities: Mapping[str, float] | None = None,
        augment: bool = True,
    ):
        if not cases:
            raise ValueError("PatchSampler needs at least one training case")
        self.cases = list(cases)
        self.patch_size = tuple(int(v) for v in patch_size)
        self.spatial_dims = len(self.patch_size)
        self.oversample_foreground = float(oversample_foreground)
        self.probabilities = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
        self.augment = augment
        self.intensity = intensity_transforms(self.probabilities)
        self.mirror = mirror_transforms(self.spatial_dims, self.probabilities["mirror"])

    def seed(self, rng: np.random.Generator) -> None:
        """Re-seed MONAI's transforms from `rng`, so a batch depends only on the generator that draws it."""
        self.intensity.set_random_state(seed=int(rng.integers(2**31)))
        self.mirror.set_random_state(seed=int(rng.integers(2**31)))

    def sample(
        self, case: TrainingCase, rng: np.random.Generator, foreground: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One patch of `case`: image (C, *patch) float32 and label (1, *patch) int64 tensors."""
        # MONAI's MetaTensor bookkeeping costs more than the transforms on small patches and we need no metadata.
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return self._sample(case, rng, foreground)
        finally:
            set_track_meta(tracking)

    def _sample(
        self, case: TrainingCase, rng: np.random.Generator, foreground: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        center = choose_center(case, self.patch_size, rng, foreground)
        matrix = random_spatial_matrix(self.spatial_dims, rng, self.probabilities) if self.augment else None
        label = case.label[None]
        if matrix is None:
            start = [c - p // 2 for c, p in zip(center, self.patch_size, strict=True)]
            image = torch.from_numpy(crop_with_padding(case.image, start, self.patch_size))
            label = torch.from_numpy(crop_with_padding(label, start, self.patch_size).astype(np.int64))
        else:
            region = covered_region_size(matrix, self.patch_size)
            start = [c - (r - 1) // 2 for c, r in zip(center, region, strict=True)]
            image = self._resample(crop_with_padding(case.image, start, region), matrix, "bilinear")
            label = self._resample(crop_with_padding(label, start, region), matrix, "nearest").round().long()
        if not self.augment:
            return image.float(), label
        data = self.intensity({"image": image.float()})
        data = self.mirror({"image": data["image"], "label": label})
        return convert_to_tensor(data["image"], track_meta=False), convert_to_tensor(
            data["label"], track_meta=False
        )

    def _resample(self, region: np.ndarray, matrix: np.ndarray, mode: str) -> torch.Tensor:
        affine = Affine(
            affine=matrix, spatial_size=self.patch_size, mode=mode, padding_mode="zeros", image_only=True
        )
        return convert_to_tensor(affine(torch.from_numpy(region.astype(np.float32))), track_meta=False)

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch (images (B, C, *patch), labels (B, 1, *patch)) drawn entirely from `rng`.

        round(batch_size * oversample_foreground) samples (rounded at random, so the share holds on average
        even for a batch of one) are centred on foreground.
        """
        self.seed(rng)
        share = batch_size * self.oversample_foreground
        num_foreground = int(share) + int(rng.random() < share - int(share))
        images, labels = [], []
        for index in range(batch_size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            image, label = self.sample(case, rng, foreground=index < num_foreground)
            images.append(image)
            labels.append(label)
        return torch.stack(images), torch.stack(labels)

"""Training patches: where a patch is placed, cropping it from a case read lazily from disk, and augmenting
it.

A patch is centred on a random foreground voxel (a share `oversample_foreground` of the samples) or placed at
random. The spatial transform (rotation, scaling) is applied to the patch only: we crop the region the rotated
and scaled patch covers and let MONAI's `Affine` resample it to the patch size, so the cost grows with the
patch, not the image; only that region is read from the case's memory-mapped arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Affine
from monai.utils import convert_to_tensor

from usema.preprocessing.storage import PreprocessedCase
from usema.training.augmentation import (
    DEFAULT_PROBABILITIES,
    covered_region_size,
    intensity_transforms,
    mirror_transforms,
    random_spatial_matrix,
)


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop the trailing len(size) axes of `array` at `start` (which may lie outside), zero-padding the rest.

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
    case: PreprocessedCase, patch_size: Sequence[int], rng: np.random.Generator, foreground: bool
) -> tuple[int, ...]:
    """A patch centre: a random stored voxel of a random present class if `foreground`, else a random
    placement."""
    present = case.present_classes
    if foreground and present:
        k = present[int(rng.integers(len(present)))]
        return case.class_location(k, int(rng.integers(case.location_count(k))))
    center = []
    for extent, length in zip(case.shape, patch_size, strict=True):
        # the patch lies inside the image when it fits, else covers all of it
        low = int(rng.integers(min(0, extent - length), max(0, extent - length) + 1))
        center.append(low + length // 2)
    return tuple(center)


class PatchSampler:
    """Draws augmented (image, label) patches of `patch_size` from preprocessed cases, reading each patch's
    region from disk. It holds no image data: loader worker processes get it cheaply."""

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
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
        self, case: PreprocessedCase, rng: np.random.Generator, foreground: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One patch of `case`: image (C, *patch) float32 and label (1, *patch) int64 tensors."""
        # MONAI's MetaTensor bookkeeping costs more than the transforms on small patches and we need no
        # metadata.
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return self._sample(case, rng, foreground)
        finally:
            set_track_meta(tracking)

    def _sample(
        self, case: PreprocessedCase, rng: np.random.Generator, foreground: bool
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

"""Patch sampling and augmentation: sizes, image/label alignment, foreground oversampling, determinism."""

import math

import numpy as np
import pytest
import torch
from monai.transforms.utils import create_rotate

from usema.training.augmentation import (
    DEFAULT_PROBABILITIES,
    PatchSampler,
    TrainingCase,
    covered_region_size,
    crop_with_padding,
)

SPATIAL_ONLY = {
    "rotation": 1.0,
    "scaling": 1.0,
    "mirror": 0.5,
    "noise": 0.0,
    "blur": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "gamma": 0.0,
    "gamma_inverted": 0.0,
}
EVERYTHING = dict.fromkeys(DEFAULT_PROBABILITIES, 1.0)


def _blocks_case(shape):
    """Label with two boxes (classes 1 and 2); the image is the label itself, so alignment can be checked."""
    label = np.zeros(shape, dtype=np.uint8)
    label[tuple(slice(s // 5, s // 2) for s in shape)] = 1
    label[tuple(slice(s // 2, 4 * s // 5) for s in shape)] = 2
    locations = {k: np.argwhere(label == k).astype(np.int32) for k in (1, 2)}
    return TrainingCase("blocks", label[None].astype(np.float32), label, locations)


@pytest.mark.parametrize("shape, patch", [((60, 50), (32, 24)), ((30, 26, 22), (16, 16, 12))])
def test_rotated_scaled_mirrored_patches_keep_image_and_label_aligned(shape, patch):
    case = _blocks_case(shape)
    sampler = PatchSampler([case], patch, probabilities=SPATIAL_ONLY)
    rng = np.random.default_rng(0)
    sampler.seed(rng)
    for _ in range(6):
        image, label = sampler.sample(case, rng, foreground=True)
        assert image.shape == (1, *patch) and label.shape == (1, *patch)
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        assert set(label.unique().tolist()) <= {0, 1, 2}
        assert (label > 0).any()  # centred on foreground
        # Where the (bilinear) image is exactly a class value, every neighbour it was interpolated from holds
        # that class, so the nearest-neighbour label must hold it too: any misalignment breaks this.
        pure = (image - image.round()).abs() < 1e-4
        assert pure.float().mean() > 0.8
        assert torch.equal(image.round().long()[pure], label[pure])


@pytest.mark.parametrize("shape, patch", [((60, 50), (32, 24)), ((30, 26, 22), (16, 16, 12))])
def test_full_augmentation_gives_patch_sized_batches_with_valid_labels(shape, patch):
    case = _blocks_case(shape)
    sampler = PatchSampler([case], patch, probabilities=EVERYTHING)
    images, labels = sampler.batch(3, np.random.default_rng(1))
    assert images.shape == (3, 1, *patch) and labels.shape == (3, 1, *patch)
    assert torch.isfinite(images).all()
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    # intensity transforms moved the image away from the label values, the label kept its classes
    assert not torch.equal(images.round(), labels.float())


def test_foreground_share_and_determinism():
    case = _blocks_case((80, 80))
    case.label[:] = 0
    case.label[70:72, 5:7] = 1  # one tiny object far from the centre
    case.class_locations = {1: np.argwhere(case.label == 1), 2: np.zeros((0, 2), dtype=np.int32)}
    always = PatchSampler([case], (16, 16), oversample_foreground=1.0, augment=False)
    _, labels = always.batch(4, np.random.default_rng(0))
    assert all((labels[i] == 1).any() for i in range(4))
    # at the centre of the patch sits the chosen foreground voxel
    image, label = always.sample(case, np.random.default_rng(3), foreground=True)
    assert label[0, 8, 8] == 1
    never = PatchSampler([case], (16, 16), oversample_foreground=0.0, augment=False)
    _, labels = never.batch(16, np.random.default_rng(0))
    assert sum(bool((labels[i] == 1).any()) for i in range(16)) < 8
    sampler = PatchSampler([case], (16, 16))
    first = sampler.batch(2, np.random.default_rng(5))
    again = sampler.batch(2, np.random.default_rng(5))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_images_smaller_than_the_patch_are_zero_padded():
    case = _blocks_case((10, 12))
    sampler = PatchSampler([case], (16, 16), augment=False)
    image, label = sampler.sample(case, np.random.default_rng(0))
    assert image.shape == (1, 16, 16)
    assert int((label > 0).sum()) == int((case.label > 0).sum())  # the whole image is inside the patch


def test_crop_with_padding_fills_outside_with_zeros():
    array = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)
    out = crop_with_padding(array, start=(-1, 2), size=(3, 4))
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0], [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]])


def test_covered_region_grows_with_rotation_and_scale():
    identity = np.eye(3)
    assert covered_region_size(identity, (16, 24)) == (19, 27)  # patch + interpolation margin, odd
    quarter_turn = np.asarray(create_rotate(2, math.pi / 2))
    assert covered_region_size(quarter_turn, (16, 24)) == (27, 19)
    zoom_out = np.diag([1.4, 1.4, 1.4, 1.0])
    assert all(
        r >= 1.4 * p for r, p in zip(covered_region_size(zoom_out, (16, 16, 16)), (16, 16, 16), strict=True)
    )

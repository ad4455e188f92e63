"""Patch sampling from cases on disk: sizes, image/label alignment, foreground oversampling, determinism."""

from pathlib import Path

import numpy as np
import pytest
import torch

from usema.preprocessing.storage import open_case, write_case
from usema.training.augmentation import DEFAULT_PROBABILITIES
from usema.training.patches import PatchSampler, crop_with_padding

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


def _stored(folder, label):
    """`label` stored as a preprocessed case whose image is the label itself, so alignment can be checked."""
    write_case(folder, "blocks", label[None].astype(np.float32), label, num_classes=3, key="test")
    return open_case(folder, "blocks")


def _blocks_case(folder, shape):
    """A case whose label holds two boxes (classes 1 and 2)."""
    label = np.zeros(shape, dtype=np.uint8)
    label[tuple(slice(s // 5, s // 2) for s in shape)] = 1
    label[tuple(slice(s // 2, 4 * s // 5) for s in shape)] = 2
    return _stored(folder, label)


@pytest.mark.parametrize("shape, patch", [((60, 50), (32, 24)), ((30, 26, 22), (16, 16, 12))])
def test_rotated_scaled_mirrored_patches_keep_image_and_label_aligned(tmp_path, shape, patch):
    case = _blocks_case(tmp_path, shape)
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
def test_full_augmentation_gives_patch_sized_batches_with_valid_labels(tmp_path, shape, patch):
    case = _blocks_case(tmp_path, shape)
    sampler = PatchSampler([case], patch, probabilities=EVERYTHING)
    images, labels = sampler.batch(3, np.random.default_rng(1))
    assert images.shape == (3, 1, *patch) and labels.shape == (3, 1, *patch)
    assert torch.isfinite(images).all()
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    # intensity transforms moved the image away from the label values, the label kept its classes
    assert not torch.equal(images.round(), labels.float())


def test_foreground_share_and_determinism(tmp_path):
    label = np.zeros((80, 80), dtype=np.uint8)
    label[70:72, 5:7] = 1  # one tiny object far from the centre
    case = _stored(tmp_path, label)
    assert case.present_classes == [1] and case.location_count(1) == 4
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


def test_images_smaller_than_the_patch_are_zero_padded(tmp_path):
    case = _blocks_case(tmp_path, (10, 12))
    sampler = PatchSampler([case], (16, 16), augment=False)
    image, label = sampler.sample(case, np.random.default_rng(0))
    assert image.shape == (1, 16, 16)
    assert int((label > 0).sum()) == int((case.label > 0).sum())  # the whole image is inside the patch


def test_sampling_holds_no_map_of_the_case_open(tmp_path):
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps")
    case = _blocks_case(tmp_path, (60, 50))
    sampler = PatchSampler([case], (16, 16))
    images, labels = sampler.batch(4, np.random.default_rng(0))
    assert images.shape == (4, 1, 16, 16) and labels.shape == (4, 1, 16, 16)
    assert str(tmp_path) not in maps.read_text()  # every patch read its region and let the map go
    held = case.image
    assert str(tmp_path) in maps.read_text()
    del held


def test_crop_with_padding_fills_outside_with_zeros():
    array = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)
    out = crop_with_padding(array, start=(-1, 2), size=(3, 4))
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0], [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]])

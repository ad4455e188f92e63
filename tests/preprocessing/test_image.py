"""Preprocessing of one image: normalisation as planned, resampling only where the spacing differs, and the
way back."""

import numpy as np
import pytest

from usema.data.io import ImageGeometry
from usema.planning import Plans
from usema.planning.plans import Normalization
from usema.preprocessing.image import (
    normalize,
    preprocess_image,
    preprocess_label,
    restore_geometry,
    target_shape,
)


def _plans(target_spacing, num_channels=1):
    """A plan that preprocesses to `target_spacing` with z-scores per image."""
    dims = len(target_spacing)
    return Plans({
        "version": 2,
        "dataset": {"path": "/data", "format": "msd", "spatial_dims": dims, "num_channels": num_channels,
                    "label_mode": "semantic", "num_classes": 3, "cases": ["c"],
                    "labels": {"0": "background"}},
        "target_spacing": target_spacing,
        "normalization": {"scheme": "zscore_per_image"},
        "patch_size": [8] * dims,
        "batch_size": 2,
        "model": {"name": "usema", "network_settings": {}},
        "training": {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "iters_per_epoch": 1},
    })


def test_same_spacing_means_no_resampling():
    rng = np.random.default_rng(0)
    image = rng.normal(5.0, 3.0, (1, 9, 8, 7)).astype(np.float32)
    geometry = ImageGeometry((9, 8, 7), (1.0, 1.0, 1.0))
    out = preprocess_image(image, geometry, _plans([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(out, (image - image.mean()) / image.std(), rtol=1e-4, atol=1e-5)
    label = rng.integers(0, 3, (9, 8, 7))
    np.testing.assert_array_equal(preprocess_label(label, geometry, _plans([1.0, 1.0, 1.0])), label)


def test_resampling_where_spacing_differs_and_back():
    geometry = ImageGeometry((10, 12, 6), (1.0, 1.0, 2.0))
    plans = _plans([1.0, 1.0, 1.0])
    assert target_shape(geometry, plans) == (10, 12, 12)
    label = np.zeros((10, 12, 6), dtype=np.int64)
    label[2:8, 3:9, 1:5] = 1
    label[4:6, 5:7, 2:4] = 2
    resampled = preprocess_label(label, geometry, plans)
    assert resampled.shape == (10, 12, 12) and set(np.unique(resampled)) == {0, 1, 2}
    np.testing.assert_array_equal(resampled[:, :, ::2], label)  # nearest neighbour: each slice doubled
    np.testing.assert_array_equal(resampled[:, :, 1::2], label)
    image = preprocess_image(label[None].astype(np.float32), geometry, plans)
    assert image.shape == (1, 10, 12, 12) and image.dtype == np.float32

    one_hot = np.stack([resampled == k for k in range(3)]).astype(np.float32)
    restored = restore_geometry(one_hot, geometry, plans)
    assert restored.shape == (3, 10, 12, 6)
    np.testing.assert_array_equal(restored.argmax(axis=0), label)
    np.testing.assert_allclose(restored.sum(axis=0), 1.0, atol=1e-5)


def test_2d_image_with_coarser_spacing_is_upsampled():
    geometry = ImageGeometry((20, 30), (0.5, 0.5), format="png")
    image = np.random.default_rng(1).normal(size=(3, 20, 30)).astype(np.float32)
    with pytest.warns(UserWarning, match="3 channel"):
        out = preprocess_image(image, geometry, _plans([0.25, 0.5]))
    assert out.shape == (1, 40, 30)  # RGB converted to the plan's single channel, then resampled


def test_ct_and_per_channel_normalization():
    image = np.array([[[-1000.0, 0.0, 50.0, 3000.0]]], dtype=np.float32)
    ct = {"scheme": "ct", "clip": [-100.0, 200.0], "mean": 50.0, "std": 25.0}
    clipped = normalize(image, Normalization.from_dict(ct))
    np.testing.assert_allclose(clipped[0, 0], [-6.0, -2.0, 0.0, 6.0])
    both = np.concatenate([image, image])
    per_channel = {"scheme": "per_channel", "channels": [ct, {"scheme": "none"}]}
    mixed = normalize(both, Normalization.from_dict(per_channel))
    np.testing.assert_allclose(mixed[1], image[0])
    np.testing.assert_allclose(mixed[0], clipped[0])

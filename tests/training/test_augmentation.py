"""Augmentation: the region a rotated and scaled patch covers, and the random spatial transform."""

import math

import numpy as np
from monai.transforms.utils import create_rotate

from usema.training.augmentation import covered_region_size, random_spatial_matrix


def test_covered_region_grows_with_rotation_and_scale():
    identity = np.eye(3)
    assert covered_region_size(identity, (16, 24)) == (19, 27)  # patch + interpolation margin, odd
    quarter_turn = np.asarray(create_rotate(2, math.pi / 2))
    assert covered_region_size(quarter_turn, (16, 24)) == (27, 19)
    zoom_out = np.diag([1.4, 1.4, 1.4, 1.0])
    assert all(
        r >= 1.4 * p for r, p in zip(covered_region_size(zoom_out, (16, 16, 16)), (16, 16, 16), strict=True)
    )


def test_spatial_matrix_follows_its_probabilities_and_generator():
    never = dict(rotation=0.0, scaling=0.0)
    assert random_spatial_matrix(3, np.random.default_rng(0), never) is None
    always = dict(rotation=1.0, scaling=1.0)
    first = random_spatial_matrix(3, np.random.default_rng(4), always)
    assert first.shape == (4, 4) and not np.allclose(first, np.eye(4))
    np.testing.assert_array_equal(first, random_spatial_matrix(3, np.random.default_rng(4), always))
    scale_only = random_spatial_matrix(2, np.random.default_rng(1), dict(rotation=0.0, scaling=1.0))
    factor = scale_only[0, 0]
    assert 0.7 <= factor <= 1.4 and np.allclose(scale_only, np.diag([factor, factor, 1.0]))

"""Phantom datasets: deterministic by seed, of the stated shapes, two touching classes of distinct means."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from usema.data.datasets import check_dataset, load_case
from usema.data.layouts import load_dataset
from usema.data.phantoms import make_phantom_dataset, phantom_case
from usema.errors import DataError


def _arrays(root):
    spec = load_dataset(root)
    return [load_case(spec, case)[:2] for case in spec.cases]


def test_3d_phantoms_are_an_msd_dataset_of_the_stated_shape(tmp_path):
    root = make_phantom_dataset(tmp_path / "ph", num_cases=3)
    spec = load_dataset(root)
    assert (spec.format, spec.spatial_dims, spec.num_classes, len(spec.cases)) == ("msd", 3, 3, 3)
    check_dataset(spec)
    img = nib.load(str(spec.cases[0].images[0]))
    assert img.shape == (32, 40, 32)
    np.testing.assert_allclose(img.affine, np.eye(4))
    for image, label in _arrays(root):
        assert set(np.unique(label)) == {0, 1, 2}
        # the blob touches the ellipsoid
        assert (ndimage.binary_dilation(label == 2) & (label == 1)).any()
        means = [image[0][label == k].mean() for k in range(3)]
        assert means[0] < means[1] < means[2]


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = _arrays(make_phantom_dataset(tmp_path / "a", num_cases=2, shape=(16, 20, 16), seed=5))
    b = _arrays(make_phantom_dataset(tmp_path / "b", num_cases=2, shape=(16, 20, 16), seed=5))
    c = _arrays(make_phantom_dataset(tmp_path / "c", num_cases=2, shape=(16, 20, 16), seed=6))
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a[0][1], c[0][1])
    assert not np.array_equal(a[0][1], a[1][1])  # cases differ from one another


def test_2d_phantoms_are_a_png_folder(tmp_path):
    root = make_phantom_dataset(tmp_path / "ph2", spatial_dims=2, num_cases=2, shape=(48, 64))
    assert sorted(p.name for p in (root / "images").iterdir()) == ["phantom_000.png", "phantom_001.png"]
    spec = load_dataset(root)
    assert (spec.format, spec.spatial_dims, spec.num_classes, spec.label_mode) == (
        "folder2d",
        2,
        3,
        "semantic",
    )
    image, label, geometry = load_case(spec, spec.cases[0])
    assert image.shape == (1, 48, 64) and geometry.shape == (48, 64) and set(np.unique(label)) == {0, 1, 2}


def test_existing_folders_are_reused_or_refused(tmp_path):
    root = make_phantom_dataset(tmp_path / "ph", num_cases=1, shape=(12, 12, 12))
    stamp = (root / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns
    assert make_phantom_dataset(root, num_cases=1, shape=(12, 12, 12)) == root
    assert (root / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns == stamp
    assert json.loads((root / "phantoms.json").read_text())["seed"] == 0
    with pytest.raises(DataError, match="not empty"):
        make_phantom_dataset(root, num_cases=2, shape=(12, 12, 12))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not empty"):
        make_phantom_dataset(tmp_path / "other")
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    assert load_dataset(make_phantom_dataset(tmp_path / "empty", num_cases=1, shape=(12, 12, 12))).cases


def test_phantom_case_classes_have_different_textures():
    image, label = phantom_case((40, 40, 40), np.random.default_rng(3))
    assert image.dtype == np.float32 and label.dtype == np.uint8
    inner = [ndimage.binary_erosion(label == k, iterations=2) for k in (1, 2)]
    spreads = [float(image[mask].std()) for mask in inner if mask.sum() > 20]
    assert len(spreads) == 2 and spreads[1] > spreads[0] + 0.05  # the blob is grainier

"""Preprocessing: normalisation as planned, resampling only where the spacing differs, the way back, and the
resumable preprocessed folder."""

import json

import numpy as np
import pytest
from PIL import Image

from usema.data.io import ImageGeometry
from usema.data.phantoms import make_phantom_dataset
from usema.planning.planner import load_plans, plan_dataset
from usema.preprocessing.image import (
    LOCATIONS_PER_CLASS,
    class_locations,
    normalize,
    preprocess_dataset,
    preprocess_image,
    preprocess_label,
    restore_geometry,
    target_shape,
)


def _plans(target_spacing, normalization=None, num_channels=1):
    return {
        "target_spacing": target_spacing,
        "normalization": normalization or {"scheme": "zscore_per_image"},
        "dataset": {"num_channels": num_channels},
    }


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
    np.testing.assert_allclose(normalize(image, ct)[0, 0], [-6.0, -2.0, 0.0, 6.0])
    both = np.concatenate([image, image])
    mixed = normalize(both, {"scheme": "per_channel", "channels": [ct, {"scheme": "none"}]})
    np.testing.assert_allclose(mixed[1], image[0])
    np.testing.assert_allclose(mixed[0], normalize(image, ct)[0])


def test_class_locations_sample_voxels_of_each_class():
    label = np.zeros((100, 120), dtype=np.int64)
    label[10:90, 10:110] = 1
    label[50, 60] = 2
    found = class_locations(label, 4, np.random.default_rng(0))
    assert sorted(found) == ["class_locations_1", "class_locations_2", "class_locations_3"]
    assert found["class_locations_1"].shape == (LOCATIONS_PER_CLASS, 2)
    assert np.all(label[tuple(found["class_locations_1"].T)] == 1)
    np.testing.assert_array_equal(found["class_locations_2"], [[50, 60]])
    assert found["class_locations_3"].shape == (0, 2)


@pytest.fixture
def phantom_run(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", num_cases=3, shape=(12, 14, 10))
    run = tmp_path / "run"
    plan_dataset(data, run, device="cpu")
    return run


def test_preprocess_dataset_writes_every_case_and_resumes(phantom_run):
    plans = load_plans(phantom_run)
    out = preprocess_dataset(plans, phantom_run)
    files = sorted(out.glob("*.npz"))
    assert [f.stem for f in files] == plans["dataset"]["cases"]
    with np.load(files[0]) as stored:
        assert stored["image"].shape == (1, 12, 14, 10) and stored["image"].dtype == np.float32
        label = stored["label"]
        geometry = ImageGeometry.from_dict(json.loads(str(stored["geometry"])))
        locations = stored["class_locations_2"]
    assert geometry.shape == (12, 14, 10) and set(np.unique(label)) <= {0, 1, 2}
    assert len(locations) > 0 and np.all(label[tuple(locations.T)] == 2)

    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    preprocess_dataset(plans, phantom_run)
    assert {f.name: f.stat().st_mtime_ns for f in sorted(out.glob("*.npz")) if f.name != files[1].name} == {
        k: v for k, v in stamps.items() if k != files[1].name
    }
    assert files[1].is_file()
    assert not [p for p in out.iterdir() if p.suffix != ".npz"]  # no temporary files left


def test_an_edited_plan_is_honoured(phantom_run):
    path = phantom_run / "plans.json"
    plans = json.loads(path.read_text())
    preprocess_dataset(plans, phantom_run)
    plans["target_spacing"] = [2.0, 2.0, 2.0]  # a user's edit: coarser grid
    path.write_text(json.dumps(plans))
    out = preprocess_dataset(load_plans(phantom_run), phantom_run)
    with np.load(next(out.glob("*.npz"))) as stored:
        assert stored["image"].shape == (1, 6, 7, 5) and stored["label"].shape == (6, 7, 5)


def test_the_plans_channel_count_wins(tmp_path):
    root = tmp_path / "f2d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, mode in enumerate(("L", "L", "RGB")):
        pixels = np.full((8, 8) if mode == "L" else (8, 8, 3), 10 * (i + 1), dtype=np.uint8)
        pixels[0, 0] = 0
        Image.fromarray(pixels).save(root / "images" / f"c{i}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "labels" / f"c{i}.png")
    with pytest.warns(UserWarning, match="converted"):
        plans = plan_dataset(root, tmp_path / "run", device="cpu", num_channels=3)
    assert plans["dataset"]["num_channels"] == 3 and plans["dataset"]["channel_names"] == ["R", "G", "B"]
    with pytest.warns(UserWarning, match="converted"):
        out = preprocess_dataset(load_plans(tmp_path / "run"), tmp_path / "run")
    with np.load(out / "c0.npz") as stored:
        assert stored["image"].shape == (3, 8, 8)
        np.testing.assert_array_equal(stored["image"][0], stored["image"][2])  # gray repeated

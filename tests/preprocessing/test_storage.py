"""Preprocessed cases on disk: what is stored, how it is read back lazily, and when a case counts as done."""

import json

import numpy as np
import pytest

from usema.errors import DataError
from usema.preprocessing.storage import (
    INCOMPLETE,
    LOCATIONS_PER_CLASS,
    case_files,
    open_case,
    sample_class_locations,
    stored_key,
    write_case,
)


def test_class_locations_sample_voxels_of_each_class():
    label = np.zeros((100, 120), dtype=np.int64)
    label[10:90, 10:110] = 1
    label[50, 60] = 2
    found = sample_class_locations(label, 4, seed=0)
    assert sorted(found) == [1, 2, 3]
    assert found[1].shape == (LOCATIONS_PER_CLASS, 2) and found[1].dtype == np.int32
    assert np.all(label[tuple(found[1].T)] == 1)
    np.testing.assert_array_equal(found[2], [[50, 60]])
    assert found[3].shape == (0, 2)
    np.testing.assert_array_equal(
        sample_class_locations(label, 4, seed=0)[1], found[1]
    )  # same seed, same sample


def test_a_stored_case_reads_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
    label = rng.integers(0, 3, size=(6, 7, 5))
    write_case(tmp_path, "c", image, label, num_classes=3, key="k1", geometry={"shape": [6, 7, 5]})
    assert stored_key(tmp_path, "c") == "k1"
    meta = json.loads(case_files(tmp_path, "c")["meta"].read_text())
    assert meta["geometry"] == {"shape": [6, 7, 5]} and meta["complete"]
    case = open_case(tmp_path, "c")
    assert case.shape == (6, 7, 5) and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.read_image(), image)
    np.testing.assert_array_equal(case.read_label(), label)
    assert case.present_classes == [1, 2]
    for k in (1, 2):
        where = np.array([case.class_location(k, i) for i in range(case.location_count(k))])
        np.testing.assert_array_equal(where, np.argwhere(label == k))  # all of them: fewer than the cap
    with pytest.raises(IndexError):
        case.class_location(1, case.location_count(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.npy", "c_locations.npy", "c_seg.npy"]


def test_an_interrupted_or_foreign_case_is_not_taken_for_a_done_one(tmp_path):
    assert stored_key(tmp_path, "c") is None
    meta = case_files(tmp_path, "c")["meta"]
    meta.write_text(json.dumps({"plans_key": "k1", "complete": False}))  # killed while writing the arrays
    assert stored_key(tmp_path, "c") == INCOMPLETE
    with pytest.raises(DataError, match="not a complete preprocessed case"):
        open_case(tmp_path, "c")
    meta.write_text("my notes")
    assert stored_key(tmp_path, "c") == ""
    write_case(tmp_path, "u", np.zeros((1, 4, 4), np.float32), None, num_classes=2, key="k1")
    assert stored_key(tmp_path, "u") == "k1" and not case_files(tmp_path, "u")["label"].exists()
    with pytest.raises(DataError, match="no label"):
        open_case(tmp_path, "u")

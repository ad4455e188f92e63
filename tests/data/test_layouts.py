"""nnU-Net's "ignore" label: read from dataset.json, kept out of the classes, carried into the plan and the
preprocessed labels as one value past the last class."""

import json

import nibabel as nib
import numpy as np
import pytest

from usema.data.datasets import load_case
from usema.data.layouts import dataset_ignore_value, load_dataset
from usema.errors import DataError
from usema.planning.planner import plan_dataset
from usema.preprocessing.dataset import preprocess_dataset
from usema.preprocessing.storage import open_case

SHAPE = (8, 9, 7)


def make_nnunet_with_ignore(root, labels=None, num_cases=3):
    """An nnU-Net v2 raw folder whose labels mark a slab of each case 'ignore' (value 3)."""
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        nib.save(nib.Nifti1Image(rng.normal(size=SHAPE).astype(np.float32), np.eye(4)),
                 root / "imagesTr" / f"pt_{i}_0000.nii.gz")
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[1:4, 2:6, 1:4] = 1
        label[5:7, 1:3, 2:5] = 2
        label[:, 7:, :] = 3  # not annotated
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"pt_{i}.nii.gz")
    manifest = {
        "channel_names": {"0": "MRI"},
        "labels": labels or {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_the_ignore_label_is_no_class_and_keeps_its_voxels(tmp_path):
    spec = load_dataset(make_nnunet_with_ignore(tmp_path / "data"))
    assert spec.labels == {0: "background", 1: "anterior", 2: "posterior"}
    assert spec.num_classes == 3 and spec.ignore_label == 3 and spec.ignore_value == 3

    _, label, _ = load_case(spec, spec.cases[0])
    assert sorted(np.unique(label).tolist()) == [0, 1, 2, 3] and np.all(label[:, 7:, :] == 3)
    assert dataset_ignore_value(tmp_path / "data" / "labelsTr") == 3


def test_binary_labels_keep_the_ignored_voxels_apart(tmp_path):
    spec = load_dataset(make_nnunet_with_ignore(tmp_path / "data"), "binary")
    _, label, _ = load_case(spec, spec.cases[0])
    assert spec.num_classes == 2 and spec.ignore_label == 2
    assert sorted(np.unique(label).tolist()) == [0, 1, 2] and np.all(label[:, 7:, :] == 2)


def test_the_plan_and_the_preprocessed_labels_carry_it(tmp_path):
    data = make_nnunet_with_ignore(tmp_path / "data")
    plans = plan_dataset(data, tmp_path / "run", device="cpu", patch_size=[8, 8, 8], batch_size=2)
    assert plans.dataset.ignore_label == 3 and plans.dataset.num_classes == 3
    assert plans.to_dict()["dataset"]["ignore_label"] == 3
    assert plans.fingerprint["class_voxels"] == {"1": 3 * 36, "2": 3 * 12}
    case = open_case(preprocess_dataset(plans, tmp_path / "run"), "pt_0")
    assert np.all(case.read_label()[:, 7:, :] == 3)
    assert sorted(case.location_rows) == [1, 2]  # patches are centred on classes, never on ignored voxels


def test_a_plan_without_an_ignore_label_says_none(tmp_path):
    data = make_nnunet_with_ignore(tmp_path / "data", labels={"background": 0, "a": 1, "b": 2, "c": 3})
    plans = plan_dataset(data, tmp_path / "run", device="cpu", patch_size=[8, 8, 8], batch_size=2)
    assert plans.dataset.ignore_label is None and "ignore_label" not in plans.to_dict()["dataset"]


@pytest.mark.parametrize("labels", [
    {"background": 0, "ignore": 1, "a": 2},
    {"background": 0, "a": 1, "ignore": 5},
])
def test_an_ignore_label_that_is_not_the_highest_is_refused(tmp_path, labels):
    data = make_nnunet_with_ignore(tmp_path / "data", labels=labels)
    with pytest.raises(DataError, match=r"dataset.json: label 'ignore' is \d; the ignore label must have the "
                                        r"highest value, one past the others"):
        load_dataset(data)


def test_region_labels_are_still_refused(tmp_path):
    data = make_nnunet_with_ignore(tmp_path / "data", labels={"background": 0, "whole": [1, 2], "ignore": 3})
    with pytest.raises(DataError, match=r"label 'whole': region-based or non-integer labels \(\[1, 2\]\) are not"):
        load_dataset(data)


def test_non_consecutive_labels_keep_their_ignore_value(tmp_path):
    data = make_nnunet_with_ignore(tmp_path / "data", labels={"background": 0, "b": 2, "ignore": 3})
    for path in (data / "labelsTr").iterdir():  # no value 1: the labels are 0, 2 and the ignore label 3
        label = np.asarray(nib.load(path).dataobj)
        nib.save(nib.Nifti1Image(np.where(label == 1, 0, label).astype(np.uint8), np.eye(4)), path)
    spec = load_dataset(data)
    assert spec.label_values == [0, 2] and (spec.ignore_label, spec.ignore_value) == (2, 3)
    _, label, _ = load_case(spec, spec.cases[0])
    assert sorted(np.unique(label).tolist()) == [0, 1, 2] and np.all(label[:, 7:, :] == 2)
    plans = plan_dataset(data, tmp_path / "run", device="cpu", patch_size=[8, 8, 8], batch_size=2)
    info = plans.dataset
    assert (info.label_values, info.ignore_label, info.ignore_value) == ([0, 2], 2, 3)
    binary = plan_dataset(data, tmp_path / "binary", label_mode="binary", device="cpu", patch_size=[8, 8, 8],
                          batch_size=2).dataset
    # binary: the one foreground value 2 is the class's; the ignore label keeps its value 3
    assert (binary.label_values, binary.ignore_label, binary.ignore_value) == ([0, 2], 2, 3)

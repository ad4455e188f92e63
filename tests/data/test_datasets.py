"""Format detection, case loading, the checks on bad input, the instance <-> class encoding, and the label
files' values (0/255 masks, dataset.json labels 0, 2, 5) mapped to training classes and back."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from usema.data.datasets import check_dataset, load_case, resolve_label_values, to_label_values
from usema.data.instance_classes import BOUNDARY, INTERIOR
from usema.data.layouts import load_dataset
from usema.errors import DataError
from usema.planning.planner import plan_dataset

SHAPE = (6, 7, 5)


def _nifti(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def _label(seed=0, shape=SHAPE):
    label = np.zeros(shape, dtype=np.uint8)
    label[1:4, 2:5, 1:3] = 1
    label[4:5, 1:3, 2:4] = 2
    return np.roll(label, seed, axis=1)


def make_msd(root, num_cases=3, labels=None, entries=None):
    """A tiny MSD dataset: NIfTI images and labels, dataset.json listing them."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(num_cases):
        _nifti(root / "imagesTr" / f"case_{i}.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        _nifti(root / "labelsTr" / f"case_{i}.nii.gz", _label(i))
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    manifest = {
        "modality": {"0": "MRI"},
        "labels": labels or {"0": "background", "1": "a", "2": "b"},
        "training": training if entries is None else entries,
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def make_nnunet(root, num_cases=2):
    rng = np.random.default_rng(1)
    for i in range(num_cases):
        for c in range(2):
            _nifti(
                root / "imagesTr" / f"pt_{i:03d}_{c:04d}.nii.gz", rng.normal(size=SHAPE).astype(np.float32)
            )
        _nifti(root / "labelsTr" / f"pt_{i:03d}.nii.gz", _label(i))
    manifest = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "zone": 1, "lesion": 2},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def make_folder2d(root, modes=("L", "L", "RGB"), label_values=None):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, mode in enumerate(modes):
        gray = np.random.default_rng(i).integers(0, 255, (10, 12)).astype(np.uint8)
        pixels = gray if mode == "L" else np.stack([gray, gray, gray], axis=-1)
        Image.fromarray(pixels).save(root / "images" / f"img{i}.png")
        label = np.zeros((10, 12), dtype=np.uint8)
        label[2:6, 3:8] = 1 if label_values is None else label_values
        Image.fromarray(label).save(root / "labels" / f"img{i}.png")
    return root


def test_detects_msd(tmp_path):
    spec = load_dataset(make_msd(tmp_path / "msd"))
    assert (spec.format, spec.spatial_dims, spec.channel_names, spec.modality) == ("msd", 3, ["MRI"], "MR")
    assert spec.labels == {0: "background", 1: "a", 2: "b"} and spec.num_classes == 3
    assert [c.case_id for c in spec.cases] == ["case_0", "case_1", "case_2"]
    image, label, geometry = load_case(spec, spec.cases[1])
    assert image.shape == (1, *SHAPE) and label.dtype == np.int64 and geometry.shape == SHAPE
    np.testing.assert_array_equal(label, _label(1))


def test_detects_nnunet_with_channel_files(tmp_path):
    spec = load_dataset(make_nnunet(tmp_path / "nn"))
    assert (spec.format, spec.spatial_dims, spec.channel_names) == ("nnunet", 3, ["T2", "ADC"])
    assert spec.labels == {0: "background", 1: "zone", 2: "lesion"}
    assert [c.case_id for c in spec.cases] == ["pt_000", "pt_001"]
    assert [p.name for p in spec.cases[0].images] == ["pt_000_0000.nii.gz", "pt_000_0001.nii.gz"]
    image, label, _ = load_case(spec, spec.cases[0])
    assert image.shape == (2, *SHAPE) and label.shape == SHAPE


def test_detects_folder2d_and_converts_the_minority_channel_count(tmp_path):
    root = make_folder2d(tmp_path / "f2d", modes=("L", "L", "RGB"))
    with pytest.warns(UserWarning, match="1 of 3 images"):
        spec = load_dataset(root)
    assert (spec.format, spec.spatial_dims, spec.channel_names, spec.label_mode) == (
        "folder2d",
        2,
        ["gray"],
        "semantic",
    )
    assert spec.num_classes == 2
    image, label, geometry = load_case(spec, spec.case("img2"))  # the RGB one
    assert image.shape == (1, 10, 12) and geometry.format == "png"
    gray = np.random.default_rng(2).integers(0, 255, (10, 12))
    np.testing.assert_allclose(image[0], gray, atol=0.51)  # equal channels -> the same gray (up to rounding)
    assert label.sum() == 20


def test_a_tie_of_channel_counts_is_not_called_a_majority(tmp_path):
    with pytest.warns(UserWarning, match=r"1 of 3 images do not have 1 channel \(2 have: the majority\)"):
        load_dataset(make_folder2d(tmp_path / "most", modes=("L", "L", "RGB")))
    root = make_folder2d(tmp_path / "tie", modes=("L", "RGB", "L", "RGB"))
    with pytest.warns(UserWarning) as caught:
        spec = load_dataset(root)
    assert spec.num_channels == 3  # the tie goes to the larger count
    message = str(caught[0].message)
    assert message == (
        f"{root}: 2 of 4 images do not have 3 channels (2 have: as many as have 1, and a tie goes to the larger "
        "count); they are converted on load"
    )
    assert "majority" not in message


def test_a_dataset_warns_once_per_process_however_often_it_is_read(tmp_path):
    root = make_folder2d(tmp_path / "mixed", modes=("L", "L", "RGB"))
    with pytest.warns(UserWarning, match="1 of 3 images do not have 1 channel"):
        load_dataset(root)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")  # Python's own once-per-place would not hide it
        assert load_dataset(root).num_channels == 1
    assert again == []


def test_folder2d_label_modes(tmp_path):
    root = make_folder2d(tmp_path / "mask", modes=("L", "L"), label_values=255)
    with pytest.warns(UserWarning, match="binary"):
        spec = load_dataset(root)
    assert spec.label_mode == "binary" and spec.labels == {0: "background", 1: "foreground"}
    assert set(np.unique(load_case(spec, spec.cases[0])[1])) == {0, 1}
    spec = load_dataset(root, label_mode="instance")
    assert spec.num_classes == 3
    label = load_case(spec, spec.cases[0])[1]
    assert label[3, 4] == INTERIOR and label[2, 3] == BOUNDARY and label[0, 0] == 0


@pytest.mark.parametrize(
    ("corrupt", "name", "problem"),
    [
        ("shape", "case_1.nii.gz", "shape"),
        ("spacing", "case_1.nii.gz", "spacing"),
        ("affine", "case_1.nii.gz", "affine"),
        ("fraction", "case_1.nii.gz", "integers"),
        ("undeclared", "case_1.nii.gz", "not declared"),
        ("nan", "case_1.nii.gz", "NaN"),
        ("truncated", "case_1.nii.gz", "cannot read"),
    ],
)
def test_bad_cases_raise_naming_file_and_problem(tmp_path, corrupt, name, problem):
    root = make_msd(tmp_path / "msd")
    label_path, image_path = root / "labelsTr" / "case_1.nii.gz", root / "imagesTr" / "case_1.nii.gz"
    if corrupt == "shape":
        _nifti(label_path, np.zeros((6, 7, 4), dtype=np.uint8))
    elif corrupt == "spacing":
        _nifti(label_path, _label(), np.diag([1.0, 1.0, 3.0, 1.0]))
    elif corrupt == "affine":
        shifted = np.eye(4)
        shifted[:3, 3] = [5.0, 0.0, 0.0]
        _nifti(label_path, _label(), shifted)
    elif corrupt == "fraction":
        _nifti(label_path, _label().astype(np.float32) * 0.5)
    elif corrupt == "undeclared":
        _nifti(label_path, _label() * 3)
    elif corrupt == "nan":
        image = np.zeros(SHAPE, dtype=np.float32)
        image[0, 0, 0] = np.nan
        _nifti(image_path, image)
    elif corrupt == "truncated":
        image_path.write_bytes(image_path.read_bytes()[:100])
    spec = load_dataset(root)
    with pytest.raises(DataError, match=problem) as err:
        check_dataset(spec)
    assert name in str(err.value)
    load_case(spec, spec.cases[0])  # the good cases still load


def test_empty_missing_and_escaping_datasets_raise(tmp_path):
    with pytest.raises(DataError, match="empty dataset") as err:
        load_dataset(make_msd(tmp_path / "empty", num_cases=0))
    assert "dataset.json" in str(err.value)

    outside = _nifti(tmp_path / "outside.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    escape = [{"image": "../outside.nii.gz", "label": "./labelsTr/case_0.nii.gz"}]
    with pytest.raises(DataError, match="outside the dataset folder") as err:
        load_dataset(make_msd(tmp_path / "escape", num_cases=1, entries=escape))
    assert "dataset.json" in str(err.value) and outside.is_file()
    absolute = [{"image": str(outside), "label": "./labelsTr/case_0.nii.gz"}]
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_dataset(make_msd(tmp_path / "absolute", num_cases=1, entries=absolute))

    missing = [{"image": "./imagesTr/nothere.nii.gz", "label": "./labelsTr/case_0.nii.gz"}]
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(make_msd(tmp_path / "missing", num_cases=1, entries=missing))
    assert "nothere.nii.gz" in str(err.value)

    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="not a dataset"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "noimages" / "images").mkdir(parents=True)
    (tmp_path / "noimages" / "labels").mkdir()
    with pytest.raises(DataError, match="empty dataset"):
        load_dataset(tmp_path / "noimages")


def test_links_inside_the_folder_may_point_anywhere(tmp_path):
    real = make_msd(tmp_path / "real", num_cases=2)
    linked = tmp_path / "linked"
    (linked / "imagesTr").mkdir(parents=True)
    (linked / "labelsTr").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        for i in range(2):
            (linked / sub / f"case_{i}.nii.gz").symlink_to(real / sub / f"case_{i}.nii.gz")
    (linked / "dataset.json").write_text((real / "dataset.json").read_text())
    spec = load_dataset(linked)
    check_dataset(spec)
    assert len(spec.cases) == 2


def test_nnunet_missing_channel_and_label_raise(tmp_path):
    root = make_nnunet(tmp_path / "nn")
    (root / "imagesTr" / "pt_001_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="missing channel 1") as err:
        load_dataset(root)
    assert "pt_001_0001.nii.gz" in str(err.value)
    root = make_nnunet(tmp_path / "nn2")
    (root / "labelsTr" / "pt_000.nii.gz").unlink()
    with pytest.raises(DataError, match="missing label") as err:
        load_dataset(root)
    assert "pt_000.nii.gz" in str(err.value)


def make_nnunet_photos(root, modes=("RGB", "RGB", "L")):
    """nnU-Net's layout of natural images: channel_names R, G, B and one CASE_0000.png per case holding them."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, mode in enumerate(modes):
        pixels = np.random.default_rng(i).integers(0, 255, (10, 12, 3) if mode == "RGB" else (10, 12))
        Image.fromarray(pixels.astype(np.uint8)).save(root / "imagesTr" / f"img{i}_0000.png")
        label = np.zeros((10, 12), dtype=np.uint8)
        label[2:6, 3:8] = 1
        Image.fromarray(label).save(root / "labelsTr" / f"img{i}.png")
    manifest = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "polyp": 1},
                "numTraining": len(modes), "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_nnunet_rgb_photographs_are_one_file_per_case(tmp_path):
    spec = load_dataset(make_nnunet_photos(tmp_path / "nn"))
    assert (spec.format, spec.spatial_dims, spec.num_channels) == ("nnunet", 2, 3)
    assert [[p.name for p in case.images] for case in spec.cases] == [["img0_0000.png"], ["img1_0000.png"],
                                                                       ["img2_0000.png"]]
    image, label, _ = load_case(spec, spec.cases[0])
    pixels = np.random.default_rng(0).integers(0, 255, (10, 12, 3))
    np.testing.assert_array_equal(image, np.moveaxis(pixels, -1, 0))
    assert label.sum() == 20
    with pytest.warns(UserWarning, match=r"img2_0000\.png: 1 channel converted to 3"):
        gray, _, _ = load_case(spec, spec.cases[2])  # a gray photograph among them, as in a 2D folder
    assert gray.shape == (3, 10, 12)


def test_only_photographs_hold_every_channel_in_one_file(tmp_path):
    root = make_nnunet_photos(tmp_path / "nn", modes=("L",))
    (root / "imagesTr" / "img0_0002.png").write_bytes((root / "imagesTr" / "img0_0000.png").read_bytes())
    with pytest.raises(DataError, match=r"img0_0001\.png: missing channel 1 of case img0"):
        load_dataset(root)  # channel files of a photograph must still be complete
    root = make_nnunet(tmp_path / "nn2")
    for case in ("pt_000", "pt_001"):
        (root / "imagesTr" / f"{case}_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"pt_000_0001\.nii\.gz: missing channel 1"):
        load_dataset(root)  # a volume keeps a file per channel, as nnU-Net asks
    root = make_nnunet_photos(tmp_path / "nn3", modes=("L",))
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["channel_names"] = {"0": "a", "1": "b"}
    (root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"img0_0000\.png.*has 1 channel but the dataset declares 2"):
        load_dataset(root)


def test_folder2d_image_without_label_raises(tmp_path):
    root = make_folder2d(tmp_path / "f2d", modes=("L", "L"))
    (root / "labels" / "img1.png").unlink()
    with pytest.raises(DataError, match="no label file") as err:
        load_dataset(root)
    assert "img1.png" in str(err.value)


def test_mixed_spatial_dims_raise(tmp_path):
    root = make_msd(tmp_path / "msd", num_cases=2)
    _nifti(root / "imagesTr" / "case_1.nii.gz", np.zeros((6, 7), dtype=np.float32))
    _nifti(root / "labelsTr" / "case_1.nii.gz", np.zeros((6, 7), dtype=np.uint8))
    spec = load_dataset(root)
    with pytest.raises(DataError, match="2D but the dataset is 3D") as err:
        check_dataset(spec)
    assert "case_1.nii.gz" in str(err.value)


def test_no_warnings_for_a_consistent_dataset(tmp_path):
    spec = load_dataset(make_msd(tmp_path / "msd", num_cases=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dataset(spec)


# ------------------------------------------------------------------------------------- label values
def test_0_255_masks_are_one_class_whose_value_is_255(tmp_path):
    root = make_folder2d(tmp_path / "mask", modes=("L", "L"), label_values=255)
    with pytest.warns(UserWarning, match="binary"):
        spec = load_dataset(root)
    assert spec.labels == {0: "background", 1: "foreground"} and spec.label_values == [0, 255]
    label = load_case(spec, spec.cases[0])[1]
    assert set(np.unique(label)) == {0, 1}
    np.testing.assert_array_equal(to_label_values(label, spec.class_values), 255 * label)
    # asked for binary labels, the folder is read when the plan needs its values (at planning)
    spec = load_dataset(root, label_mode="binary")
    assert spec.label_values is None and resolve_label_values(spec).label_values == [0, 255]


def test_binary_masks_of_several_values_are_written_as_1(tmp_path):
    spec = load_dataset(make_msd(tmp_path / "msd"), label_mode="binary")  # labels 1 and 2, merged
    assert spec.label_values == [0, 1]
    spec = load_dataset(make_msd(tmp_path / "one", labels={"0": "background", "7": "tumour"}), "binary")
    assert spec.label_values == [0, 7]


def test_dataset_json_labels_0_2_5_are_the_classes_0_1_2(tmp_path):
    root = make_msd(tmp_path / "msd", labels={"0": "background", "2": "organ", "5": "lesion"})
    for i in range(3):  # the label files hold 2 and 5 where _label holds 1 and 2
        path = root / "labelsTr" / f"case_{i}.nii.gz"
        path.unlink()
        _nifti(path, np.choose(_label(i), [0, 2, 5]).astype(np.uint8))
    spec = load_dataset(root)
    assert spec.labels == {0: "background", 1: "organ", 2: "lesion"} and spec.label_values == [0, 2, 5]
    label = load_case(spec, spec.cases[1])[1]
    np.testing.assert_array_equal(label, _label(1))
    np.testing.assert_array_equal(to_label_values(label, spec.label_values), np.choose(_label(1), [0, 2, 5]))
    plans = plan_dataset(root, tmp_path / "run", device="cpu", patch_size=[8, 8, 8], batch_size=2)
    assert plans.dataset.label_values == [0, 2, 5] and plans.dataset.value_names() == {2: "organ", 5: "lesion"}
    assert plans.fingerprint["class_voxels"] == {"1": 3 * 18, "2": 3 * 4}


def test_values_the_labels_do_not_declare_and_labels_without_background_are_refused(tmp_path):
    root = make_msd(tmp_path / "msd", labels={"0": "background", "1": "a", "5": "b"})  # the files hold 2
    with pytest.raises(DataError, match=r"label values \[2\] are not declared in the dataset's labels \[0, 1, 5\]"):
        load_case(load_dataset(root), load_dataset(root).cases[0])
    with pytest.raises(DataError, match="must include 0"):
        load_dataset(make_msd(tmp_path / "nobg", labels={"1": "a", "2": "b"}))


def test_a_2d_folder_of_values_0_2_5_names_its_classes_by_value(tmp_path):
    root = tmp_path / "f2d"
    make_folder2d(root, modes=("L", "L"))
    for i, value in enumerate((2, 5)):
        label = np.zeros((10, 12), dtype=np.uint8)
        label[2:6, 3:8] = value
        Image.fromarray(label).save(root / "labels" / f"img{i}.png")
    spec = load_dataset(root, label_mode="semantic")
    assert spec.labels == {0: "background", 1: "class_2", 2: "class_5"} and spec.label_values == [0, 2, 5]
    assert np.unique(load_case(spec, spec.case("img1"))[1]).tolist() == [0, 2]

"""Channel counts: only 2D colour photographs are converted (said once); every other mismatch is refused, for
every case, naming the file and both counts."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from usema.data.channels import convert_channels
from usema.data.datasets import check_dataset
from usema.data.io import ImageGeometry
from usema.data.layouts import load_dataset
from usema.errors import DataError

SHAPE = (6, 7, 5)


def _msd(root, volumes_per_case, modality):
    """An MSD dataset whose case i has volumes_per_case[i] volumes (1: a 3D file, more: a 4D file)."""
    rng = np.random.default_rng(0)
    training = []
    for i, volumes in enumerate(volumes_per_case):
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        shape = SHAPE if volumes == 1 else (*SHAPE, volumes)
        nib.save(
            nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4)),
            root / "imagesTr" / f"c{i}.nii.gz",
        )
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), root / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"modality": modality, "labels": {"0": "background", "1": "a"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_a_later_4d_case_with_three_volumes_is_refused_not_mixed_to_gray(tmp_path):
    spec = load_dataset(_msd(tmp_path / "d", [1, 3], {"0": "MRI"}))
    with pytest.raises(DataError, match=r"c1\.nii\.gz: has 3 channels but 1 is declared"):
        check_dataset(spec)


def test_a_later_single_volume_case_of_a_two_modality_dataset_is_refused_not_duplicated(tmp_path):
    spec = load_dataset(_msd(tmp_path / "d", [2, 2, 1], {"0": "T1", "1": "T2"}))
    with pytest.raises(DataError, match=r"c2\.nii\.gz: has 1 channel but 2 are declared"):
        check_dataset(spec)


def test_colour_photographs_of_a_gray_dataset_are_converted_with_one_warning(tmp_path):
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 9, 3), 40 * i, np.uint8)).save(root / "imagesTr" / f"p{i}_0000.png")
        Image.fromarray(np.zeros((8, 9), np.uint8)).save(root / "labelsTr" / f"p{i}.png")
    meta = {"channel_names": {"0": "gray"}, "labels": {"background": 0, "cell": 1}, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    spec = load_dataset(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_dataset(spec)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "p0_0000.png: 3 channels converted to 1" in messages[0]


def test_only_2d_photographs_with_one_or_three_channels_convert():
    rgb = np.stack([np.full((4, 5), v, np.float32) for v in (10.0, 20.0, 30.0)])
    photo = ImageGeometry((4, 5), (1.0, 1.0), format="png")
    with pytest.warns(UserWarning, match="converted to 1"):
        gray = convert_channels(rgb, 1, photo, "a.png")
    assert gray.shape == (1, 4, 5) and gray[0, 0, 0] == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
    with pytest.raises(DataError, match=r"a\.nii: has 3 channels but 1 is declared"):
        convert_channels(rgb, 1, ImageGeometry((4, 5), (1.0, 1.0), format="nifti"), "a.nii")
    with pytest.raises(DataError, match=r"has 3 channels but 2 are declared"):
        convert_channels(rgb, 2, photo, "a.png")
    volume = ImageGeometry((4, 5, 1), (1.0, 1.0, 1.0), format="tiff")
    with pytest.raises(DataError, match=r"has 1 channel but 3"):
        convert_channels(rgb[:1, :, :, None], 3, volume, "a.tif")

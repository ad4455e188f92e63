"""The fingerprint: exact shapes, spacings, class counts and foreground intensity statistics."""

import json

import nibabel as nib
import numpy as np

from usema.data.layouts import load_dataset
from usema.planning.fingerprint import compute_fingerprint


def _dataset(root, shapes, spacings):
    """Cases whose foreground (class 1: 8 voxels, class 2: 1 voxel) has intensity 10 + case index."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, (shape, spacing) in enumerate(zip(shapes, spacings, strict=True)):
        label = np.zeros(shape, dtype=np.uint8)
        label[:2, :2, :2] = 1
        label[-1, -1, -1] = 2
        image = np.where(label > 0, 10.0 + i, -5.0).astype(np.float32)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"c{i}.nii.gz"))
        training.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "bg", "1": "one", "2": "two"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return load_dataset(root)


def test_fingerprint_values(tmp_path):
    shapes = [(4, 5, 6), (6, 5, 4), (8, 9, 10)]
    spacings = [(1.0, 1.0, 2.0), (1.0, 1.0, 3.0), (0.5, 1.0, 2.0)]
    fingerprint = compute_fingerprint(_dataset(tmp_path / "d", shapes, spacings))
    assert fingerprint["num_cases"] == 3
    assert fingerprint["shapes"] == [list(s) for s in shapes]
    assert fingerprint["median_shape"] == [6.0, 5.0, 6.0]
    assert fingerprint["median_spacing"] == [1.0, 1.0, 2.0]
    assert fingerprint["class_voxels"] == {"1": 24, "2": 3}
    assert fingerprint["foreground_voxels"] == [9, 9, 9]  # per case, what validation is stratified by
    stats = fingerprint["intensity"][0]
    assert fingerprint["intensity_over"] == "foreground"
    assert (stats["min"], stats["max"]) == (10.0, 12.0)  # background (-5) never sampled
    assert abs(stats["mean"] - 11.0) < 0.05 and 10.0 <= stats["p00_5"] <= stats["p99_5"] <= 12.0


def test_fingerprint_is_deterministic_by_seed(tmp_path):
    spec = _dataset(tmp_path / "d", [(5, 5, 5)] * 2, [(1.0, 1.0, 1.0)] * 2)
    assert compute_fingerprint(spec, seed=3) == compute_fingerprint(spec, seed=3)
    assert compute_fingerprint(spec, cases=spec.cases[:1])["num_cases"] == 1

"""Evaluation with nnU-Net's ignore label: reference voxels so labelled are scored nowhere."""

import json

import nibabel as nib
import numpy as np
import pytest

from usema.cli import main
from usema.evaluation.api import evaluate

SHAPE = (10, 10, 6)


def _write(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), path)
    return path


@pytest.fixture
def cases(tmp_path):
    """A reference whose left half is not annotated (3 = ignore) and a prediction that is right on the
    annotated half and wrong (class 1) on the other."""
    reference = np.zeros(SHAPE, np.uint8)
    reference[6:9, 2:8, 1:5] = 1
    reference[:5] = 3
    prediction = np.where(reference == 3, 1, reference)
    _write(reference, tmp_path / "data" / "labelsTs" / "c.nii.gz")
    _write(prediction, tmp_path / "pred" / "c.nii.gz")
    return tmp_path


def test_ignored_voxels_are_scored_nowhere(cases):
    summary = evaluate(cases / "pred", cases / "data" / "labelsTs", output=cases / "eval", ignore_label=3)
    assert list(summary["classes"]) == ["1"]  # the ignore value is no class
    assert summary["classes"]["1"]["dice"]["mean"] == pytest.approx(1.0)
    assert summary["ignore_label"] == 3

    counted = evaluate(cases / "pred", cases / "data" / "labelsTs", output=cases / "eval2", labels={1: "a"})
    assert counted["classes"]["1"]["dice"]["mean"] == pytest.approx(2 * 72 / (72 + 72 + 300))


def test_the_dataset_json_beside_the_reference_names_it(cases, capsys):
    (cases / "data" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "ignore": 3}, "file_ending": ".nii.gz"}))
    assert main(["evaluate", str(cases / "pred"), str(cases / "data" / "labelsTs"), "-o", str(cases / "e")]) == 0
    summary = json.loads((cases / "e" / "summary.json").read_text())
    assert summary["ignore_label"] == 3 and summary["classes"]["1"]["dice"]["mean"] == pytest.approx(1.0)

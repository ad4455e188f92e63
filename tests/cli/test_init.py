"""The command line's own behaviour: warnings as one line each."""

import nibabel as nib
import numpy as np

from usema.cli import main


def test_a_warning_is_one_line_without_python_source(tmp_path, capsys):
    for folder, value in (("gt", 1), ("pred", 1)):
        (tmp_path / folder).mkdir()
        label = np.zeros((6, 6, 6), np.uint8)
        label[2:4, 2:4, 2:4] = value
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / folder / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.uint8), np.eye(4)), tmp_path / "gt" / "b.nii.gz")

    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--chill"]) == 0

    warning_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warning_lines == [
        f"usema: warning: 1 of 2 reference cases have no prediction in {tmp_path / 'pred'} and are not scored "
        "(chill), e.g. b"
    ]

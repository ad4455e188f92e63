"""`usema predict` on nnU-Net results folders: which folders it takes, and the ones it refuses in one line."""

import json

import numpy as np
import pytest
import torch

from usema.errors import CheckpointError, UsemaError
from usema.inference.predict_files import predict
from usema.integrations.nnunet.results import is_results_folder

pytest.importorskip("nnunetv2")


@pytest.fixture
def resenc_results(tmp_path, resenc_plans):
    """nnU-Net's results folder of a plain ResEnc UNet trained by nnU-Net's default trainer (fold 0, final)."""
    folder = tmp_path / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(resenc_plans))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
        "file_ending": ".nii.gz"}))
    torch.save({"network_weights": {}, "init_args": {"configuration": "3d_fullres"}, "trainer_name": "nnUNetTrainer",
                "_best_ema": np.float64(0.1)}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_results_folders_are_told_from_usema_runs(resenc_results, two_fold_run):
    assert is_results_folder(resenc_results)
    assert not is_results_folder(two_fold_run[1]) and not is_results_folder(resenc_results / "fold_0")


def test_a_results_folder_of_another_network_or_without_the_checkpoint_is_refused(resenc_results, tmp_path):
    with pytest.raises(UsemaError, match="holds nnU-Net's ResidualEncoderUNet trained by nnUNetTrainer, not USEMA; "
                                         "predict it with nnUNetv2_predict"):
        predict(resenc_results, [tmp_path], tmp_path / "out", checkpoint="latest")
    with pytest.raises(CheckpointError, match=r"fold_0/checkpoint_best.pth: no such nnU-Net checkpoint"):
        predict(resenc_results, [tmp_path], tmp_path / "out", fold=0)
    with pytest.raises(CheckpointError, match=r"__3d_fullres: no fold holds checkpoint_best.pth; nnU-Net's other one "
                                              r"is checkpoint_final.pth \(--checkpoint latest\)"):
        predict(resenc_results, [tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_inputs_are_checked_from_their_headers_before_the_network_is_built(resenc_results, tmp_path):
    import nibabel as nib

    from usema.errors import DataError
    from usema.integrations.nnunet.plans import convert_plans

    results = tmp_path / "nnUNetTrainerUSEMA__nnUNetResEncUNetMPlans_USEMA__3d_fullres"
    (results / "fold_0").mkdir(parents=True)
    (resenc_results / "source.json").write_text((resenc_results / "plans.json").read_text())
    convert_plans(resenc_results / "source.json", results / "plans.json", plans_name="plans")
    (results / "dataset.json").write_text((resenc_results / "dataset.json").read_text())
    # no weights: a run that reached the network would fail to load them
    torch.save({"network_weights": {}, "init_args": {"configuration": "3d_fullres"},
                "trainer_name": "nnUNetTrainerUSEMA"}, results / "fold_0" / "checkpoint_final.pth")
    inputs = tmp_path / "imagesTs"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((6, 7), np.float32), np.eye(4)), str(inputs / "flat_0000.nii.gz"))
    (inputs / "broken_0000.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(DataError) as failure:
        predict(results, [inputs], tmp_path / "out", checkpoint="latest")
    lines = str(failure.value).splitlines()
    assert lines[0] == "2 of the 2 input cases cannot be predicted:"
    assert "broken_0000.nii.gz: cannot read the file" in lines[1]
    assert "flat_0000.nii.gz: is 2D but the model is 3D" in lines[2]
    assert not (tmp_path / "out").exists()

"""`usema predict` on nnU-Net results folders: which folders it takes, and the ones it refuses in one line."""

import json

import numpy as np
import pytest
import torch

from usema.errors import CheckpointError, UsemaError
from usema.inference.predict_files import predict
from usema.integrations.nnunet.results import is_results_folder, results_checkpoints

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
    # by default checkpoint_final.pth, as nnUNetv2_predict: this folder holds no checkpoint_best.pth
    with pytest.raises(UsemaError, match="holds nnU-Net's ResidualEncoderUNet trained by nnUNetTrainer, not USEMA; "
                                         "predict it with nnUNetv2_predict"):
        predict(resenc_results, [tmp_path], tmp_path / "out")
    with pytest.raises(CheckpointError, match=r"fold_0/checkpoint_best.pth: no such nnU-Net checkpoint; fold_0 holds "
                                              r"checkpoint_final.pth \(--checkpoint latest\)$"):
        predict(resenc_results, [tmp_path], tmp_path / "out", checkpoint="best", fold=0)
    with pytest.raises(CheckpointError, match=r"__3d_fullres: no fold holds checkpoint_best.pth; nnU-Net's other one "
                                              r"is checkpoint_final.pth \(--checkpoint latest\)"):
        predict(resenc_results, [tmp_path], tmp_path / "out", checkpoint="best")
    assert not (tmp_path / "out").exists()


def test_the_default_ensemble_is_the_numbered_folds_and_fold_all_is_asked_for(tmp_path, capsys):
    """As nnUNetv2_predict: folds 0-4 by default (numerically: fold_10 after fold_2), fold_all (-f all) alone."""
    folder = tmp_path / "nnUNetTrainerUSEMA__nnUNetResEncUNetMPlans__3d_fullres"
    for fold in ("0", "1", "2", "10", "all"):
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "fold_1" / "checkpoint_best.pth").write_bytes(b"")
    final = [folder / f"fold_{fold}" / "checkpoint_final.pth" for fold in ("0", "1", "2", "10")]
    assert results_checkpoints(folder) == final
    assert results_checkpoints(folder, folds="all") == results_checkpoints(folder, folds=["all"]) == final
    # a user of nnU-Net may mean fold_all by "all": told which folds they get, and how to get fold_all
    assert capsys.readouterr().err.count("--folds all is the numbered folds (0, 1, 2, 10), as nnUNetv2_predict's "
                                         "default; nnU-Net's fold_all (-f all) predicts alone with --fold all") == 2
    assert results_checkpoints(folder, fold="all") == [folder / "fold_all" / "checkpoint_final.pth"]
    assert results_checkpoints(folder, folds=[2, "0"]) == [final[0], final[2]]
    assert results_checkpoints(folder, "best") == [folder / "fold_1" / "checkpoint_best.pth"]
    with pytest.raises(UsemaError, match=r"folds must be fold numbers or 'all' alone \(the numbered folds\), got "
                                         r"\['0', 'all'\]; nnU-Net's fold_all predicts alone, by fold 'all'"):
        results_checkpoints(folder, folds=["0", "all"])
    with pytest.raises(CheckpointError, match=r"fold_3: no such fold; nnUNetTrainerUSEMA__nnUNetResEncUNetMPlans__"
                                              r"3d_fullres has fold_0, fold_1, fold_2, fold_10, fold_all$"):
        results_checkpoints(folder, folds=[0, 3])
    for fold in ("0", "1", "2", "10"):
        (folder / f"fold_{fold}" / "checkpoint_final.pth").unlink()
    with pytest.raises(CheckpointError, match=r"__3d_fullres: no numbered fold holds checkpoint_final.pth, only "
                                              r"fold_all: predict with it alone by --fold all"):
        results_checkpoints(folder)
    (folder / "fold_all" / "checkpoint_final.pth").unlink()
    (folder / "fold_all").rmdir()
    with pytest.raises(CheckpointError, match=r"fold_all: no such fold \(nnU-Net's fold trained on every case, which "
                                              r"nnUNetv2_train DATASET CONFIGURATION all writes\); "
                                              r"nnUNetTrainerUSEMA__nnUNetResEncUNetMPlans__3d_fullres has fold_0, "
                                              r"fold_1, fold_2, fold_10$"):
        results_checkpoints(folder, fold="all")


def test_the_cli_takes_fold_all_for_nnunets_fold_all(resenc_results, tmp_path, capsys):
    from usema.cli import main

    out = tmp_path / "out"
    assert main(["predict", str(resenc_results), str(tmp_path), "-o", str(out), "--fold", "all"]) == 2
    assert capsys.readouterr().err.startswith(f"usema predict: error: {resenc_results / 'fold_all'}: no such fold")
    (resenc_results / "fold_0").rename(resenc_results / "fold_all")
    assert main(["predict", str(resenc_results), str(tmp_path), "-o", str(out)]) == 2
    assert "no numbered fold holds checkpoint_final.pth, only fold_all" in capsys.readouterr().err
    # fold_all found and read: the network it holds is refused
    assert main(["predict", str(resenc_results), str(tmp_path), "-o", str(out), "--fold", "ALL"]) == 2
    assert "holds nnU-Net's ResidualEncoderUNet trained by nnUNetTrainer" in capsys.readouterr().err
    assert not out.exists()


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

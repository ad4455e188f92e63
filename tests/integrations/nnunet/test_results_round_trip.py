"""An nnU-Net user's round trip on a tiny generated dataset: nnU-Net plans and preprocesses, `usema nnunet-plans`
converts, nnUNetTrainerUSEMA trains a few iterations, `usema predict` reads nnU-Net's results folder, and
nnUNetv2_ensemble and nnUNetv2_evaluate_folder take a usema prediction folder beside an nnU-Net one. nnU-Net's
commands run as the functions its console scripts call, in this process (a fresh interpreter per command costs
more than the rest on a small machine)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json  # noqa: E402

from usema.cli import main  # noqa: E402

pytestmark = pytest.mark.slow  # nnU-Net preprocesses, trains and predicts, some of it in subprocesses

DATASET = "Dataset986_Phantoms"
CASES, TEST_CASES = 5, 1  # nnU-Net's five folds need five training cases
PLANS = "nnUNetResEncUNetMPlans_USEMA"


def raw_dataset(root: Path) -> tuple[Path, Path, Path]:
    """nnU-Net's raw layout of generated phantoms: (dataset, test images, test labels)."""
    from usema.data.phantoms import make_phantom_dataset

    phantoms = make_phantom_dataset(root / "phantoms", spatial_dims=3, num_cases=CASES + TEST_CASES,
                                    shape=(20, 18, 16), seed=1)
    raw = root / "raw" / DATASET
    folders = {name: raw / name for name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for index, image in enumerate(sorted((phantoms / "imagesTr").iterdir())):
        split = "Tr" if index < CASES else "Ts"
        case = image.name.removesuffix(".nii.gz")
        (folders[f"images{split}"] / f"{case}_0000.nii.gz").symlink_to(image)
        (folders[f"labels{split}"] / image.name).symlink_to(phantoms / "labelsTr" / image.name)
    generate_dataset_json(str(raw), {0: "MRI"}, {"background": 0, "ellipsoid": 1, "blob": 2}, CASES, ".nii.gz")
    return raw, folders["imagesTs"], folders["labelsTs"]


def usema_run(raw: Path, run: Path) -> Path:
    """A usema run planned on the same raw dataset, its fold 0 an untrained tiny USEMA (the format is the point)."""
    from usema.checkpoint import Checkpoint
    from usema.planning.planner import plan_dataset

    plans = plan_dataset(raw, run, device="cpu", patch_size=[16, 16, 16], batch_size=2,
                         network_settings={"base_features": 6, "blocks_per_stage": 1, "head_dim": 6})
    torch.manual_seed(0)
    network = plans.network
    Checkpoint(network.build().state_dict(), network, plans, fold=0, epoch=1).save(run / "fold_0" / "checkpoint_best.pt")
    return run


def test_plan_convert_train_predict_ensemble_evaluate(tmp_path, one_thread, monkeypatch, capsys):
    from nnunetv2.ensembling.ensemble import ensemble_folders
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA

    raw, test_images, test_labels = raw_dataset(tmp_path)
    settings = {"nnUNet_raw": tmp_path / "raw", "nnUNet_preprocessed": tmp_path / "preprocessed",
                "nnUNet_results": tmp_path / "results", "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1",
                "nnUNet_compile": "f"}
    for key, value in settings.items():
        monkeypatch.setenv(key, str(value))

    # nnUNetv2_plan_and_preprocess -d 986 -pl nnUNetPlannerResEncM -c 3d_fullres, then usema nnunet-plans
    extract_fingerprints([986], num_processes=1, check_dataset_integrity=True, show_progress_bar=False)
    plan_experiments([986], "nnUNetPlannerResEncM")
    preprocess([986], "nnUNetResEncUNetMPlans", ["3d_fullres"], [1], show_progress_bar=False)
    preprocessed = tmp_path / "preprocessed" / DATASET
    assert main(["nnunet-plans", str(preprocessed / "nnUNetResEncUNetMPlans.json"), "--head-dim", "8"]) == 0
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 2
    plans["continue_training"] = False  # what nnU-Net's get_trainer_from_args adds before it builds the trainer

    # the trainer route, a few iterations (nnUNet_n_proc_DA 0: augmentation in this process)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = nnUNetTrainerUSEMA(plans, "3d_fullres", 0, json.loads((raw / "dataset.json").read_text()),
                                 device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.run_training()
    results = tmp_path / "results" / DATASET / f"nnUNetTrainerUSEMA__{PLANS}__3d_fullres"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()

    # predict: nnU-Net's results folder through usema (its checkpoint_final.pth of the numbered folds by default,
    # as nnUNetv2_predict), and a usema run; both with probabilities
    nnunet_out, usema_out = tmp_path / "pred_nnunet", tmp_path / "pred_usema"
    capsys.readouterr()
    assert main(["predict", str(results), str(test_images), "-o", str(nnunet_out), "--disable-tta",
                 "--save-probabilities", "--device", "cpu"]) == 0
    assert "predicting 1 case with fold_0, checkpoint_final.pth, no TTA, step size 0.5, cpu fp32" in \
        capsys.readouterr().err
    run = usema_run(raw, tmp_path / "usema_run")
    assert main(["predict", str(run), str(test_images), "-o", str(usema_out), "--disable-tta",
                 "--save-probabilities", "--device", "cpu"]) == 0
    case = sorted(test_labels.iterdir())[0].name.removesuffix(".nii.gz")
    for folder in (nnunet_out, usema_out):
        assert sorted(p.name for p in folder.glob(f"{case}*")) == [f"{case}.nii.gz", f"{case}.npz", f"{case}.pkl"]
    # --resume over nnU-Net's results folder keeps what nnU-Net wrote, as nnUNetv2_predict --continue_prediction
    written = (nnunet_out / f"{case}.npz").stat().st_mtime_ns
    assert main(["predict", str(results), str(test_images), "-o", str(nnunet_out), "--fold", "0", "--checkpoint",
                 "latest", "--disable-tta", "--save-probabilities", "--device", "cpu", "--resume"]) == 0
    assert (nnunet_out / f"{case}.npz").stat().st_mtime_ns == written
    assert json.loads((nnunet_out / "usema_predict.json").read_text())["checkpoints"].keys() == {
        "fold_0/checkpoint_final.pth"}
    assert main(["predict", str(results), str(test_images), "-o", str(nnunet_out), "--fold", "0", "--checkpoint",
                 "latest", "--disable-tta", "--save-probabilities", "--device", "cpu", "--resume",
                 "--step-size", "0.75"]) == 2
    assert "step_size 0.5 -> 0.75" in capsys.readouterr().err
    assert (nnunet_out / f"{case}.npz").stat().st_mtime_ns == written
    with np.load(nnunet_out / f"{case}.npz") as theirs, np.load(usema_out / f"{case}.npz") as ours:
        assert theirs["probabilities"].shape == ours["probabilities"].shape  # one axis order
        mean = (theirs["probabilities"] + ours["probabilities"]) / 2

    # nnUNetv2_ensemble -i USEMA NNUNET -o ENSEMBLE: the first folder's dataset.json and plans.json are read
    ensemble_folders([str(usema_out), str(nnunet_out)], str(tmp_path / "ensemble"), num_processes=1)
    ensemble = nib.load(str(tmp_path / "ensemble" / f"{case}.nii.gz"))
    np.testing.assert_array_equal(np.asarray(ensemble.dataobj).transpose(2, 1, 0), mean.argmax(axis=0))
    np.testing.assert_allclose(ensemble.affine, nib.load(str(test_labels / f"{case}.nii.gz")).affine, atol=1e-4)
    # nnUNetv2_evaluate_folder GT PRED -djfile -pfile, on the ensemble and on the usema folder
    for folder in (tmp_path / "ensemble", usema_out):
        compute_metrics_on_folder2(str(test_labels), str(folder), str(usema_out / "dataset.json"),
                                   str(usema_out / "plans.json"), num_processes=1)
        summary = json.loads((folder / "summary.json").read_text())
        assert [entry["prediction_file"] for entry in summary["metric_per_case"]] == [str(folder / f"{case}.nii.gz")]
        assert set(summary["mean"]) == {"1", "2"}

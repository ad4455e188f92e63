"""An nnU-Net user's round trip on a tiny generated dataset: nnU-Net plans and preprocesses, `usema nnunet-plans`
converts, nnUNetTrainerUSEMA trains a few iterations, `usema predict` reads nnU-Net's results folder, and
nnUNetv2_ensemble and nnUNetv2_evaluate_folder take a usema prediction folder beside an nnU-Net one."""

import json
import os
import subprocess
import sys
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
CASES, TEST_CASES = 4, 1
PLANS = "nnUNetResEncUNetMPlans_USEMA"


def nnunet_command(name: str, *args, env: dict) -> None:
    """Run one of nnU-Net's console scripts (installed beside this Python) and fail with its output."""
    result = subprocess.run([str(Path(sys.executable).parent / name), *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


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
    from usema.planning import plan_dataset
    from usema.training.checkpoint import save_checkpoint

    plans = plan_dataset(raw, run, device="cpu", patch_size=[16, 16, 16], batch_size=2,
                         network_settings={"base_features": 6, "blocks_per_stage": 1, "head_dim": 6})
    torch.manual_seed(0)
    payload = {"model_state": plans.build_network().state_dict(), "plans": plans.to_dict(),
               "model": plans.network_description(False), "fold": 0, "epoch": 1}
    save_checkpoint(payload, run / "fold_0" / "checkpoint_best.pt")
    return run


def test_plan_convert_train_predict_ensemble_evaluate(tmp_path, one_thread, monkeypatch):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: F401 (nnU-Net present)

    from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA

    raw, test_images, test_labels = raw_dataset(tmp_path)
    settings = {"nnUNet_raw": tmp_path / "raw", "nnUNet_preprocessed": tmp_path / "preprocessed",
                "nnUNet_results": tmp_path / "results", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
                "OMP_NUM_THREADS": "1", "nnUNet_compile": "f"}
    # nnU-Net's planner sets torch's threads to nnUNet_n_proc_DA (1 in its processes); training in this process
    # reads 0 as "no augmentation workers"
    env = {**os.environ, **{k: str(v) for k, v in settings.items()}, "nnUNet_n_proc_DA": "1"}
    for key, value in settings.items():
        monkeypatch.setenv(key, str(value))

    # plan with nnU-Net, convert with usema
    nnunet_command("nnUNetv2_plan_and_preprocess", "-d", "986", "-pl", "nnUNetPlannerResEncM", "-c", "3d_fullres",
                   "-np", "1", "-npfp", "1", env=env)
    preprocessed = tmp_path / "preprocessed" / DATASET
    assert main(["nnunet-plans", str(preprocessed / "nnUNetResEncUNetMPlans.json"), "--head-dim", "8"]) == 0
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 2
    plans["continue_training"] = False  # what nnU-Net's get_trainer_from_args adds before it builds the trainer

    # train with the trainer route, a few iterations
    trainer = nnUNetTrainerUSEMA(plans, "3d_fullres", 0, json.loads((raw / "dataset.json").read_text()),
                                 device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.run_training()
    results = tmp_path / "results" / DATASET / f"nnUNetTrainerUSEMA__{PLANS}__3d_fullres"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()

    # predict: nnU-Net's results folder through usema, and a usema run; both with probabilities
    nnunet_out, usema_out = tmp_path / "pred_nnunet", tmp_path / "pred_usema"
    assert main(["predict", str(results), str(test_images), "-o", str(nnunet_out), "--fold", "0", "--checkpoint",
                 "latest", "--disable-tta", "--save-probabilities", "--device", "cpu"]) == 0
    run = usema_run(raw, tmp_path / "usema_run")
    assert main(["predict", str(run), str(test_images), "-o", str(usema_out), "--disable-tta",
                 "--save-probabilities", "--device", "cpu"]) == 0
    case = sorted(test_labels.iterdir())[0].name.removesuffix(".nii.gz")
    for folder in (nnunet_out, usema_out):
        assert sorted(p.name for p in folder.glob(f"{case}*")) == [f"{case}.nii.gz", f"{case}.npz", f"{case}.pkl"]
    with np.load(nnunet_out / f"{case}.npz") as theirs, np.load(usema_out / f"{case}.npz") as ours:
        assert theirs["probabilities"].shape == ours["probabilities"].shape  # one axis order

    # ensemble the two folders with nnU-Net (usema's first: its dataset.json and plans.json are read), evaluate
    nnunet_command("nnUNetv2_ensemble", "-i", usema_out, nnunet_out, "-o", tmp_path / "ensemble", "-np", "1", env=env)
    with np.load(nnunet_out / f"{case}.npz") as theirs, np.load(usema_out / f"{case}.npz") as ours:
        mean = (theirs["probabilities"] + ours["probabilities"]) / 2
    ensemble = nib.load(str(tmp_path / "ensemble" / f"{case}.nii.gz"))
    np.testing.assert_array_equal(np.asarray(ensemble.dataobj).transpose(2, 1, 0), mean.argmax(axis=0))
    np.testing.assert_allclose(ensemble.affine, nib.load(str(test_labels / f"{case}.nii.gz")).affine, atol=1e-4)
    for folder in (tmp_path / "ensemble", usema_out):
        nnunet_command("nnUNetv2_evaluate_folder", test_labels, folder, "-djfile", usema_out / "dataset.json",
                       "-pfile", usema_out / "plans.json", "-np", "1", env=env)
        summary = json.loads((folder / "summary.json").read_text())
        assert [entry["prediction_file"] for entry in summary["metric_per_case"]] == [str(folder / f"{case}.nii.gz")]

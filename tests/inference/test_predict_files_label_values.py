"""The user's label values come back as they went in: a 2D folder of 0/255 masks and a 3D MSD dataset labelled
0, 2 and 5 are planned, trained, predicted and evaluated; the predictions hold the dataset's values in the masks'
own format, and evaluate's Dice (given the run) is the Dice training measured on the same case."""

import json
import pickle
import warnings

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from usema.checkpoint import Checkpoint
from usema.evaluation.evaluate_folder import evaluate
from usema.inference.inputs import InferenceCase
from usema.inference.overlay import PALETTE
from usema.inference.predict_files import overlay_path, predict
from usema.planning.planner import plan_dataset
from usema.training.run_training import train

TINY = {"base_features": 4, "blocks_per_stage": 1}


def _disk_folder(root, num_cases=6, shape=(32, 32)):
    """images/ + labels/ of gray PNGs with one bright disk each, masks of 0 and 255 (disks grow with the name)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.indices(shape)
    for i in range(num_cases):
        rng = np.random.default_rng(i)
        radius = 4 + i
        cy, cx = rng.integers(radius + 1, shape[0] - radius - 1, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image = np.clip(60 + 120 * mask + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case_{i}.png")
        Image.fromarray((255 * mask).astype(np.uint8)).save(root / "labels" / f"case_{i}.png")
    return root


def _msd_0_2_5(root, num_cases=4, shape=(16, 16, 16)):
    """An MSD folder whose dataset.json labels 0 background, 2 "organ" (a box) and 5 "lesion" (a ball in it)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.indices(shape)
    training = []
    for i in range(num_cases):
        rng = np.random.default_rng(i)
        label = np.zeros(shape, dtype=np.uint8)
        low = rng.integers(1, 4, 3)
        label[low[0] : low[0] + 11, low[1] : low[1] + 11, low[2] : low[2] + 11] = 2
        centre = low + 5 + rng.integers(-1, 2, 3)
        label[((grid - centre[:, None, None, None]) ** 2).sum(axis=0) <= 16] = 5
        image = np.choose(np.searchsorted([0, 2, 5], label), [0.0, 1.0, 3.0]) + rng.normal(0, 0.1, shape)
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    manifest = {"modality": {"0": "MRI"}, "labels": {"0": "background", "2": "organ", "5": "lesion"},
                "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def _train_predict_evaluate(data, run, patch, tmp_path, files_of, epochs, iters):
    """Plan (tiny network, one validated case), train fold 0 of 2, predict its validated case with the best
    checkpoint as training validated it (no mirroring), and evaluate that against its label given the run.
    `files_of(case)` is the case's (image, label). Returns the training summary, the prediction path, the
    evaluation summary and the validated case."""
    plan_dataset(data, run, model="usema-nosema", device="cpu", patch_size=patch, batch_size=2,
                 network_settings=TINY, val_max_cases=1, num_workers=0)
    summary = train(data, run, folds=2, epochs=epochs, iters_per_epoch=iters, device="cpu")
    [case] = json.loads((run / "fold_0" / "validation_cases.json").read_text())["cases"]
    assert Checkpoint.load(run / "fold_0" / "checkpoint_best.pt").val_cases == [case]
    image, label = files_of(case)
    [written] = predict(run, [image], tmp_path / "pred", tta=False, overlay=True, save_probabilities=True)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / label.name).symlink_to(label)
    scores = evaluate(tmp_path / "pred", tmp_path / "gt", output=tmp_path / "evaluation", run=run)
    return summary, written, scores, case


def test_a_2d_folder_of_0_255_masks_is_predicted_in_0_255(tmp_path):
    data = _disk_folder(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the label files look binary"
        summary, written, scores, case = _train_predict_evaluate(
            data, tmp_path / "run", [32, 32], tmp_path,
            lambda case: (data / "images" / f"{case}.png", data / "labels" / f"{case}.png"), epochs=2, iters=6,
        )
    # a PNG of the masks' values: the disk is 255, as in the user's masks
    assert written.suffix == ".png"
    assert sorted(np.unique(np.asarray(Image.open(written))).tolist()) == [0, 255]
    # scored as the plan names the class, with the Dice training measured on the same case
    assert list(scores["classes"]) == ["255"] and scores["classes"]["255"]["name"] == "foreground"
    assert 0.5 < summary["best_dice"] < 1.0
    assert scores["mean"]["dice"] == pytest.approx(summary["best_dice"], rel=1e-6)
    # the folders alone agree (their values do), and the overlay colours the class with the first colour
    assert evaluate(tmp_path / "pred", tmp_path / "gt", output=tmp_path / "plain")["mean"] == scores["mean"]
    overlay = np.asarray(Image.open(overlay_path(tmp_path / "pred", InferenceCase(case, (), ".png"))))
    outlined = [(overlay == np.round(PALETTE[k])).all(axis=-1).sum() for k in range(len(PALETTE))]
    assert outlined[0] > 0 and sum(outlined[1:]) == 0
    # the probabilities' properties say which value each channel is
    properties = pickle.loads((tmp_path / "pred" / f"{case}.pkl").read_bytes())
    assert properties["usema"]["label_values"] == [0, 255]


def test_a_3d_dataset_labelled_0_2_5_is_predicted_in_0_2_5(tmp_path):
    data = _msd_0_2_5(tmp_path / "data")
    summary, written, scores, case = _train_predict_evaluate(
        data, tmp_path / "run", [16, 16, 16], tmp_path,
        lambda case: (data / "imagesTr" / f"{case}.nii.gz", data / "labelsTr" / f"{case}.nii.gz"),
        epochs=2, iters=10,
    )
    assert written.name.endswith(".nii.gz")
    predicted = set(np.unique(np.asarray(nib.load(written).dataobj)).tolist())
    assert predicted == {0, 2, 5}  # the dataset's values, not the classes 0, 1, 2
    assert {k: v["name"] for k, v in scores["classes"].items()} == {"2": "organ", "5": "lesion"}
    assert summary["best_dice"] > 0.4
    assert scores["mean"]["dice"] == pytest.approx(summary["best_dice"], rel=1e-6)

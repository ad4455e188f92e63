"""The CLI end to end on tiny subsets of the real data: plan, edit the plan, train, kill, resume, predict,
evaluate (hippocampus 3D NIfTI; DSB2018 2D PNG instances; Kvasir-SEG large RGB JPEG images; CHAOS anisotropic
abdominal MR with four organs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.shared_data

HIPPOCAMPUS_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007"]
# The plan's network, made tiny by editing plans.json as a user may: training must honour the edit.
TINY_MODEL = {"base_features": 8, "max_features": 32, "blocks_per_stage": 1, "head_dim": 8}


def usema(*args, check=True, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "-m", "usema.cli", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"usema {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def link_subset(source: Path, target: Path, cases: list[str]) -> Path:
    """An MSD folder of symbolic links to a few real cases (nothing is copied)."""
    for sub in ("imagesTr", "labelsTr"):
        (target / sub).mkdir(parents=True)
        for case in cases:
            (target / sub / f"{case}.nii.gz").symlink_to(source / sub / f"{case}.nii.gz")
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    meta["numTraining"] = len(cases)
    (target / "dataset.json").write_text(json.dumps(meta))
    return target


def edit_plan(run: Path, **training) -> dict:
    plans = json.loads((run / "plans.json").read_text())
    plans["model"]["network_settings"].update(TINY_MODEL)
    plans["batch_size"] = 2
    plans["training"].update(training)
    (run / "plans.json").write_text(json.dumps(plans, indent=1))
    return plans


@pytest.mark.slow
def test_hippocampus_plan_train_kill_resume_predict_evaluate(hippocampus_dir, tmp_path):
    data = link_subset(hippocampus_dir, tmp_path / "hippo", HIPPOCAMPUS_CASES)
    run = tmp_path / "run"
    usema("plan", data, "-o", run)
    plans = edit_plan(run, iters_per_epoch=2, epochs=40, val_max_cases=1)
    assert plans["dataset"]["num_classes"] == 3 and plans["dataset"]["spatial_dims"] == 3

    # start training, kill it hard once the first epoch's checkpoint exists, then resume
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "usema.cli", "train", str(data), "-o", str(run),
                                "--folds", "5", "--device", "cpu"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "fold_0" / "checkpoint_latest.pt"
    deadline = time.monotonic() + 240
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert latest.exists(), "no checkpoint written before the kill"
    process.send_signal(signal.SIGKILL)
    process.wait()
    from usema.checkpoint import Checkpoint

    epochs_before = Checkpoint.load(latest).epoch
    assert 1 <= epochs_before < 40

    result = usema("train", data, "-o", run, "--folds", "5", "--device", "cpu", "--resume", "--epochs",
                   epochs_before + 1)
    log_rows = (run / "fold_0" / "train_log.csv").read_text().strip().splitlines()
    assert len(log_rows) - 1 == epochs_before + 1, result.stderr  # one more epoch, none repeated
    assert [r.split(",")[0] for r in log_rows[1:]] == [str(e) for e in range(1, epochs_before + 2)]

    split = json.loads((run / "splits.json").read_text())["splits"][0]
    val_case = split["val"][0]
    image = data / "imagesTr" / f"{val_case}.nii.gz"
    usema("predict", run, image, "-o", tmp_path / "pred", "--checkpoint", "latest", "--overlay")
    prediction = nib.load(tmp_path / "pred" / f"{val_case}.nii.gz")
    reference = nib.load(image)
    assert prediction.shape == reference.shape
    np.testing.assert_allclose(prediction.affine, reference.affine)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}
    assert (tmp_path / "pred" / "overlays" / f"{val_case}.png").is_file()

    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / f"{val_case}.nii.gz").symlink_to(data / "labelsTr" / f"{val_case}.nii.gz")
    usema("evaluate", tmp_path / "pred", gt, "-o", tmp_path / "scores")
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert summary["num_cases"] == 1 and set(summary["classes"]) == {"1", "2"}
    pred = np.asarray(prediction.dataobj).astype(int)
    ref = np.asarray(nib.load(gt / f"{val_case}.nii.gz").dataobj).astype(int)
    for label in (1, 2):  # the CLI's Dice is the Dice of the files it wrote
        both = 2 * np.sum((pred == label) & (ref == label))
        total = np.sum(pred == label) + np.sum(ref == label)
        assert summary["classes"][str(label)]["dice"]["mean"] == pytest.approx(both / total if total else 1.0)


@pytest.mark.slow
def test_dsb2018_instances_plan_train_predict_evaluate(dsb2018_dir, tmp_path):
    manifest = (dsb2018_dir / "manifest.csv").read_text().splitlines()[1:]
    ids = [line.split(",")[0] for line in manifest if ",256,256,1," in line][:5]
    data = tmp_path / "nuclei"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
        for case in ids:
            (data / sub / f"{case}.png").symlink_to(dsb2018_dir / sub / f"{case}.png")
    run = tmp_path / "run"
    usema("plan", data, "-o", run, "--labels", "instance")
    plans = edit_plan(run, iters_per_epoch=2, epochs=1, val_max_cases=1)
    assert plans["dataset"]["label_mode"] == "instance" and plans["dataset"]["num_classes"] == 3
    usema("train", data, "-o", run, "--folds", "5", "--device", "cpu")
    val_case = json.loads((run / "splits.json").read_text())["splits"][0]["val"][0]
    usema("predict", run, data / "images" / f"{val_case}.png", "-o", tmp_path / "pred")
    predicted = np.asarray(Image.open(tmp_path / "pred" / f"{val_case}.png"))
    assert predicted.shape == (256, 256)
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / f"{val_case}.png").symlink_to(data / "labels" / f"{val_case}.png")
    usema("evaluate", tmp_path / "pred", gt, "-o", tmp_path / "scores", "--instance")
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    entry = next(iter(summary["classes"].values()))
    assert {"dice", "f1"} <= set(entry) and 0.0 <= entry["f1"]["mean"] <= 1.0


@pytest.mark.slow
def test_kvasir_rgb_jpeg_images_plan_train_predict_evaluate(kvasir_dir, tmp_path):
    names = sorted(p.stem for p in (kvasir_dir / "images").glob("*.jpg"))[:5]
    data = tmp_path / "polyps"
    for sub, suffix in (("images", ".jpg"), ("labels", ".png")):
        (data / sub).mkdir(parents=True)
        for name in names:
            (data / sub / f"{name}{suffix}").symlink_to(kvasir_dir / sub / f"{name}{suffix}")
    run = tmp_path / "run"
    # the tiny network from the start: planning times two of its training steps
    usema("plan", data, "-o", run, "--device", "cpu", "--plan", f"network_settings={json.dumps(TINY_MODEL)}")
    plans = edit_plan(run, iters_per_epoch=2, epochs=1, val_max_cases=1)
    # RGB input, one foreground class, a patch whose deepest SEMA stage holds more than one window
    assert plans["dataset"]["num_channels"] == 3 and plans["dataset"]["num_classes"] == 2
    assert plans["dataset"]["spatial_dims"] == 2 and min(plans["patch_size"]) >= 256
    usema("train", data, "-o", run, "--folds", "5", "--device", "cpu")
    val_case = json.loads((run / "splits.json").read_text())["splits"][0]["val"][0]
    usema("predict", run, data / "images" / f"{val_case}.jpg", "-o", tmp_path / "pred", "--disable-tta")
    predicted = np.asarray(Image.open(tmp_path / "pred" / f"{val_case}.png"))
    reference = np.asarray(Image.open(data / "labels" / f"{val_case}.png"))
    assert predicted.shape == reference.shape and set(np.unique(predicted)) <= {0, 1}
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / f"{val_case}.png").symlink_to(data / "labels" / f"{val_case}.png")
    usema("evaluate", tmp_path / "pred", gt, "-o", tmp_path / "scores")
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    both = 2 * np.sum((predicted == 1) & (reference == 1))
    total = np.sum(predicted == 1) + np.sum(reference == 1)
    assert summary["classes"]["1"]["dice"]["mean"] == pytest.approx(both / total if total else 1.0)


@pytest.mark.slow
def test_chaos_anisotropic_four_organs_plan_train_predict_evaluate(chaos_dir, tmp_path):
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (chaos_dir / "imagesTr").glob("*.nii.gz"))[:5]
    data = link_subset(chaos_dir, tmp_path / "chaos", cases)
    run = tmp_path / "run"
    usema("plan", data, "-o", run, "--device", "cpu", "--plan", f"network_settings={json.dumps(TINY_MODEL)}")
    plans = edit_plan(run, iters_per_epoch=2, epochs=1, val_max_cases=1)
    assert plans["dataset"]["num_classes"] == 5 and plans["target_spacing"][2] > 5 * plans["target_spacing"][0]
    strides = plans["model"]["network_settings"]["strides"]
    # 7.7 mm slices against 1.25 mm pixels: the first poolings are in-plane only
    assert strides[1] == [2, 2, 1] and strides[2] == [2, 2, 1]
    usema("train", data, "-o", run, "--folds", "5", "--device", "cpu")
    val_case = json.loads((run / "splits.json").read_text())["splits"][0]["val"][0]
    image = data / "imagesTr" / f"{val_case}.nii.gz"
    usema("predict", run, image, "-o", tmp_path / "pred", "--disable-tta", "--step-size", "1")
    prediction = nib.load(tmp_path / "pred" / f"{val_case}.nii.gz")
    assert prediction.shape == nib.load(image).shape
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / f"{val_case}.nii.gz").symlink_to(data / "labelsTr" / f"{val_case}.nii.gz")
    usema("evaluate", tmp_path / "pred", gt, "-o", tmp_path / "scores", "--run", run)  # the plan's class names
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert [entry["name"] for entry in summary["classes"].values()] == ["liver", "right kidney", "left kidney",
                                                                       "spleen"]


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    data = tmp_path / "bad"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    (data / "imagesTr" / "case_1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (data / "labelsTr" / "case_1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (data / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "a"}, "modality": {"0": "MRI"},
        "training": [{"image": "./imagesTr/case_1.nii.gz", "label": "./labelsTr/case_1.nii.gz"}]}))
    result = usema("plan", data, "-o", tmp_path / "run", check=False)
    assert result.returncode == 2
    assert "case_1.nii.gz" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

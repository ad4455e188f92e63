"""usema.inference.predict_files.predict end to end: tiny checkpoints written here, files read back and
checked; its record of the settings (OUT/usema_predict.json), --resume after an interruption, and the check of
every input before the first prediction."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from usema.checkpoint import write_checkpoint_file
from usema.errors import DataError, UsemaError
from usema.inference import predict_files
from usema.inference.predict_files import OVERLAY_DIR, predict
from usema.inference.prediction_record import RECORD_NAME
from usema.inference.predictor import Predictor
from usema.inference.probabilities import NNUNET_PREDICTION_ARGS
from usema.models import build_model, registry


def tiny_usema_overrides(spatial_dims: int) -> dict:
    return {"features": [8, 16], "blocks_per_stage": 1, "strides": [[1] * spatial_dims, [2] * spatial_dims]}


class Threshold(nn.Module):
    """Class 1 where the normalised first channel is positive, else class 0 (classes beyond 1 never win)."""

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int):
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.conv = conv(in_channels, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-10.0)
            self.conv.weight[0, 0] = -1.0
            self.conv.bias[0] = 0.0
            self.conv.weight[1, 0] = 1.0
            self.conv.bias[1] = 0.0

    def forward(self, x):
        return self.conv(x) * 20


def make_plans(
    spatial_dims,
    num_channels=1,
    num_classes=3,
    label_mode="semantic",
    target_spacing=None,
    patch_size=None,
    fmt="msd",
    model="usema",
):
    """A complete plan as planning writes it, sized for tiny test images."""
    return {
        "version": 1,
        "dataset": {
            "path": "/nonexistent/dataset",
            "format": fmt,
            "spatial_dims": spatial_dims,
            "num_channels": num_channels,
            "channel_names": [f"c{i}" for i in range(num_channels)],
            "modality": "MR",
            "labels": {str(k): f"class{k}" for k in range(num_classes)},
            "label_mode": label_mode,
            "num_classes": num_classes,
            "cases": ["train_001"],
        },
        "target_spacing": list(target_spacing or [1.0] * spatial_dims),
        "normalization": {"scheme": "zscore_per_image"},
        "patch_size": list(patch_size or [16] * spatial_dims),
        "batch_size": 2,
        "model": {"name": model, "overrides": tiny_usema_overrides(spatial_dims) if model == "usema" else {}},
        "training": {
            "optimizer": "adamw",
            "lr": 0.003,
            "epochs": 1,
            "iters_per_epoch": 1,
            "precision": "auto",
        },
    }


def make_run(run_dir: Path, plans: dict, model: nn.Module, checkpoint: str = "best") -> Path:
    """Write RUN/fold_0/checkpoint_<checkpoint>.pt holding `model`'s weights and `plans`, as training does."""
    entry = {
        "name": plans["model"]["name"],
        "spatial_dims": plans["dataset"]["spatial_dims"],
        "in_channels": plans["dataset"]["num_channels"],
        "num_classes": plans["dataset"]["num_classes"],
        "overrides": plans["model"]["overrides"],
        "deep_supervision": False,
    }
    payload = {"model_state": model.state_dict(), "model": entry, "plans": plans, "epoch": 1}
    write_checkpoint_file(payload, run_dir / "fold_0" / f"checkpoint_{checkpoint}.pt")  # as an older usema wrote it
    return run_dir


def tiny_usema(plans: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = plans["dataset"]
    return build_model(
        "usema",
        info["spatial_dims"],
        info["num_channels"],
        info["num_classes"],
        **plans["model"]["overrides"],
    )


@pytest.fixture
def threshold_model(monkeypatch):
    """Route the model name "threshold" to the Threshold net (the registry has only real presets)."""
    real_build = registry.build_model

    def build(name, spatial_dims, in_channels, num_classes, deep_supervision=False, **overrides):
        if name != "threshold":
            return real_build(name, spatial_dims, in_channels, num_classes, deep_supervision, **overrides)
        return Threshold(in_channels, num_classes, spatial_dims)

    monkeypatch.setattr(registry, "build_model", build)
    return Threshold


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


OBLIQUE_AFFINE = np.array(
    [[0.0, -1.5, 0.0, 30.0], [1.2, 0.0, 0.0, -12.0], [0.0, 0.0, 2.0, 5.5], [0, 0, 0, 1]]
)


def test_nifti_prediction_has_input_shape_and_affine(tmp_path):
    plans = make_plans(3, patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, tiny_usema(plans))
    rng = np.random.default_rng(0)
    image = write_nifti(tmp_path / "in" / "case_a.nii.gz", rng.normal(size=(13, 9, 7)), OBLIQUE_AFFINE)

    written = predict(run, [image], tmp_path / "out", device="cpu")

    assert written == [tmp_path / "out" / "case_a.nii.gz"]
    result = nib.load(str(written[0]))
    assert result.shape == (13, 9, 7)  # spacing (1.2, 1.5, 2) was resampled to 1 mm and back
    np.testing.assert_allclose(result.affine, OBLIQUE_AFFINE)
    labels = np.asarray(result.dataobj)
    assert np.issubdtype(labels.dtype, np.integer) and set(np.unique(labels)) <= {0, 1, 2}


def test_model_predicting_class_one_everywhere_gives_all_ones(tmp_path):
    plans = make_plans(3, patch_size=[8, 8, 8])
    model = tiny_usema(plans)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        # Every layer now outputs zeros, so the logits are the final head's bias: class 1 wins everywhere.
        model.heads[-1].conv.conv.bias.copy_(torch.tensor([-4.0, 4.0, -4.0]))
    run = make_run(tmp_path / "run", plans, model, checkpoint="latest")
    image = write_nifti(
        tmp_path / "in" / "c.nii", np.random.default_rng(1).normal(size=(11, 10, 9)), np.eye(4)
    )

    (path,) = predict(run, image, tmp_path / "out", checkpoint="latest", tta=True, device="cpu")

    assert path.name == "c.nii"
    labels = np.asarray(nib.load(str(path)).dataobj)
    assert labels.shape == (11, 10, 9) and np.all(labels == 1)


def test_png_gray_and_rgb_keep_their_size_and_follow_the_image(tmp_path, threshold_model):
    plans = make_plans(2, num_classes=2, model="threshold", patch_size=[16, 16])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 2))
    folder = tmp_path / "in"
    folder.mkdir()
    gray = np.zeros((23, 37), dtype=np.uint8)
    gray[:, :15] = 200  # left part bright: the only class 1 region
    Image.fromarray(gray).save(folder / "gray.png")
    rgb = np.zeros((30, 19, 3), dtype=np.uint8)
    rgb[20:, :, 1] = 220  # bottom rows bright green
    Image.fromarray(rgb).save(folder / "colour.png")

    with pytest.warns(UserWarning, match="colour.png: 3 channel"):
        written = predict(run, [folder], tmp_path / "out", device="cpu")

    assert [p.name for p in written] == ["colour.png", "gray.png"]
    gray_pred = np.array(Image.open(tmp_path / "out" / "gray.png"))
    rgb_pred = np.array(Image.open(tmp_path / "out" / "colour.png"))
    assert gray_pred.shape == (23, 37) and rgb_pred.shape == (30, 19)
    np.testing.assert_array_equal(gray_pred, (gray > 0).astype(np.uint8))
    np.testing.assert_array_equal(rgb_pred, (rgb[..., 1] > 0).astype(np.uint8))


def test_resampled_nifti_prediction_follows_the_image(tmp_path, threshold_model):
    # Spacing 2 x 0.5 x 1 mm resampled to 1 mm for the model and back: the bright half must stay where it was.
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    data = np.zeros((10, 24, 9))
    data[:, :, 5:] = 100.0
    affine = np.diag([2.0, 0.5, 1.0, 1.0])
    image = write_nifti(tmp_path / "in" / "half.nii.gz", data, affine)

    (path,) = predict(run, [image], tmp_path / "out", device="cpu")

    labels = np.asarray(nib.load(str(path)).dataobj)
    np.testing.assert_array_equal(labels, (data > 0).astype(labels.dtype))


def test_tta_keeps_shape_and_is_deterministic(tmp_path):
    plans = make_plans(2, patch_size=[16, 16])
    run = make_run(tmp_path / "run", plans, tiny_usema(plans, seed=3))
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (21, 33), dtype=np.uint8)).save(tmp_path / "img.png")

    (first,) = predict(run, [tmp_path / "img.png"], tmp_path / "out1", tta=True, device="cpu")
    (second,) = predict(run, [tmp_path / "img.png"], tmp_path / "out2", tta=True, device="cpu")

    a, b = np.array(Image.open(first)), np.array(Image.open(second))
    assert a.shape == (21, 33)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_equal_to_or_inside_an_input_folder_is_refused(tmp_path, threshold_model, where):
    plans = make_plans(2, num_classes=2, model="threshold")
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 2))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(folder / "a.png")
    output = folder if where == "same" else folder / "predictions"

    with pytest.raises(DataError, match="input folder"):
        predict(run, [folder], output, device="cpu")

    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]  # nothing written, the input untouched
    assert np.all(np.array(Image.open(folder / "a.png")) == 7)


def test_output_that_would_replace_an_input_file_is_refused(tmp_path, threshold_model):
    plans = make_plans(2, num_classes=2, model="threshold")
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 2))
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(tmp_path / "a.png")

    with pytest.raises(DataError, match="overwrite an input"):
        predict(run, [tmp_path / "a.png"], tmp_path, device="cpu")
    assert np.all(np.array(Image.open(tmp_path / "a.png")) == 7)


def test_overlays_are_written_next_to_the_predictions(tmp_path, threshold_model):
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    data = np.zeros((12, 12, 6))
    data[3:9, 3:9, :] = 50.0
    image = write_nifti(tmp_path / "in" / "vol.nii.gz", data, np.eye(4))
    plans2d = make_plans(2, num_classes=2, model="threshold")
    run2d = make_run(tmp_path / "run2d", plans2d, threshold_model(1, 2, 2))
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(tmp_path / "in" / "flat.png")

    predict(run, [image], tmp_path / "out", overlay=True, device="cpu")
    with pytest.warns(UserWarning, match=r"out holds predictions made with other settings \(checkpoints"):
        predict(run2d, [tmp_path / "in" / "flat.png"], tmp_path / "out", overlay=True, device="cpu")

    overlay_dir = tmp_path / "out" / OVERLAY_DIR
    assert sorted(p.name for p in overlay_dir.iterdir()) == ["flat.png", "vol.png"]
    vol = np.array(Image.open(overlay_dir / "vol.png"))
    flat = np.array(Image.open(overlay_dir / "flat.png"))
    assert vol.ndim == 3 and vol.shape[2] == 3 and vol.shape[0] >= 256
    assert flat.shape[:2] == (20 * 9, 30 * 9)  # enlarged by a whole factor to at least 256 pixels
    coloured = (vol[..., 0] != vol[..., 1]) | (vol[..., 1] != vol[..., 2])
    assert coloured.any()  # the square of class 1 is drawn in colour
    assert not (
        (flat[..., 0] != flat[..., 1]) | (flat[..., 1] != flat[..., 2])
    ).any()  # nothing predicted: gray


def test_instance_mode_writes_instance_ids(tmp_path, threshold_model):
    plans = make_plans(2, num_classes=3, label_mode="instance", model="threshold", patch_size=[16, 16])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 3, 2))
    image = np.zeros((24, 40), dtype=np.uint8)
    image[3:9, 4:12] = 255  # two separate "nuclei"
    image[14:20, 25:35] = 255
    Image.fromarray(image).save(tmp_path / "nuclei.png")

    (path,) = predict(run, [tmp_path / "nuclei.png"], tmp_path / "out", device="cpu")

    ids = np.array(Image.open(path))
    assert ids.shape == (24, 40)
    assert sorted(np.unique(ids).tolist()) == [0, 1, 2]
    assert len(np.unique(ids[3:9, 4:12])) == 1 and len(np.unique(ids[14:20, 25:35])) == 1
    assert ids[5, 6] != ids[16, 30] and ids[0, 0] == 0


def test_nnunet_channel_files_are_one_case(tmp_path, threshold_model):
    plans = make_plans(
        3, num_channels=2, num_classes=2, model="threshold", fmt="nnunet", patch_size=[8, 8, 8]
    )
    run = make_run(tmp_path / "run", plans, threshold_model(2, 2, 3))
    first = np.zeros((6, 7, 5))
    first[:3] = 9.0
    write_nifti(tmp_path / "in" / "pat_0000.nii.gz", first, np.eye(4))
    write_nifti(
        tmp_path / "in" / "pat_0001.nii.gz", np.random.default_rng(0).normal(size=(6, 7, 5)), np.eye(4)
    )

    written = predict(run, [tmp_path / "in"], tmp_path / "out", device="cpu")

    assert [p.name for p in written] == ["pat.nii.gz"]
    labels = np.asarray(nib.load(str(written[0])).dataobj)
    np.testing.assert_array_equal(labels, (first > 0).astype(labels.dtype))  # decided by channel 0 only


@pytest.mark.shared_data
def test_real_hippocampus_and_dsb_images_keep_their_geometry(
    tmp_path, threshold_model, hippocampus_dir, dsb2018_dir
):
    plans3d = make_plans(3, num_classes=3, model="threshold", patch_size=[24, 32, 24])
    run3d = make_run(tmp_path / "run3d", plans3d, threshold_model(1, 3, 3))
    volume = hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz"
    plans2d = make_plans(2, num_classes=3, label_mode="instance", model="threshold", patch_size=[128, 128])
    run2d = make_run(tmp_path / "run2d", plans2d, threshold_model(1, 3, 2))
    rgb = dsb2018_dir / "images" / "00ae65c1c6631ae6f2be1a449902976e6eb8483bf6b0740d00530220832c6d3e.png"

    (volume_pred,) = predict(run3d, [volume], tmp_path / "out3d", device="cpu")
    with pytest.warns(UserWarning, match="3 channel"):
        (rgb_pred,) = predict(run2d, [rgb], tmp_path / "out2d", overlay=True, device="cpu")

    source, result = nib.load(str(volume)), nib.load(str(volume_pred))
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine)
    with Image.open(rgb) as image, Image.open(rgb_pred) as ids:
        assert ids.size == image.size == (320, 256)
        assert np.array(ids).max() >= 1  # bright regions became instances
    assert (tmp_path / "out2d" / OVERLAY_DIR / rgb_pred.name).is_file()


def _hippocampus_like(root: Path) -> Path:
    """An MSD dataset folder with one image and its ground-truth label of the same name."""
    write_nifti(root / "imagesTr" / "hip_1.nii.gz", np.full((6, 7, 5), 50.0), np.eye(4))
    write_nifti(root / "labelsTr" / "hip_1.nii.gz", np.full((6, 7, 5), 2.0), np.eye(4))
    (root / "dataset.json").write_text('{"training": [], "labels": {"0": "background"}}')
    return root


def test_predictions_never_go_into_a_dataset_labels_folder(tmp_path, threshold_model):
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    hip = _hippocampus_like(tmp_path / "hip")

    for flags in ({}, {"overwrite": True}):  # not even when asked to overwrite
        with pytest.raises(DataError, match=r"labelsTr: is a folder of the dataset .*hip"):
            predict(run, [hip / "imagesTr"], hip / "labelsTr", device="cpu", **flags)
    assert np.all(np.asarray(nib.load(hip / "labelsTr" / "hip_1.nii.gz").dataobj) == 2)  # ground truth intact
    with pytest.raises(DataError, match="is a folder of the dataset"):
        predict(run, [hip / "imagesTr"], hip, device="cpu")  # the folder holding dataset.json


def test_predictions_never_go_inside_the_dataset_the_run_was_planned_from(tmp_path, threshold_model):
    data = tmp_path / "data"
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    plans["dataset"]["path"] = str(data)
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    image = write_nifti(tmp_path / "new" / "x.nii.gz", np.zeros((6, 7, 5)), np.eye(4))

    with pytest.raises(DataError, match=f"is a folder of the dataset {data}"):
        predict(run, [image], data / "predictions", device="cpu")
    assert not data.exists()


def test_predictions_never_go_into_a_run_folder(tmp_path, threshold_model):
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    (run / "plans.json").write_text(json.dumps(plans))
    other = make_run(tmp_path / "other", plans, threshold_model(1, 2, 3))  # a run of checkpoints only
    image = write_nifti(tmp_path / "in" / "x.nii.gz", np.zeros((6, 7, 5)), np.eye(4))
    run_files = {path: path.read_bytes() for path in (run / "plans.json", run / "fold_0" / "checkpoint_best.pt")}

    for output, named in ((run, run), (run / "fold_0", run), (other, other), (other / "fold_0" / "x", other)):
        for flags in ({}, {"overwrite": True}):  # not even when asked to overwrite
            with pytest.raises(DataError, match=rf"is the run folder {named.resolve()} or inside one of its fold or "
                                                "preprocessed folders; predictions are never written among a run's "
                                                "files") as err:
                predict(run, [image], output, device="cpu", save_probabilities=True, **flags)
            assert err.value.path == output
    assert all(path.read_bytes() == content for path, content in run_files.items())
    assert sorted(p.name for p in run.iterdir()) == ["fold_0", "plans.json"]
    assert sorted(p.name for p in (other / "fold_0").iterdir()) == ["checkpoint_best.pt"]
    # beside the run (a folder that holds runs is no run), or in a folder of its own inside it: predicted
    assert predict(run, [image], tmp_path / "run_predictions", device="cpu", tta=False)[0].is_file()
    assert predict(run, [image], run / "predictions", device="cpu", tta=False, save_probabilities=True)[0].is_file()
    assert all(path.read_bytes() == content for path, content in run_files.items())


def test_overwrite_and_resume_replace_no_probability_file_usema_did_not_write(tmp_path, run_and_images, monkeypatch):
    run, images = run_and_images
    # files of nnU-Net's prediction folders where usema's probabilities and folder files would go: never replaced
    for name in ("case0.npz", "case2.pkl", "dataset.json", "plans.json"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text("nnU-Net's")
        (out / NNUNET_PREDICTION_ARGS).write_text("{}")
        with pytest.raises(DataError, match=rf"{re.escape(name)}: exists, and {RECORD_NAME} there does not list it "
                                            "as written by usema predict"):
            predict(run, images, out, device="cpu", tta=False, save_probabilities=True, overwrite=True)
        assert (out / name).read_text() == "nnU-Net's"
        assert sorted(p.name for p in out.iterdir()) == sorted([name, NNUNET_PREDICTION_ARGS])
    # a prediction of case0 resumed over another tool's case2.pkl
    out = tmp_path / "case2_pkl"
    (out / "case2.pkl").unlink()
    predict(run, images[:1], out, device="cpu", tta=False, save_probabilities=True)
    (out / "case2.pkl").write_text("nnU-Net's")
    with pytest.raises(DataError, match=rf"case2\.pkl: exists, and {RECORD_NAME} there does not list it"):
        predict(run, images, out, device="cpu", tta=False, save_probabilities=True, resume=True)
    assert (out / "case2.pkl").read_text() == "nnU-Net's" and not (out / "case2.nii.gz").exists()

    # every file usema writes is listed before its first byte: a kill at the second case lists case1's files
    out = tmp_path / "out"
    real = kill_at_the_second_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict(run, images, out, device="cpu", tta=False, save_probabilities=True, overlay=True)
    case0 = ["case0.nii.gz", "case0.npz", "case0.pkl", "overlays/case0.png", "dataset.json", "plans.json"]
    case1 = ["case1.nii.gz", "case1.npz", "case1.pkl", "overlays/case1.png"]
    assert json.loads((out / RECORD_NAME).read_text())["written"] == case0 + case1
    assert not (out / "case1.npz").exists()
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid", real)
    predict(run, images, out, device="cpu", tta=False, save_probabilities=True, overlay=True, resume=True)
    case2 = ["case2.nii.gz", "case2.npz", "case2.pkl", "overlays/case2.png"]
    assert json.loads((out / RECORD_NAME).read_text())["written"] == case0 + case1 + case2
    # usema's own files are replaced with --overwrite
    (out / "case2.npz").write_bytes(b"stale")
    predict(run, images, out, device="cpu", tta=False, save_probabilities=True, overlay=True, overwrite=True)
    with np.load(out / "case2.npz") as saved:
        assert saved["probabilities"].shape == (2, 5, 7, 6)


def test_existing_predictions_are_replaced_only_with_overwrite(tmp_path, threshold_model):
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    bright_half = np.zeros((6, 7, 5))
    bright_half[3:] = 50.0
    image = write_nifti(tmp_path / "in" / "x.nii.gz", bright_half, np.eye(4))
    # a reference label beside the image, where its prediction would go: usema did not write it, so neither
    # --overwrite nor --resume replaces it
    label = write_nifti(tmp_path / "out" / "x.nii.gz", np.zeros((6, 7, 5)), np.eye(4))
    with pytest.raises(DataError, match=r"x\.nii\.gz: exists already; --resume continues an interrupted "
                       r"prediction, --overwrite replaces"):
        predict(run, [image], tmp_path / "out", device="cpu")
    with pytest.raises(DataError, match=r"x\.nii\.gz: exists, and usema_predict\.json there does not list it as "
                                        r"written by usema predict; --overwrite and --resume replace only"):
        predict(run, [image], tmp_path / "out", device="cpu", overwrite=True)
    assert np.all(np.asarray(nib.load(label).dataobj) == 0)

    earlier = predict(run, [image], tmp_path / "predictions", device="cpu", tta=False)[0]
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.uint8), np.eye(4)), earlier)  # as another model's
    with pytest.raises(DataError, match="exists already"):
        predict(run, [image], tmp_path / "predictions", device="cpu")
    predict(run, [image], tmp_path / "predictions", device="cpu", overwrite=True)  # usema's own: replaced
    np.testing.assert_array_equal(np.asarray(nib.load(earlier).dataobj), bright_half > 0)
    assert json.loads((tmp_path / "predictions" / RECORD_NAME).read_text())["written"] == ["x.nii.gz"]


def test_a_full_disk_while_writing_a_prediction_names_the_file(tmp_path, threshold_model, monkeypatch):
    import errno

    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    image = write_nifti(tmp_path / "in" / "x.nii.gz", np.zeros((6, 7, 5)), np.eye(4))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", no_space)
    with pytest.raises(UsemaError, match=r"out/x\.nii\.gz: cannot write it, no space left on device"):
        predict(run, [image], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()  # made for the write, removed with the failure


def test_a_failed_predict_leaves_no_output_folder(tmp_path, threshold_model):
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    two_volumes = write_nifti(tmp_path / "in" / "x.nii.gz", np.zeros((6, 7, 5, 2)), np.eye(4))

    with pytest.raises(DataError, match=r"x\.nii\.gz: has 2 channels but 1 is declared"):
        predict(run, [two_volumes], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def _bright_half(shift: int) -> np.ndarray:
    volume = np.zeros((6, 7, 5))
    volume[shift:] = 50.0
    return volume


@pytest.fixture
def run_and_images(tmp_path, threshold_model):
    """A threshold run (class 1 where the image is bright) and three images, each bright from another row."""
    plans = make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8])
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 3))
    images = [write_nifti(tmp_path / "in" / f"case{k}.nii.gz", _bright_half(k + 1), np.eye(4)) for k in range(3)]
    return run, images


def _read(path):
    return np.asarray(nib.load(path).dataobj)


def kill_at_the_second_case(monkeypatch):
    """Make prediction stop with KeyboardInterrupt at its second case, as a kill between two cases; returns the
    real method, to put back."""
    real = Predictor.probabilities_on_input_grid
    calls = []

    def killed_at_the_second_case(self, image, geometry):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, image, geometry)

    monkeypatch.setattr(Predictor, "probabilities_on_input_grid", killed_at_the_second_case)
    return real


def test_a_killed_predict_resumes_keeping_the_cases_already_written(tmp_path, run_and_images, monkeypatch):
    run, images = run_and_images
    out = tmp_path / "out"
    real = kill_at_the_second_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict(run, images, out, device="cpu", tta=False)
    assert sorted(p.name for p in out.iterdir()) == ["case0.nii.gz", RECORD_NAME]
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["tta"] is False and list(record["checkpoints"]) == ["fold_0/checkpoint_best.pt"]

    # without --resume the folder is not continued: its case is there already
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid", real)
    with pytest.raises(DataError, match="exists already"):
        predict(run, images, out, device="cpu", tta=False)

    kept = _read(out / "case0.nii.gz")
    written = predict(run, images, out, device="cpu", tta=False, resume=True)
    assert [p.name for p in written] == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]
    assert np.array_equal(_read(out / "case0.nii.gz"), kept)  # kept, not predicted again
    for k, path in enumerate(written):
        np.testing.assert_array_equal(_read(path), _bright_half(k + 1) > 0)

    (out / "case1.nii.gz").unlink()  # a resumed run predicts only what is missing
    counted = []
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid",
                        lambda self, *args: counted.append(1) or real(self, *args))
    predict(run, images, out, device="cpu", tta=False, resume=True)
    assert len(counted) == 1 and (out / "case1.nii.gz").is_file()
    predict(run, images, out, device="cpu", tta=False, resume=True)  # everything there: nothing to do
    assert len(counted) == 1


def test_resume_after_an_interrupted_overwrite_predicts_again_what_other_settings_made(tmp_path, run_and_images,
                                                                                          monkeypatch):
    run, images = run_and_images
    out = tmp_path / "out"
    predict(run, images, out, device="cpu", tta=False)  # every case, without mirroring
    real = kill_at_the_second_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict(run, images, out, device="cpu", overwrite=True)  # with mirroring, cut off after case0
    assert json.loads((out / RECORD_NAME).read_text())["predicted"] == ["case0.nii.gz"]
    calls = []
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid",
                        lambda self, *args: calls.append(1) or real(self, *args))
    predict(run, images, out, device="cpu", resume=True)  # case1 and case2 are still the unmirrored ones
    assert len(calls) == 2
    assert json.loads((out / RECORD_NAME).read_text())["predicted"] == [f"case{k}.nii.gz" for k in range(3)]


def test_resume_predicts_the_first_case_again_where_the_folder_files_are_missing(tmp_path, run_and_images,
                                                                                   monkeypatch):
    run, images = run_and_images
    out = tmp_path / "out"
    predict(run, images, out, device="cpu", tta=False, save_probabilities=True)
    (out / "plans.json").unlink()  # as a kill between the first case's probabilities and the folder's files
    real = Predictor.probabilities_on_input_grid
    counted = []
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid",
                        lambda self, *args: counted.append(1) or real(self, *args))
    predict(run, images, out, device="cpu", tta=False, save_probabilities=True, resume=True)
    assert len(counted) == 1 and (out / "plans.json").is_file() and (out / "dataset.json").is_file()


def test_resume_with_other_settings_or_another_checkpoint_is_refused(tmp_path, run_and_images, threshold_model):
    run, images = run_and_images
    out = tmp_path / "out"
    predict(run, images[:1], out, device="cpu", tta=False)

    with pytest.raises(DataError, match=rf"{RECORD_NAME}: the predictions there were made with other settings: "
                                        r"tta False -> True"):
        predict(run, images, out, device="cpu", resume=True)
    with pytest.raises(DataError, match=r"step_size 0\.5 -> 0\.25"):
        predict(run, images, out, device="cpu", tta=False, step_size=0.25, resume=True)

    retrained = threshold_model(1, 2, 3)  # the same fold trained again: other weights, same file name
    retrained.conv.bias.data += 0.5
    make_run(run, json.loads(json.dumps(make_plans(3, num_classes=2, model="threshold", patch_size=[8, 8, 8]))),
             retrained)
    with pytest.raises(DataError, match="checkpoints .*a fold trained again"):
        predict(run, images, out, device="cpu", tta=False, resume=True)
    # other cases predicted beside the earlier ones with other settings: allowed (as nnU-Net), with a warning
    earlier = json.loads((out / RECORD_NAME).read_text())["checkpoints"]
    with pytest.warns(UserWarning, match="holds predictions made with other settings"):
        predict(run, images[1:], out, device="cpu", tta=False)
    assert json.loads((out / RECORD_NAME).read_text())["checkpoints"] != earlier  # the record follows the last


def test_resume_needs_a_record_where_predictions_are_there(tmp_path, run_and_images):
    run, images = run_and_images
    out = tmp_path / "out"
    write_nifti(out / "case0.nii.gz", np.zeros((6, 7, 5)), np.eye(4))  # made by something else
    with pytest.raises(DataError, match=rf"{RECORD_NAME}: not found, so nothing tells what made the predictions"):
        predict(run, images, out, device="cpu", resume=True)
    with pytest.raises(UsemaError, match="give one"):
        predict(run, images, out, device="cpu", resume=True, overwrite=True)
    # an output folder that does not exist yet is simply started
    assert len(predict(run, images, tmp_path / "fresh", device="cpu", tta=False, resume=True)) == 3


def test_every_input_is_checked_before_the_first_prediction(tmp_path, run_and_images, monkeypatch):
    run, images = run_and_images
    folder = images[0].parent
    write_nifti(folder / "two_channels.nii.gz", np.zeros((6, 7, 5, 2)), np.eye(4))
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(folder / "flat.png")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")
    predicted = []
    monkeypatch.setattr(predict_files, "write_segmentation", lambda *args: predicted.append(args))

    with pytest.raises(DataError) as failure:
        predict(run, [folder], tmp_path / "out", device="cpu")
    message = str(failure.value)
    assert message.startswith("3 of the 6 input cases cannot be predicted:")
    assert "broken.nii.gz: cannot read the file" in message
    assert "flat.png: is 2D but the model is 3D" in message
    assert "two_channels.nii.gz: has 2 channels but 1 is declared" in message
    assert predicted == [] and not (tmp_path / "out").exists()


def test_a_bmp_case_written_as_png_is_kept_by_resume_and_its_png_never_replaced_unasked(tmp_path, threshold_model,
                                                                                       monkeypatch):
    plans = make_plans(2, num_classes=2, model="threshold", patch_size=[8, 8])
    plans["dataset"]["label_values"] = [0, 300]  # more than a BMP's 8 bits hold: written as PNG
    run = make_run(tmp_path / "run", plans, threshold_model(1, 2, 2))
    images = []
    for k in range(2):
        image = np.zeros((10, 12), np.uint8)
        image[k + 2 :] = 200
        Image.fromarray(image).save(tmp_path / f"shot{k}.bmp")
        images.append(tmp_path / f"shot{k}.bmp")
    out = tmp_path / "out"
    real = kill_at_the_second_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict(run, images, out, device="cpu", tta=False)
    assert sorted(p.name for p in out.iterdir()) == ["shot0.png", RECORD_NAME]
    assert json.loads((out / RECORD_NAME).read_text())["predicted"] == ["shot0.png"]
    with pytest.raises(DataError, match=r"shot0\.png: exists already"):
        predict(run, images, out, device="cpu", tta=False)  # the PNG a BMP case became is not replaced unasked

    counted = []
    monkeypatch.setattr(Predictor, "probabilities_on_input_grid",
                        lambda self, *args: counted.append(1) or real(self, *args))
    written = predict(run, images, out, device="cpu", tta=False, resume=True)
    assert len(counted) == 1 and [p.name for p in written] == ["shot0.png", "shot1.png"]
    for k, path in enumerate(written):
        expected = np.zeros((10, 12), np.uint16)
        expected[k + 2 :] = 300
        np.testing.assert_array_equal(np.array(Image.open(path)), expected)

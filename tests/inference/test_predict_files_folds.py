"""usema.inference.predict_files.predict with the nnU-Net-style options: folds and ensembles, mirroring by
default, step size, saved probabilities, and progress lines in a log."""

import io
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from usema.errors import CheckpointError
from usema.inference.predict_files import predict
from usema.inference.predictor import load_predictor


def _images(data, count=2):
    return sorted((data / "images").iterdir())[:count]


def test_the_default_is_every_trained_fold_with_mirroring(two_fold_run, tmp_path, capsys):
    data, run = two_fold_run
    images = _images(data)

    written = predict(run, images, tmp_path / "out", device="cpu")

    ensemble = load_predictor(run, device="cpu", folds=[0, 1], tta=True)
    for image, path in zip(images, written, strict=True):
        expected = ensemble.predict(image)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)
    err = capsys.readouterr().err
    assert "predicting 2 cases with an ensemble of 2 folds (fold_0, fold_1), checkpoint_best.pt, mirroring TTA, " \
           "step size 0.5, cpu" in err


def test_one_fold_without_mirroring_differs_from_the_ensemble(two_fold_run, tmp_path):
    data, run = two_fold_run
    (image,) = _images(data, 1)
    (path,) = predict(run, [image], tmp_path / "one", device="cpu", fold=1, tta=False, step_size=1.0)
    single = load_predictor(run, fold=1, device="cpu", tta=False, step_size=1.0)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), single.predict(image))


def test_probabilities_are_saved_as_nnunet_does(two_fold_run, tmp_path):
    data, run = two_fold_run
    (image,) = _images(data, 1)

    (path,) = predict(run, [image], tmp_path / "out", device="cpu", save_probabilities=True)

    case = image.name[: -len(".png")]
    with np.load(tmp_path / "out" / f"{case}.npz") as stored:
        assert stored.files == ["probabilities"]
        probabilities = stored["probabilities"]
    segmentation = np.asarray(Image.open(path))
    # nnU-Net's layout of a 2D image: a leading spatial axis of one, spacing 999 along it
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 1, *segmentation.shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0)[0], segmentation)
    with open(tmp_path / "out" / f"{case}.pkl", "rb") as handle:
        properties = pickle.load(handle)
    assert properties["spacing"] == [999.0, 1.0, 1.0]
    assert properties["shape_before_cropping"] == [1, *segmentation.shape]
    assert properties["bbox_used_for_cropping"] == [[0, 1], [0, segmentation.shape[0]], [0, segmentation.shape[1]]]
    assert properties["usema"]["case_id"] == case and properties["usema"]["images"] == [str(image)]
    # the plan's class names: a 2D folder names none
    assert properties["usema"]["classes"] == {"0": "background", "1": "class_1", "2": "class_2"}
    assert json.loads((tmp_path / "out" / "plans.json").read_text())["image_reader_writer"] == "NaturalImage2DIO"


def test_saved_probabilities_are_outputs_that_need_overwrite(two_fold_run, tmp_path):
    data, run = two_fold_run
    (image,) = _images(data, 1)
    case = image.name[: -len(".png")]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"{case}.pkl").write_bytes(b"earlier")
    with pytest.raises(Exception, match=rf"{case}\.pkl: exists already"):
        predict(run, [image], tmp_path / "out", device="cpu", save_probabilities=True)


def test_a_fold_never_trained_is_refused_before_anything_is_written(two_fold_run, tmp_path):
    data, run = two_fold_run
    with pytest.raises(CheckpointError, match=f"{run / 'fold_4'}: fold 4 was never trained"):
        predict(run, _images(data, 1), tmp_path / "out", device="cpu", folds=[0, 4])
    assert not (tmp_path / "out").exists()


def test_folds_trained_with_another_preparation_are_refused(two_fold_run, tmp_path):
    import torch

    data, run = two_fold_run
    run = shutil.copytree(run, tmp_path / "run")
    path = run / "fold_1" / "checkpoint_best.pt"
    payload = torch.load(path, weights_only=True)
    payload["plans"]["target_spacing"] = [0.5, 0.5]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"fold_1/checkpoint_best.pt: trained with target_spacing \[0.5, 0.5\] but "
                                              r".*fold_0/checkpoint_best.pt with \[1.0, 1.0\]"):
        load_predictor(run, device="cpu")


def test_progress_in_a_log_is_one_line_per_case_group(two_fold_run, tmp_path, monkeypatch):
    data, run = two_fold_run
    log = io.StringIO()  # not a terminal, as a file that stderr is redirected to
    monkeypatch.setattr("sys.stderr", log)
    predict(run, _images(data, 3), tmp_path / "out", device="cpu", fold=0, tta=False)
    lines = [line for line in log.getvalue().splitlines() if line.startswith("predict: ")]
    assert [line.split(",")[0] for line in lines] == ["predict: 1/3 cases", "predict: 2/3 cases", "predict: 3/3 cases"]
    assert "left" in lines[0] and "left" not in lines[-1]
    assert "\r" not in log.getvalue()

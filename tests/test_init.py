"""The public face: usema.plan, train, predict, evaluate and load, from a dataset to scores."""

import numpy as np
import pytest
import torch
from PIL import Image

import usema
from usema.errors import CheckpointError, UsemaError


def test_three_lines_from_a_run_to_a_segmentation(two_fold_run, one_thread):
    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]

    predictor = usema.load(run, device="cpu")
    segmentation = predictor.predict(image)

    assert [path.parent.name for path in predictor.checkpoints] == ["fold_0", "fold_1"]  # every trained fold
    assert predictor.tta and predictor.step_size == 0.5
    with Image.open(image) as opened:
        assert segmentation.shape == (opened.height, opened.width)
    assert segmentation.dtype == np.int64 and set(np.unique(segmentation)) <= {0, 1, 2}
    pixels = np.asarray(Image.open(image), dtype=np.float32)
    np.testing.assert_array_equal(predictor.predict(pixels, spacing=[1.0, 1.0]), segmentation)


def test_one_fold_predicts_with_its_own_network(two_fold_run, one_thread):
    _, run = two_fold_run
    single = usema.load(run, fold=1, device="cpu", tta=False)
    reference = torch.load(run / "fold_1" / "checkpoint_best.pt", weights_only=True)["model_state"]
    assert [path.parent.name for path in single.checkpoints] == ["fold_1"]
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name])
    with pytest.raises(CheckpointError, match="fold_2: fold 2 was never trained"):
        usema.load(run, folds=[1, 2])


def test_a_training_stopped_by_a_signal_raises_instead_of_returning(tmp_path, monkeypatch):
    import usema.training.run_training as run_training
    from usema.errors import Interrupted

    stopped = {"interrupted": True, "stop_signal": 2, "checkpoint_latest": tmp_path / "fold_0" / "checkpoint_latest.pt"}
    monkeypatch.setattr(run_training, "train", lambda data, run_dir, **options: stopped)
    saved = r"checkpoint_latest.pt is saved and --resume \(in Python, resume=True\) continues from it"
    with pytest.raises(Interrupted, match=saved) as err:
        usema.train(tmp_path / "data", tmp_path / "run", fold=0)
    assert err.value.exit_code == 130
    finished = {"interrupted": False, "best_val_dice": 0.5}
    monkeypatch.setattr(run_training, "train", lambda data, run_dir, **options: finished)
    assert usema.train(tmp_path / "data", tmp_path / "run") is finished


def test_plan_train_predict_evaluate_from_the_top_level(tmp_path, one_thread):
    from usema.data.phantoms import make_phantom_dataset

    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=4, shape=(24, 20), seed=0)
    edits = {"patch_size": [16, 16], "batch_size": 2, "val_max_cases": 1,
             "network_settings": {"base_features": 4, "blocks_per_stage": 1, "head_dim": 4}}
    # plan_edits, as usema.train names them (the planner's own name, edits, works too)
    plans, estimate = usema.plan(data, tmp_path / "run", device="cpu", plan_edits=edits, estimate=False)
    assert estimate is None and plans.patch_size == [16, 16] and (tmp_path / "run" / "plans.json").is_file()
    with pytest.raises(UsemaError, match="plan_edits or edits, not both"):
        usema.plan(data, tmp_path / "other", device="cpu", plan_edits=edits, edits=edits, estimate=False)
    assert usema.plan(data, tmp_path / "old", device="cpu", edits=edits, estimate=False)[0].patch_size == [16, 16]
    summary = usema.train(data, tmp_path / "run", fold=0, folds=2, epochs=1, iters_per_epoch=1, device="cpu")
    assert summary["epochs_run"] == 1 and (tmp_path / "run" / "fold_0" / "checkpoint_best.pt").is_file()
    written = usema.predict(tmp_path / "run", [data / "images"], tmp_path / "pred", tta=False, device="cpu")
    assert sorted(p.name for p in written) == sorted(p.name for p in (data / "images").iterdir())
    scores = usema.evaluate(tmp_path / "pred", data / "labels", tmp_path / "scores")
    assert scores["num_cases"] == 4 and (tmp_path / "scores" / "summary.json").is_file()


def test_plan_times_with_the_trainers_timing_unless_asked_not_to(tmp_path, monkeypatch):
    import contextlib

    import usema.training.timing
    from usema.data.phantoms import make_phantom_dataset
    from usema.planning.estimate import TimedTraining

    timed = []

    @contextlib.contextmanager
    def time_training(plans, device):
        timed.append(device)
        yield TimedTraining(step=lambda: 1.0, validate_case=lambda: 1.0)

    monkeypatch.setattr(usema.training.timing, "time_training", time_training)
    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=4, shape=(24, 20), seed=0)
    estimate = usema.plan(data, tmp_path / "run", device="cpu")[1]
    assert timed == [torch.device("cpu")] and set(estimate.step_samples) == {1.0}
    assert usema.plan(data, tmp_path / "untimed", device="cpu", estimate=False)[1] is None and len(timed) == 1

"""usema.training.run_training.train end to end on a tiny phantom run: outputs, resume, overrides and
refusals."""

import csv
import json
import math
import os
import re
import signal
import time

import numpy as np
import pytest
import torch

from usema.checkpoint import Checkpoint, read_checkpoint_file
from usema.errors import CheckpointError, DataError, Interrupted, UsemaError
from usema.models.spec import NetworkSpec
from usema.planning import Plans
from usema.training.run_training import apply_choices, stop_if_interrupted, train
from usema.training.splits import validation_subset
from usema.utils.lock import folder_lock

CHECKPOINT_KEYS = {
    "model_state",
    "model",
    "plans",
    "fold",
    "epoch",
    "optimizer_state",
    "scheduler_state",
    "scaler_state",
    "best_dice",
    "trained_seconds",
    "rng",
}


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_epochs_write_log_plot_and_checkpoints(tiny_run):
    data, run = tiny_run
    summary = train(data, run, fold=1, folds=3, epochs=2, iters_per_epoch=2, device="cpu")
    fold_dir = run / "fold_1"
    assert summary["epochs_run"] == 2 and summary["last_epoch"] == 2 and not summary["interrupted"]
    rows = _rows(fold_dir / "train_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "val_dice",
        "dice_ellipsoid",
        "dice_blob",
        "lr",
        "seconds",
    ]
    for row in rows:
        per_class = [float(row["dice_ellipsoid"]), float(row["dice_blob"])]
        assert all(0.0 <= d <= 1.0 for d in per_class)
        assert float(row["val_dice"]) == pytest.approx(np.mean(per_class), abs=1e-5)
        assert float(row["train_loss"]) > 0
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # poly decay, to 0 at the last step
    assert (fold_dir / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    latest = Checkpoint.load(fold_dir / "checkpoint_latest.pt")
    best = Checkpoint.load(fold_dir / "checkpoint_best.pt")
    assert set(read_checkpoint_file(fold_dir / "checkpoint_latest.pt")) >= CHECKPOINT_KEYS  # the file's entries
    assert latest.epoch == 2 and latest.fold == 1
    assert latest.network == NetworkSpec("usema-nosema", 3, 1, 3, latest.plans.network_settings, deep_supervision=True)
    assert set(latest.rng[0]) == {"python", "numpy", "torch", "cuda"}
    best_row = max(rows, key=lambda r: float(r["val_dice"]))
    assert best.epoch == int(best_row["epoch"])
    assert best.best_dice == pytest.approx(float(best_row["val_dice"]), abs=1e-5)
    assert summary["best_dice"] == pytest.approx(best.best_dice)
    # the split was written, is reused, and fold 1 validates on one of its held-out cases (val_max_cases 1),
    # drawn by size and recorded in the fold's folder
    splits = json.loads((run / "splits.json").read_text())["splits"]
    recorded = json.loads((fold_dir / "validation_cases.json").read_text())
    assert latest.val_cases == recorded["cases"] == validation_subset(
        splits[1]["val"], 1, Plans.load(run).case_sizes()
    )
    assert recorded["held_out"] == len(splits[1]["val"]) == 2 and recorded["stratified_by_size"]
    assert latest.train_cases == splits[1]["train"]


def test_resume_matches_an_uninterrupted_run(tiny_run, tmp_path, monkeypatch, capsys):
    from usema.training.loop import Trainer

    data, run = tiny_run
    other = tmp_path / "other"
    import shutil

    shutil.copytree(run, other)
    train(data, run, epochs=2, iters_per_epoch=2, device="cpu", folds=2, seed=3)
    # a budget that runs out when epoch 1 ends (a real one would also shorten the learning-rate decay)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_past_deadline", lambda self: self.epoch >= 1)
        first = train(data, other, epochs=2, iters_per_epoch=2, device="cpu", folds=2, seed=3)
    assert first["last_epoch"] == 1 and first["out_of_time"]
    # given no --epochs or --iters-per-epoch, a resume continues with the run's own, not plans.json's
    resumed = train(data, other, device="cpu", folds=2, seed=3, resume=True)
    assert "continues with the settings its run began with (epochs 2, iters_per_epoch 2" in capsys.readouterr().err
    assert resumed["epochs_run"] == 1 and resumed["last_epoch"] == 2
    straight = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    pieced = Checkpoint.load(other / "fold_0" / "checkpoint_latest.pt")
    for key, value in straight.model_state.items():
        assert torch.equal(value, pieced.model_state[key]), key
    assert torch.equal(straight.rng[0]["torch"], pieced.rng[0]["torch"])
    assert [r["epoch"] for r in _rows(other / "fold_0" / "train_log.csv")] == ["1", "2"]
    assert (
        _rows(other / "fold_0" / "train_log.csv")[1]["train_loss"]
        == _rows(run / "fold_0" / "train_log.csv")[1]["train_loss"]
    )


def test_resume_without_checkpoint_starts_fresh(tiny_run, capsys):
    data, run = tiny_run
    with pytest.raises(UsemaError, match="--resume continues the fold's run and --overwrite starts it over"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, resume=True, overwrite=True)
    summary = train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert "starting fold 0 from scratch" in capsys.readouterr().err
    assert summary["epochs_run"] == 1


def test_resume_refuses_a_checkpoint_of_another_model_optimizer_or_plan(tiny_run):
    data, run = tiny_run
    train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    plans = json.loads((run / "plans.json").read_text())
    plans["model"]["network_settings"]["base_features"] = 8
    (run / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match="another model"):
        train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    plans["model"]["network_settings"]["base_features"] = 4
    (run / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match="adamw"):
        train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True, optimizer="sgd")
    plans["patch_size"] = [16, 16, 12]
    (run / "plans.json").write_text(json.dumps(plans))
    message = r"another plan: patch_size was \[16, 16, 16\], plans\.json now has \[16, 16, 12\]"
    with pytest.raises(CheckpointError, match=message):
        train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)


def test_loss_decreases_on_an_easy_phantom(tiny_run):
    data, run = tiny_run
    train(data, run, epochs=4, iters_per_epoch=6, device="cpu", folds=2, seed=0)
    rows = _rows(run / "fold_0" / "train_log.csv")
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.92 * losses[0], losses
    assert float(rows[-1]["val_dice"]) > float(rows[0]["val_dice"])


def test_bf16_autocast_on_cpu_trains(tiny_run):
    data, run = tiny_run
    summary = train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, precision="bf16")
    assert summary["precision"] == "bfloat16"
    checkpoint = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    assert checkpoint.plans.training.precision == "bf16"
    assert all(v.dtype == torch.float32 for v in checkpoint.model_state.values() if v.is_floating_point())
    assert math.isfinite(summary["best_dice"])


def test_run_folder_of_another_dataset_or_label_mode_is_refused(tiny_run, tmp_path):
    data, run = tiny_run
    with pytest.raises(UsemaError, match="was made for the dataset"):
        train(tmp_path, run, epochs=1, iters_per_epoch=1, device="cpu")
    with pytest.raises(UsemaError, match="semantic labels, not binary"):
        train(data, run, label_mode="binary", epochs=1, iters_per_epoch=1, device="cpu")
    with pytest.raises(UsemaError, match="out of range"):
        train(data, run, fold=5, folds=5)


def test_choices_replace_the_plans_model_and_training_settings(tiny_run):
    _, run = tiny_run
    plans = Plans.load(run)
    out = apply_choices(
        plans, model="usema", epochs=3, optimizer="sgd", schedule="cosine", precision="bf16", num_workers=0
    )
    assert out.model_name == "usema" and "stage_windows" in out.network_settings  # usema's own windows
    training = out.training
    assert (training.optimizer, training.lr, training.epochs, training.schedule, training.precision) == (
        "sgd", 1e-2, 3, "cosine", "bf16"
    )
    assert training.iters_per_epoch == plans.training.iters_per_epoch and training.num_workers == 0
    assert plans.training.epochs == 50 and plans.model_name == "usema-nosema"  # the input is left alone
    assert apply_choices(plans, precision="auto") == plans
    with pytest.raises(UsemaError, match="epochs"):
        apply_choices(plans, epochs=0)


def test_training_keys_of_plan_edits_apply_before_the_named_choices(tiny_run):
    plans = Plans.load(tiny_run[1])
    out = apply_choices(plans, epochs=4, settings={"lr": 1e-3, "val_max_cases": 3, "num_workers": 2, "epochs": 9})
    training = out.training
    assert (training.lr, training.val_max_cases, training.num_workers, training.epochs) == (1e-3, 3, 2, 4)
    with pytest.raises(UsemaError, match='^--plan lr="fast": must be a positive number$'):
        apply_choices(plans, settings={"lr": "fast"})


def test_2d_training_with_the_attention_model(tmp_path):
    from usema.data.phantoms import make_phantom_dataset
    from usema.planning.planner import plan_dataset

    data = make_phantom_dataset(tmp_path / "data2d", spatial_dims=2, num_cases=4, shape=(40, 36), seed=2)
    run = tmp_path / "run2d"
    plan_dataset(
        data,
        run,
        model="usema",
        device="cpu",
        patch_size=[32, 32],
        batch_size=2,
        network_settings={"base_features": 8, "blocks_per_stage": 1, "head_dim": 8},
    )
    summary = train(data, run, epochs=1, iters_per_epoch=2, device="cpu", folds=2)
    checkpoint = Checkpoint.load(run / "fold_0" / "checkpoint_best.pt")
    assert checkpoint.network.name == "usema" and checkpoint.network.spatial_dims == 2
    assert len(_rows(run / "fold_0" / "train_log.csv")) == 1
    assert 0.0 <= summary["best_dice"] <= 1.0


def test_a_budget_cuts_the_running_epoch_short_and_still_validates_it(tiny_run):
    data, run = tiny_run
    summary = train(data, run, epochs=3, iters_per_epoch=50, device="cpu", folds=2, seed=3, max_minutes=1e-9)
    assert summary["out_of_time"] and summary["last_epoch"] == 1
    rows = _rows(run / "fold_0" / "train_log.csv")
    assert len(rows) == 1 and float(rows[0]["lr"]) == 0.0  # the budget also ended the learning-rate decay
    assert 0.0 <= float(rows[0]["val_dice"]) <= 1.0
    assert float(rows[0]["seconds"]) < 60  # one iteration, not fifty


def test_a_run_stopped_inside_its_first_epoch_resumes_with_what_is_left_of_its_budget(tiny_run, monkeypatch):
    from usema.training.loop import Trainer

    data, run = tiny_run
    take_step = Trainer._train_step

    def step_slowly_then_ask_to_stop(self, images, labels):
        loss = take_step(self, images, labels)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # what a user's Ctrl-C does: the loop saves and returns
        return loss

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", step_slowly_then_ask_to_stop)
        first = train(data, run, epochs=2, iters_per_epoch=6, device="cpu", folds=2, seed=3, max_minutes=10)
    assert first["interrupted"] and first["last_epoch"] == 0
    latest = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    spent = latest.trained_seconds
    first_part = latest.partial_epoch["seconds"]
    assert latest.partial_epoch["iterations"] == 1 and spent >= first_part >= 1.0
    assert _rows(run / "fold_0" / "train_log.csv") == []  # no epoch finished: only the checkpoint knows
    # resumed with a budget that the first part already spent: no further step; the cut epoch is closed
    with_spent_budget = {
        "epochs": 2,
        "iters_per_epoch": 6,
        "device": "cpu",
        "folds": 2,
        "seed": 3,
        "resume": True,
    }
    resumed = train(data, run, **with_spent_budget, max_minutes=spent / 60.0)
    assert resumed["out_of_time"] and resumed["last_epoch"] == 1
    latest = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    assert latest.steps == 1 and latest.partial_epoch is None
    rows = _rows(run / "fold_0" / "train_log.csv")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_dice"]) <= 1.0
    # the epoch's row includes the seconds of its part before the stop, the run's count all of them
    assert first_part <= float(rows[0]["seconds"]) <= latest.trained_seconds
    assert latest.trained_seconds > spent
    # resumed again with the same budget: nothing left to train or close
    again = train(data, run, **with_spent_budget, max_minutes=spent / 60.0)
    assert again["out_of_time"] and again["epochs_run"] == 0
    assert Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt").steps == 1
    assert len(_rows(run / "fold_0" / "train_log.csv")) == 1


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_folder_and_pid(tiny_run):
    data, run = tiny_run
    with folder_lock(run), pytest.raises(UsemaError, match=rf"{run} is in use .*\(pid {os.getpid()}\)"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    assert not (run / "fold_0").exists()


def test_a_finished_run_is_continued_or_replaced_only_when_asked(tiny_run):
    data, run = tiny_run
    train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    latest = run / "fold_0" / "checkpoint_latest.pt"
    before = latest.read_bytes()
    with pytest.raises(
        UsemaError, match=r"fold_0 holds an earlier run \(model usema-nosema, epoch 1 of 1\): --resume"
    ):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    assert latest.read_bytes() == before and len(_rows(run / "fold_0" / "train_log.csv")) == 1
    resumed = train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert resumed["epochs_run"] == 1 and resumed["last_epoch"] == 2
    again = train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, overwrite=True)
    assert again["last_epoch"] == 1 and [r["epoch"] for r in _rows(run / "fold_0" / "train_log.csv")] == ["1"]
    assert Checkpoint.load(run / "fold_0" / "checkpoint_best.pt").epoch == 1  # no best of the replaced run


def test_another_model_into_a_trained_run_is_refused_and_the_plan_names_the_model_trained(tiny_run):
    data, run = tiny_run
    train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    with pytest.raises(UsemaError, match=r"is a run of model usema-nosema \(fold_0 trained\)"):
        train(data, run, model="nnunet", epochs=1, iters_per_epoch=1, device="cpu", folds=2, fold=1)
    # --overwrite starts over the fold it trains: fold_0 would be left with a plan it does not load with
    with pytest.raises(UsemaError, match=r"or delete fold_0 first \(--overwrite starts over only the fold"):
        train(data, run, model="nnunet", epochs=1, iters_per_epoch=1, device="cpu", folds=2, fold=1,
              overwrite=True)
    assert json.loads((run / "plans.json").read_text())["model"]["name"] == "usema-nosema"
    assert not (run / "fold_1").exists()
    train(data, run, model="nnunet", epochs=1, iters_per_epoch=1, device="cpu", folds=2, overwrite=True)
    assert json.loads((run / "plans.json").read_text())["model"]["name"] == "nnunet"
    assert Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt").network.name == "nnunet"


def test_an_interrupted_run_is_reported_as_such():
    stop_if_interrupted({"interrupted": False})
    with pytest.raises(Interrupted, match=r"--resume \(in Python, resume=True\) continues") as stopped:
        stop_if_interrupted({"interrupted": True, "stop_signal": signal.SIGTERM, "checkpoint_latest": "x.pt"})
    assert stopped.value.exit_code == 143


def test_a_typo_in_the_plans_network_settings_names_the_file_the_key_and_the_settings(tiny_run):
    data, run = tiny_run
    plans = json.loads((run / "plans.json").read_text())
    plans["model"]["network_settings"]["blocks_per_stag"] = 1
    (run / "plans.json").write_text(json.dumps(plans))
    message = (
        r"plans\.json: model 'usema-nosema' has no network setting 'blocks_per_stag'; .* blocks_per_stage,"
    )
    with pytest.raises(DataError, match=message):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    assert not (run / "fold_0").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_error_and_the_last_checkpoint_survives(
    tiny_run, monkeypatch
):
    import errno

    from usema import checkpoint

    data, run = tiny_run
    train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    latest = run / "fold_0" / "checkpoint_latest.pt"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(UsemaError, match=rf"{latest}: cannot write it, no space left on device"):
        train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    monkeypatch.undo()
    assert Checkpoint.load(latest).epoch == 1
    resumed = train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert resumed["last_epoch"] == 2
    assert [r["epoch"] for r in _rows(run / "fold_0" / "train_log.csv")] == ["1", "2"]


def test_a_fold_count_the_dataset_cannot_fill_is_refused_before_preprocessing(tmp_path):
    from usema.data.phantoms import make_phantom_dataset

    data = make_phantom_dataset(tmp_path / "data", spatial_dims=2, num_cases=3, shape=(24, 24), seed=0)
    with pytest.raises(UsemaError, match="5 folds need at least 5 cases"):
        train(data, tmp_path / "run", epochs=1, iters_per_epoch=1, device="cpu", folds=5)
    assert not (tmp_path / "run" / "preprocessed").exists()


def test_every_model_of_a_split_validates_on_the_same_cases_drawn_by_size(tiny_run, tmp_path):
    import shutil

    data, run = tiny_run
    other = tmp_path / "other"
    shutil.copytree(run, other)
    train(data, run, folds=2, epochs=1, iters_per_epoch=1, device="cpu", plan_edits={"val_max_cases": 2})
    shutil.copy(run / "splits.json", other / "splits.json")  # a comparison shares its split, as the bench does
    train(data, other, model="usema", folds=2, epochs=1, iters_per_epoch=1, device="cpu", seed=7,
          plan_edits={"val_max_cases": 2})

    recorded = [json.loads((folder / "fold_0" / "validation_cases.json").read_text()) for folder in (run, other)]
    assert recorded[0] == recorded[1] and recorded[0]["stratified_by_size"]
    validated = recorded[0]["cases"]
    assert [Checkpoint.load(folder / "fold_0" / "checkpoint_latest.pt").val_cases for folder in (run, other)] == [
        validated, validated]
    held_out = json.loads((run / "splits.json").read_text())["splits"][0]["val"]
    assert len(validated) == 2 and set(validated) < set(held_out) and validated != sorted(held_out)[:2]
    # one case from the smaller and one from the larger part of the fold's foreground sizes
    sizes = Plans.load(run).case_sizes()
    by_size = sorted(held_out, key=lambda case: (sizes[case], case))
    assert by_size.index(validated[0]) // 2 != by_size.index(validated[1]) // 2


def test_a_resumed_run_ends_with_the_checkpoints_predict_needs(tiny_run, monkeypatch):

    data, run = tiny_run
    fold = run / "fold_0"
    original_save = Checkpoint.save

    def best_finds_no_space(checkpoint, path):
        if path.name == "checkpoint_best.pt":
            raise UsemaError(f"{path}: cannot write it, no space left on device")
        return original_save(checkpoint, path)

    monkeypatch.setattr(Checkpoint, "save", best_finds_no_space)
    with pytest.raises(UsemaError, match="checkpoint_best.pt: cannot write it"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    # best is written before latest: no latest checkpoint claims an epoch whose best is not on disk
    assert not (fold / "checkpoint_latest.pt").exists()
    monkeypatch.undo()
    train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert Checkpoint.load(fold / "checkpoint_best.pt").epoch == 1

    # a fold whose best checkpoint was lost (a crash in an earlier usema, a deleted file): the resumed run
    # writes one even when no epoch is left to train
    (fold / "checkpoint_best.pt").unlink()
    with pytest.warns(UserWarning, match="no checkpoint_best.pt was written .* holds the last epoch, 1"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert Checkpoint.load(fold / "checkpoint_best.pt").epoch == 1
    (fold / "checkpoint_best.pt").unlink()
    summary = train(data, run, epochs=2, iters_per_epoch=1, device="cpu", folds=2, resume=True)
    assert summary["best_epoch"] == 2  # the lost best no longer counts: the next validated epoch is the best
    assert Checkpoint.load(fold / "checkpoint_best.pt").epoch == 2


@pytest.mark.parametrize("minutes", [0, -1.0, math.nan, math.inf])
def test_a_budget_that_is_no_positive_number_is_refused_before_any_work(tiny_run, minutes):
    data, run = tiny_run
    with pytest.raises(UsemaError, match=rf"max_minutes {minutes!r}: must be a positive, finite number of minutes"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, max_minutes=minutes)
    assert not (run / "fold_0").exists()


def test_a_budget_that_ends_the_run_says_so(tiny_run, capsys):
    data, run = tiny_run
    summary = train(data, run, epochs=3, iters_per_epoch=1, device="cpu", folds=2, max_minutes=1e-6)
    assert summary["out_of_time"] and summary["last_epoch"] == 1
    assert (
        f"{run / 'fold_0'}: the training budget of 1e-06 minutes is spent after epoch 1 of 3; a larger one "
        "(--max-minutes, max_minutes) with --resume trains on"
    ) in capsys.readouterr().err.splitlines()


def test_training_plan_edits_are_checked_before_any_work_on_an_existing_plan(tiny_run):
    data, run = tiny_run
    with pytest.raises(UsemaError, match=r'^--plan lr="fast": must be a positive number$'):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, plan_edits={"lr": "fast"})
    with pytest.raises(UsemaError, match=r"^--plan val_max_cases=-1: must be an integer >= 0 \(0 or null: every"):
        train(data, run, epochs=1, iters_per_epoch=1, device="cpu", folds=2, plan_edits={"val_max_cases": -1})
    assert not (run / "fold_0").exists() and not (run / "splits.json").exists()


def test_a_run_folder_in_the_dataset_folder_is_refused_before_anything_is_written(prepared_run):
    data, _ = prepared_run
    before = sorted(data.rglob("*"))
    for run in (data, data / "imagesTr", data / "labelsTr" / "first"):
        with pytest.raises(DataError, match=rf"^{re.escape(str(run))}: the run folder is the dataset folder "
                                            rf"{re.escape(str(data))} or one of its image or label folders; "
                                            ".*choose a run folder outside"):
            train(data / "dataset.json", run, epochs=1, iters_per_epoch=1, device="cpu", folds=2)
    assert sorted(data.rglob("*")) == before  # not even the lock file

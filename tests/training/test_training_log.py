"""train_log.csv rows, progress.png, and the log kept up to the checkpoint on resume."""

import csv
import errno

import pytest

from usema.errors import UsemaError
from usema.training import training_log
from usema.training.training_log import TrainingLog


def _row(epoch):
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "val_dice": 0.5,
        "dice_liver": 0.4,
        "dice_tumour": 0.6,
        "lr": 0.01,
        "seconds": 2.5,
    }


def _epochs(path):
    with path.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_rows_are_appended_and_the_plot_written(tmp_path):
    log = TrainingLog(tmp_path, ["liver", "tumour"])
    log.append(_row(1))
    log.append(_row(2))
    log.close()
    with (tmp_path / "train_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "val_dice", "dice_liver", "dice_tumour", "lr", "seconds"]
    assert [float(r["train_loss"]) for r in rows] == [1.0, 0.5]
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_resume_keeps_rows_up_to_the_checkpoint_and_a_fresh_start_clears_them(tmp_path):
    log = TrainingLog(tmp_path, ["liver", "tumour"])
    for epoch in (1, 2, 3):
        log.append(_row(epoch))
    # killed after logging epoch 3 but before its checkpoint: the resumed run redoes epoch 3
    resumed = TrainingLog(tmp_path, ["liver", "tumour"], resume_after_epoch=2)
    assert _epochs(tmp_path / "train_log.csv") == [1, 2]
    resumed.append(_row(3))
    assert _epochs(tmp_path / "train_log.csv") == [1, 2, 3]
    TrainingLog(tmp_path, ["liver", "tumour"])
    assert _epochs(tmp_path / "train_log.csv") == []


def test_numbers_go_to_tensorboard_when_it_is_installed(tmp_path, monkeypatch):
    import sys
    import types

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    log = TrainingLog(tmp_path, ["liver", "tumour"])
    log.append(_row(2))
    log.close()
    assert (
        ("val_dice", 0.5, 2) in scalars and ("dice_tumour", 0.6, 2) in scalars and ("lr", 0.01, 2) in scalars
    )
    assert scalars[-1] == "closed"


def test_a_full_disk_while_logging_names_the_log(tmp_path, monkeypatch):
    log = TrainingLog(tmp_path, ["a"])

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training_log.os, "fsync", no_space)
    row = {"epoch": 1, "train_loss": 0.5, "val_dice": 0.5, "dice_a": 0.5, "lr": 0.1, "seconds": 1.0}
    with pytest.raises(UsemaError, match=r"train_log\.csv: cannot write it, no space left on device"):
        log.append(row)


def test_a_row_cut_short_is_left_out_and_the_rows_before_it_kept(tmp_path):
    log = TrainingLog(tmp_path, ["a"])
    for epoch in (1, 2):
        log.append(
            {"epoch": epoch, "train_loss": 0.5, "val_dice": 0.5, "dice_a": 0.5, "lr": 0.1, "seconds": 1.0}
        )
    log.close()
    with (tmp_path / "train_log.csv").open("a") as handle:
        handle.write("3,0.4")  # the disk filled up in the middle of epoch 3's row
    resumed = TrainingLog(tmp_path, ["a"], resume_after_epoch=3)
    assert [row["epoch"] for row in resumed.rows] == [1.0, 2.0]

"""Checkpoints: the Checkpoint type written and read back, older checkpoints read in the current form, the run
folder's names, and files read with weights_only: a damaged file is called corrupt, a file holding code is
refused as such."""

import errno
import os
import struct
import zipfile

import numpy as np
import pytest
import torch

from usema.checkpoint import (
    Checkpoint,
    checkpoint_path,
    fold_dir,
    fold_dirs,
    is_run_folder,
    read_checkpoint_file,
    run_holding,
    trained_folds,
    write_checkpoint_file,
)
from usema.errors import CheckpointError, DataError, UsemaError
from usema.models.spec import NetworkSpec
from usema.planning import Plans

NETWORK = NetworkSpec("usema-nosema", 2, 1, 2, {"base_features": 4, "strides": [[1, 1], [2, 2]]})


class RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo never run",))


def _valid(path):
    return Checkpoint({"w": torch.ones(3)}, NETWORK).save(path)


def _plans(version=4, **model):
    """A plan of `version`, its "model" section `model` (a usema-nosema network by default)."""
    plan = {
        "version": version,
        "dataset": {"path": "/d", "format": "msd", "spatial_dims": 2, "num_channels": 1, "label_mode": "semantic",
                    "num_classes": 2, "cases": ["a"], "labels": {"0": "background", "1": "x"}},
        "target_spacing": [1.0, 1.0], "normalization": {"scheme": "none"}, "patch_size": [8, 8], "batch_size": 2,
        "model": model or {"name": "usema-nosema", "network_settings": NETWORK.network_settings},
        "training": {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "iters_per_epoch": 1},
    }
    if version >= 4:
        plan["dataset"]["label_values"] = [0, 1]
    return plan


def test_a_checkpoint_is_read_back_as_it_was_written(tmp_path):
    plans = Plans(_plans())
    written = Checkpoint(
        {"w": torch.arange(3.0)}, NETWORK, plans, fold=2, epoch=5, partial_epoch={"iterations": 3, "loss_sum": 1.5},
        optimizer_state={"state": {}}, scheduler_state={"last_epoch": 42}, best_dice=0.5, best_epoch=4,
        trained_seconds=12.5, seed=7, world_size=1, rng=[{"torch": torch.zeros(2)}], train_cases=["a"],
        val_cases=["b"],
    )
    path = written.save(fold_dir(tmp_path, 2) / "checkpoint_latest.pt")
    read = Checkpoint.load(path, expected=plans.network, expected_by="plans.json")
    tensors = ("model_state", "rng")
    assert {k: v for k, v in vars(read).items() if k not in (*tensors, "path")} == {
        k: v for k, v in vars(written).items() if k not in (*tensors, "path")}
    assert read.path == path and written.path is None and read.steps == 42 and read.plans == plans
    assert torch.equal(read.model_state["w"], torch.arange(3.0)) and torch.equal(read.rng[0]["torch"], torch.zeros(2))
    assert read_checkpoint_file(path)["model"] == NETWORK.to_dict()  # the file's "model" entry
    assert Checkpoint({}, NETWORK).steps == 0


def test_an_older_checkpoint_is_read_in_the_current_form(tmp_path):
    # as usema wrote it with plans version 1: the settings named "overrides", no seconds, no random states
    entry = {"name": "usema", "spatial_dims": 2, "in_channels": 1, "num_classes": 2, "overrides": {"head_dim": 8}}
    plans = _plans(1, name="usema", overrides={"head_dim": 8})
    path = write_checkpoint_file({"model_state": {}, "model": entry, "plans": plans, "fold": 0, "epoch": 3,
                                  "optimizer_state": {}, "scheduler_state": {"last_epoch": 6}}, tmp_path / "old.pt")
    old = Checkpoint.load(path)
    # a network of plans before version 3 had a SEMA block in every stage: the migration names it
    assert old.network == NetworkSpec("usema", 2, 1, 2, {"head_dim": 8, "sema_per_stage": "all"})
    assert old.plans.version == 4 and old.plans.network_settings == old.network.network_settings
    assert (old.epoch, old.steps, old.trained_seconds, old.rng, old.best_dice) == (3, 6, None, [], -1.0)


def test_a_malformed_checkpoint_is_refused_naming_the_file(tmp_path):
    path = write_checkpoint_file({"model_state": {}, "model": {"name": "usema"}}, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match=r"half\.pt: the network description has no 'spatial_dims'"):
        Checkpoint.load(path)
    path = write_checkpoint_file({"model_state": {}, "model": NETWORK.to_dict(), "epoch": "three"}, path)
    with pytest.raises(CheckpointError, match=r"half\.pt: malformed checkpoint"):
        Checkpoint.load(path)
    path = write_checkpoint_file({"model_state": {}, "model": NETWORK.to_dict(), "plans": {"version": 4}}, path)
    with pytest.raises(DataError, match=r"half\.pt: plans key 'dataset' is missing"):
        Checkpoint.load(path)
    path = write_checkpoint_file({"weights": {}}, path)
    with pytest.raises(CheckpointError, match=r"half\.pt: not a usema checkpoint"):
        Checkpoint.load(path)


def test_the_run_folder_names_its_folds_and_checkpoints(tmp_path):
    assert checkpoint_path(tmp_path, "latest", 3) == tmp_path / "fold_3" / "checkpoint_latest.pt"
    with pytest.raises(UsemaError, match="unknown checkpoint 'final'; choose one of latest, best"):
        checkpoint_path(tmp_path, "final")
    for fold in (1, 0, 10):
        _valid(checkpoint_path(tmp_path, "best", fold))
    (tmp_path / "fold_x").mkdir()
    _valid(checkpoint_path(tmp_path, "latest", 1))
    assert trained_folds(tmp_path) == [0, 1, 10] and trained_folds(tmp_path, "latest") == [1]
    assert trained_folds(tmp_path / "absent") == []
    (tmp_path / "fold_2").mkdir()  # a fold folder without checkpoints is a fold folder still
    (tmp_path / "fold_4").write_text("not a folder")
    assert fold_dirs(tmp_path) == {k: fold_dir(tmp_path, k) for k in (0, 1, 2, 10)}
    assert fold_dirs(tmp_path / "absent") == {}


def test_a_run_folder_is_told_by_its_plan_or_its_checkpoints(tmp_path):
    planned, trained, nnunet = tmp_path / "planned", tmp_path / "trained", tmp_path / "nnunet"
    Plans(_plans()).save(planned)
    _valid(checkpoint_path(trained, "best", 2))
    (nnunet / "fold_0").mkdir(parents=True)
    (nnunet / "fold_0" / "checkpoint_final.pth").write_bytes(b"nnU-Net's")
    predictions = tmp_path / "predictions"  # the plans.json of --save-probabilities is no usema plan
    predictions.mkdir()
    (predictions / "plans.json").write_text('{"usema_predictions": {}, "configurations": {}}')
    assert [is_run_folder(f) for f in (planned, trained, nnunet, predictions, tmp_path)] == [1, 1, 1, 0, 0]
    assert run_holding(planned) == planned.resolve() and run_holding(tmp_path / "absent") is None
    # a run's fold folders (nnU-Net's fold_all too) and what lies in them belong to it; a folder of its own
    # inside a run holds none of the run's files
    assert run_holding(trained / "fold_2" / "more") == run_holding(trained / "fold_7") == trained.resolve()
    assert run_holding(nnunet / "fold_all" / "x") == nnunet.resolve()
    assert run_holding(planned / "preprocessed") == planned.resolve()  # the run's preprocessed cases
    assert run_holding(planned / "predictions") is None and run_holding(predictions) is None


def test_random_bytes_are_reported_as_corruption_not_as_code(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"checkpoint_latest\.pt: corrupt checkpoint") as err:
        Checkpoint.load(path)
    assert "arbitrary code" not in str(err.value)


def test_a_damaged_pickle_inside_a_torch_archive_is_corruption(tmp_path):
    path = _valid(tmp_path / "damaged.pt")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length  # data.pkl is stored uncompressed here
    raw[start + 2 : start + 12] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Checkpoint.load(path)


def test_a_checkpoint_holding_code_is_refused_as_such_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state": RunsCode(), "model": {}}, path)
    with pytest.raises(CheckpointError, match="would need arbitrary code to load"):
        Checkpoint.load(path)
    assert Checkpoint.load(_valid(tmp_path / "good.pt")).network == NETWORK


def test_an_older_checkpoints_network_settings_are_read_and_checked_against_the_plan(tmp_path):
    entry = {"name": "usema", "spatial_dims": 2, "in_channels": 1, "num_classes": 3}
    entry["overrides"] = {"head_dim": 8}  # as checkpoints made before plans version 2 name the settings
    path = write_checkpoint_file({"model_state": {"w": torch.ones(3)}, "model": entry}, tmp_path / "old.pt")
    # made before plans version 3, the network had a SEMA block in every stage: the migration names it
    expected = NetworkSpec("usema", 2, 1, 3, {"head_dim": 8, "sema_per_stage": "all"})
    assert Checkpoint.load(path, expected=expected).network == expected
    with pytest.raises(CheckpointError, match=r"old\.pt: checkpoint is for another model: network_settings="
                                              r"\{'head_dim': 8, 'sema_per_stage': 'all'\}, expected \{\} by plans\.json"):
        Checkpoint.load(path, expected=NetworkSpec("usema", 2, 1, 3), expected_by="plans.json")


def _enforce_fail():
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def _wrapped_no_space():
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as err:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from err


@pytest.mark.parametrize(
    "failure,message",
    [
        (_wrapped_no_space, "cannot write it, no space left on device; free some space"),
        (_enforce_fail, r"cannot write the checkpoint, torch's writer failed \(\[enforce fail at inline_container"),
    ],
)
def test_a_failed_torch_save_is_one_line_naming_the_file_and_the_old_checkpoint_stays(
    tmp_path, monkeypatch, failure, message
):
    path = _valid(tmp_path / "checkpoint_latest.pt")

    def failing_save(payload, handle):
        handle.write(b"PK\x03\x04 part of an archive")
        failure()

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UsemaError, match=rf"{path}: {message}") as err:
        write_checkpoint_file({"model_state": {"w": torch.zeros(3)}, "model": {"name": "usema"}}, path)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert torch.equal(Checkpoint.load(path).model_state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_runtime_error_that_is_no_write_failure_is_not_called_one(tmp_path, monkeypatch):
    def failing_save(payload, handle):
        raise RuntimeError("cannot pickle a generator")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="cannot pickle a generator"):
        write_checkpoint_file({"model_state": {}, "model": {}}, tmp_path / "x.pt")


# How torch 2.4 worded a refusal (2.6 and later put the advice first and the reason on a line of its own).
TORCH_2_4_REFUSAL = (
    "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but "
    "it can result in arbitrary code execution. Do it only if you got the file from a trusted source. Please file "
    "an issue with the following so that we can make `weights_only=True` compatible with your use case: "
    "WeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global by default. Please "
    "use `torch.serialization.add_safe_globals([system])` to allowlist this global if you trust this class/function."
)


@pytest.mark.parametrize("torch_words", [None, TORCH_2_4_REFUSAL])
def test_a_refusal_names_what_was_refused_and_never_advises_loading_unsafely(tmp_path, monkeypatch, torch_words):
    import pickle

    path = tmp_path / "evil.pt"
    torch.save({"model_state": RunsCode(), "model": {}}, path)
    if torch_words is not None:
        def refuse(*args, **kwargs):
            raise pickle.UnpicklingError(torch_words)

        monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(CheckpointError) as err:
        Checkpoint.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused, the checkpoint holds objects that would need arbitrary code to load")
    assert "GLOBAL posix.system" in message or "GLOBAL os.system" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message

"""Checkpoints read with weights_only: a damaged file is called corrupt, a file holding code is refused as such."""

import errno
import os
import struct
import zipfile

import numpy as np
import pytest
import torch

from usema.errors import CheckpointError, UsemaError
from usema.training.checkpoint import load_checkpoint, save_checkpoint


class RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo never run",))


def _valid(path):
    return save_checkpoint({"model_state": {"w": torch.ones(3)}, "model": {"name": "usema"}}, path)


def test_random_bytes_are_reported_as_corruption_not_as_code(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"checkpoint_latest\.pt: corrupt checkpoint") as err:
        load_checkpoint(path)
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
        load_checkpoint(path)


def test_a_checkpoint_holding_code_is_refused_as_such_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state": RunsCode(), "model": {}}, path)
    with pytest.raises(CheckpointError, match="would need arbitrary code to load"):
        load_checkpoint(path)
    assert load_checkpoint(_valid(tmp_path / "good.pt"))["model"] == {"name": "usema"}


def test_an_older_checkpoints_network_settings_are_read_and_checked_against_the_plan(tmp_path):
    entry = {"name": "usema", "spatial_dims": 2, "in_channels": 1, "num_classes": 3}
    entry["overrides"] = {"head_dim": 8}  # as checkpoints made before plans version 2 name the settings
    path = save_checkpoint({"model_state": {"w": torch.ones(3)}, "model": entry}, tmp_path / "old.pt")
    # made before plans version 3, the network had a SEMA block in every stage: the migration names it
    settings = {"head_dim": 8, "sema_per_stage": "all"}
    expected = {**{k: v for k, v in entry.items() if k != "overrides"}, "network_settings": settings}
    assert load_checkpoint(path, expected_model=expected)["model"] == expected
    with pytest.raises(CheckpointError, match=r"network_settings=\{'head_dim': 8, 'sema_per_stage': 'all'\}, "
                                              r"expected \{\} by"):
        load_checkpoint(path, expected_model={**expected, "network_settings": {}}, expected_by="plans.json")


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
        save_checkpoint({"model_state": {"w": torch.zeros(3)}, "model": {"name": "usema"}}, path)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_runtime_error_that_is_no_write_failure_is_not_called_one(tmp_path, monkeypatch):
    def failing_save(payload, handle):
        raise RuntimeError("cannot pickle a generator")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="cannot pickle a generator"):
        save_checkpoint({"model_state": {}, "model": {}}, tmp_path / "x.pt")


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
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused, the checkpoint holds objects that would need arbitrary code to load")
    assert "GLOBAL posix.system" in message or "GLOBAL os.system" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message

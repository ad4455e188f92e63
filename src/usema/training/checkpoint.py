"""Checkpoints: written atomically, read without executing pickled code, checked against the model."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usema.errors import CheckpointError, UsemaError
from usema.planning.schema import migrate_network_description
from usema.utils.atomic import atomic_path, full_disk_errno

CHECKPOINT_NAMES = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt"}
# How torch's archive writer reports a write that failed (versions differ; some lose the OSError's errno).
_WRITER_FAILURE = re.compile(r"inline_container|PytorchStreamWriter|iostream error|file write failed")


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically: a temporary file in the same folder, fsync, then rename.

    A kill at any moment leaves either the previous checkpoint or the new one, never a torn file; a failed
    write (a full disk, however torch reports it) raises UsemaError naming `path`.
    The payload must hold only tensors, numbers, strings, lists and dicts, so that it loads with
    ``weights_only=True``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(payload, handle)
        except RuntimeError as err:
            if full_disk_errno(err) is not None or not _WRITER_FAILURE.search(str(err)):
                raise  # a full disk is named by atomic_path; anything else is not a write failure
            reason = str(err).strip().splitlines()[0]
            raise UsemaError(
                f"{path}: cannot write the checkpoint, torch's writer failed ({reason}); if the disk is full, free "
                "some space and run again (files written before are intact)"
            ) from err
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_checkpoint(
    path: str | Path, expected_model: dict[str, Any] | None = None, expected_by: str | Path | None = None
) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: arbitrary pickled objects are refused, never executed).

    `expected_model`, if given, is the description (`Plans.network_description`) of the model the caller will
    load the weights into, as `expected_by` (e.g. the run's plans.json) says; a checkpoint of another model
    raises CheckpointError naming the first entry that differs. Descriptions of older checkpoints are read in
    the current form (usema.planning.schema.migrate_network_description).
    """
    path = Path(path)
    payload = read_checkpoint_file(path)
    if not isinstance(payload, dict) or "model_state" not in payload or "model" not in payload:
        raise CheckpointError(f"{path}: not a usema checkpoint (no 'model_state' and 'model' entries)")
    plans = payload.get("plans")
    # a checkpoint that holds no plans is read as one of the oldest
    plans_version = plans.get("version", 1) if isinstance(plans, dict) else 1
    payload["model"] = migrate_network_description(payload["model"], plans_version)
    if expected_model is not None:
        stored = payload["model"]
        for key, value in expected_model.items():
            if stored.get(key) != value:
                by = f" by {expected_by}" if expected_by is not None else ""
                raise CheckpointError(
                    f"{path}: checkpoint is for another model: {key}={stored.get(key)!r}, expected {value!r}{by}"
                )
    return payload


def read_checkpoint_file(path: str | Path) -> Any:
    """Whatever a torch file holds, read with ``weights_only=True``; CheckpointError naming the file when it
    is missing, damaged, or holds objects that would need code to run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only raises this for a refused object and for a damaged file alike: tell them apart
        if not _pickle_is_intact(path):
            raise CheckpointError(
                f"{path}: corrupt checkpoint (not a readable torch archive or pickle); train again or use a copy"
            ) from err
        raise CheckpointError(
            f"{path}: refused, the checkpoint holds objects that would need arbitrary code to load "
            f"({_refused_object(err)}); usema loads tensors, numbers, strings, lists and dicts only"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({err})") from err


def _refused_object(err: Exception) -> str:
    """What torch's weights_only unpickler refused, without the advice it gives beside it (to load with
    weights_only=False, i.e. to run the file's code: the one unsafe thing to do with an unknown file)."""
    text = str(err)
    named = re.search(r"GLOBAL [\w.]+", text)  # the class or function the file would import and call
    if named:
        return f"unsupported {named.group(0)}"
    reason = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\.?$)", text, re.S)
    return reason.group(1).strip() if reason else "an object outside those"


def _pickle_is_intact(path: Path) -> bool:
    """Whether the checkpoint's pickle is well formed, its opcodes parsed and none run: a torch zip archive's
    data.pkl (zipfile checks its CRC), else the first pickle of torch's legacy format, which opens with the
    PROTO opcode. A well-formed pickle that weights_only refused holds code to run; anything else is damage."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
                stream = io.BytesIO(archive.read(name))
        else:
            with open(path, "rb") as handle:
                stream = io.BytesIO(
                    handle.read(1 << 20)
                )  # the legacy format's first pickle is a short header
            if stream.getvalue()[:1] != pickle.PROTO:
                return False
        for _ in pickletools.genops(stream):
            pass
        return True
    except Exception:  # StopIteration, BadZipFile, ValueError...: whatever fails to parse is damage
        return False


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch, CUDA) as tensors and plain values (``weights_only`` safe)."""
    version, python_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by `capture_rng_state` (CUDA only when this machine has the same GPUs)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)

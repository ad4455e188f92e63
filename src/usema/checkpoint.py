"""A fold's checkpoint as one type, `Checkpoint`, and the names a run folder gives it.

Training writes RUN/fold_K/checkpoint_best.pt and checkpoint_latest.pt (`checkpoint_path`); resuming,
`usema predict` and the benchmarks read them. `Checkpoint` owns what such a file holds: its entries and their
types (the network as a `NetworkSpec`, the plan as `Plans`), writing it atomically (`write_checkpoint_file`),
reading it without executing pickled code (`read_checkpoint_file`: a damaged file and one holding code are told
apart), and reading a checkpoint of an older run in the current form: its network description through
usema.planning.schema's migration, keyed on the version of the plans it holds, its plans through `Plans`.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usema.errors import CheckpointError, UsemaError
from usema.models.spec import NetworkSpec
from usema.planning.plans import PLANS_NAME, Plans, is_plans_file
from usema.planning.schema import migrate_network_description
from usema.preprocessing.dataset import PREPROCESSED_DIR
from usema.utils.atomic import atomic_path, full_disk_errno

CHECKPOINT_NAMES = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt"}
_FOLD_DIR = re.compile(r"fold_(\d+)")
# How torch's archive writer reports a write that failed (versions differ; some lose the OSError's errno).
_WRITER_FAILURE = re.compile(r"inline_container|PytorchStreamWriter|iostream error|file write failed")


# ------------------------------------------------------------------------------------------------ the run folder
def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """RUN/fold_K: the folder of fold `fold`'s checkpoints, training log and validation cases."""
    return Path(run_dir) / f"fold_{fold}"


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best", fold: int = 0) -> Path:
    """RUN/fold_K/checkpoint_{best,latest}.pt, as training writes it; UsemaError for another `checkpoint`."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise UsemaError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(CHECKPOINT_NAMES)}")
    return fold_dir(run_dir, fold) / CHECKPOINT_NAMES[checkpoint]


def fold_dirs(run_dir: str | Path) -> dict[int, Path]:
    """RUN's fold folders (RUN/fold_K, trained or not), by fold, in order."""
    run_dir = Path(run_dir)
    found = {}
    for folder in run_dir.glob("fold_*") if run_dir.is_dir() else ():
        match = _FOLD_DIR.fullmatch(folder.name)
        if match and folder.is_dir():
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def trained_folds(run_dir: str | Path, checkpoint: str = "best") -> list[int]:
    """The folds of RUN whose folder holds the `checkpoint` ("best" or "latest"), in order."""
    return [fold for fold in fold_dirs(run_dir) if checkpoint_path(run_dir, checkpoint, fold).is_file()]


def is_run_folder(folder: str | Path) -> bool:
    """Whether `folder` is a run folder: its plans.json is a usema plan, or a fold_K in it holds a checkpoint
    (usema's .pt, or the .pth of an nnU-Net results folder)."""
    folder = Path(folder)
    return is_plans_file(folder / PLANS_NAME) or any(folder.glob("fold_*/checkpoint_*.pt*"))


def run_holding(folder: str | Path) -> Path | None:
    """The run folder that `folder` is, or whose fold folder (fold_K, nnU-Net's fold_all) or preprocessed
    cases' folder it is or lies in (links resolved); None otherwise. A folder of its own inside a run
    (RUN/predictions) holds none of the run's files, so it is not the run's."""
    folder = Path(folder).resolve()
    if is_run_folder(folder):
        return folder
    for inner in (folder, *folder.parents):
        if (_FOLD_DIR.fullmatch(inner.name) or inner.name in ("fold_all", PREPROCESSED_DIR)) and \
                is_run_folder(inner.parent):
            return inner.parent
    return None


# -------------------------------------------------------------------------------------------------- the payload
@dataclass(eq=False)  # tensors have no truth value: a checkpoint equals itself only
class Checkpoint:
    """What a checkpoint holds: the weights (`model_state`) of the network it describes (`network`, with the
    deep supervision it was trained with), the plan it was trained with, and the state training resumes from
    (optimiser, schedule, loss scaler, epoch and the part of an epoch cut short, best validation Dice, seconds
    trained, every process's RNG states, the cases it trained and validated on).

    Entries that older checkpoints lack are None (plans: the oldest runs stored none, and read RUN/plans.json;
    trained_seconds: training adds up the logged epochs instead) or empty (rng). `path` is the file it was
    read from (None for one not read from a file)."""

    model_state: dict[str, torch.Tensor]
    network: NetworkSpec
    plans: Plans | None = None
    fold: int | None = None
    epoch: int | None = None
    partial_epoch: dict[str, float] | None = None
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    best_dice: float = -1.0
    best_epoch: int = 0
    trained_seconds: float | None = None
    seed: int | None = None
    world_size: int | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)
    train_cases: list[str] | None = None
    val_cases: list[str] | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def steps(self) -> int:
        """The optimizer steps trained (the schedule's step count); 0 without the schedule's state."""
        return int(self.scheduler_state["last_epoch"]) if self.scheduler_state else 0

    def to_payload(self) -> dict[str, Any]:
        """The dict the file holds: tensors, numbers, strings, lists and dicts only (``weights_only`` safe)."""
        return {
            "model_state": self.model_state,
            "model": self.network.to_dict(),
            "plans": self.plans.to_dict() if self.plans is not None else None,
            "fold": self.fold,
            "epoch": self.epoch,
            "partial_epoch": self.partial_epoch,
            "optimizer_state": self.optimizer_state,
            "scheduler_state": self.scheduler_state,
            "scaler_state": self.scaler_state,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "trained_seconds": self.trained_seconds,
            "seed": self.seed,
            "world_size": self.world_size,
            "rng": self.rng,
            "train_cases": self.train_cases,
            "val_cases": self.val_cases,
        }

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint to `path` atomically (`write_checkpoint_file`); returns the path."""
        return write_checkpoint_file(self.to_payload(), path)

    @classmethod
    def load(
        cls, path: str | Path, expected: NetworkSpec | None = None, expected_by: str | Path | None = None
    ) -> Checkpoint:
        """Read the checkpoint at `path` safely (``weights_only``: pickled code is refused, never run), in the
        current form whatever usema version wrote it (`from_payload`).

        `expected`, if given, is the network the caller will load the weights into, as `expected_by` (e.g. the
        run's plans.json) says; a checkpoint of another network raises CheckpointError naming the first entry
        that differs (deep supervision only where `expected` names it)."""
        path = Path(path)
        return cls.from_payload(read_checkpoint_file(path), path, expected, expected_by)

    @classmethod
    def from_payload(
        cls,
        payload: Any,
        path: str | Path,
        expected: NetworkSpec | None = None,
        expected_by: str | Path | None = None,
    ) -> Checkpoint:
        """The checkpoint that the file at `path` holds as `payload` (see `load`), its network description
        migrated with the version of its plans; CheckpointError naming the file when it is no usema checkpoint
        or a malformed one."""
        path = Path(path)
        if not isinstance(payload, dict) or "model_state" not in payload or "model" not in payload:
            raise CheckpointError(f"{path}: not a usema checkpoint (no 'model_state' and 'model' entries)")
        plans = payload.get("plans")
        # a checkpoint that holds no plans is read as one of the oldest
        plans_version = plans.get("version", 1) if isinstance(plans, dict) else 1
        try:
            network = NetworkSpec.from_dict(migrate_network_description(payload["model"], plans_version))
        except UsemaError as err:
            raise CheckpointError(f"{path}: {err}") from err
        if expected is not None:
            difference = expected.difference_from(network)
            if difference:
                by = f" by {expected_by}" if expected_by is not None else ""
                raise CheckpointError(f"{path}: checkpoint is for another model: {difference}{by}")
        trained_with = Plans(plans, path) if plans else None  # DataError naming the file and the plans key
        try:
            return cls(
                model_state=payload["model_state"],
                network=network,
                plans=trained_with,
                fold=_optional(int, payload.get("fold")),
                epoch=_optional(int, payload.get("epoch")),
                partial_epoch=payload.get("partial_epoch"),
                optimizer_state=payload.get("optimizer_state"),
                scheduler_state=payload.get("scheduler_state"),
                scaler_state=payload.get("scaler_state"),
                best_dice=float(payload.get("best_dice", -1.0)),
                best_epoch=int(payload.get("best_epoch", 0)),
                trained_seconds=_optional(float, payload.get("trained_seconds")),
                seed=_optional(int, payload.get("seed")),
                world_size=_optional(int, payload.get("world_size")),
                rng=list(payload.get("rng") or []),
                train_cases=payload.get("train_cases"),
                val_cases=payload.get("val_cases"),
                path=path,
            )
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: malformed checkpoint ({err})") from err


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


# --------------------------------------------------------------------------------------------------------- files
def write_checkpoint_file(payload: dict[str, Any], path: str | Path) -> Path:
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


# ---------------------------------------------------------------------------------------------------- RNG states
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

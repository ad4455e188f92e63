"""Which folds of a run predict: one named fold, a list of them, or every trained fold ("all")."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from usema.checkpoint import CHECKPOINT_NAMES, checkpoint_path, fold_dir, is_run_folder, trained_folds
from usema.errors import CheckpointError, UsemaError


def run_folder(run_dir: object) -> Path:
    """`run_dir` as a Path; UsemaError when it is no path (e.g. None), names no existing folder, or names a
    folder that is no run (a dataset given where its run was meant, say)."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise UsemaError(f"the run folder must be a path (a str or Path), got {run_dir!r}")
    path = Path(run_dir)
    if not path.is_dir():
        what = "is a file, not a run folder" if path.exists() else "run folder not found"
        raise UsemaError(f"{path}: {what} (a run folder holds plans.json and fold_K/ checkpoints)")
    if not is_run_folder(path):
        raise UsemaError(f"{path}: not a run folder, it holds no plans.json and no fold_K/ checkpoints (plan and "
                         "train one first: usema plan DATA -o RUN, usema train DATA -o RUN)")
    return path


def resolve_folds(
    run_dir: str | Path,
    checkpoint: str = "best",
    fold: int | str | None = None,
    folds: int | str | Sequence[int | str] | None = None,
) -> list[int]:
    """The folds to predict with: `fold` (one), `folds` (a list, or "all": every fold holding the checkpoint),
    or every trained fold when neither is given. A fold without the checkpoint raises CheckpointError naming
    its folder and the folds this run has."""
    if fold is not None and folds is not None:
        raise UsemaError("give a fold or a list of folds, not both")
    if fold == "all":  # nnU-Net's fold_all: a usema run trains numbered folds only
        raise UsemaError(f"{run_dir}: fold 'all' is nnU-Net's fold_all (trained on every case), which usema runs do "
                         "not have; --folds all ensembles every trained fold")
    available = trained_folds(run_dir, checkpoint)
    name = CHECKPOINT_NAMES.get(checkpoint) or checkpoint_path(run_dir, checkpoint).name
    has = f"this run has {_listed(available)}" if available else "train a fold first (usema train)"
    if fold is not None:
        folds = [fold]
    if folds is None or folds == "all" or (not isinstance(folds, (str, int)) and list(folds) == ["all"]):
        if not available:
            raise CheckpointError(f"{run_dir}: no fold holds {name}; {has}")
        return available
    wanted = [folds] if isinstance(folds, (int, str)) else list(folds)
    try:
        numbers = sorted({int(k) for k in wanted})
    except (TypeError, ValueError) as err:
        raise UsemaError(f"folds must be fold numbers or 'all', got {wanted}") from err
    if not numbers:
        raise UsemaError("no fold given to predict with")
    for number in numbers:
        if number not in available:
            folder = fold_dir(run_dir, number)
            others = sorted(p.name for p in folder.glob("checkpoint_*.pt"))
            if others:  # trained, but without this checkpoint (e.g. latest asked for, best copied alone)
                raise CheckpointError(
                    f"{folder / name}: checkpoint not found; {folder.name} holds {', '.join(others)}"
                )
            raise CheckpointError(f"{folder}: fold {number} was never trained (no {name}); {has}")
    return numbers


def _listed(folds: list[int]) -> str:
    return ("fold " if len(folds) == 1 else "folds ") + ", ".join(map(str, folds))

"""OUT/usema_predict.json: what made the predictions of an output folder (the run, each checkpoint's content,
mirroring, step size, precision and the extra outputs) and which predictions were finished with those settings,
so that `usema predict --resume` continues an interrupted prediction only with the same settings and keeps only
predictions those settings made (a case is listed once all its files are written)."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from usema import __version__
from usema.errors import DataError
from usema.utils.atomic import atomic_write_text
from usema.utils.provenance import command_line
from usema.utils.text import counted

RECORD_NAME = "usema_predict.json"
# The keys that decide what a prediction is; the others (run folder, command, version) are there for the reader:
# the checkpoints are named by their content, so a run folder moved elsewhere still continues its predictions.
DECIDING_KEYS = ("checkpoints", "tta", "step_size", "precision", "save_probabilities", "overlay")
# The options of `usema predict` that set the deciding keys, named in a refusal.
DECIDING_OPTIONS = (
    "--fold/--folds, --checkpoint, --disable-tta, --step-size, --precision and --device, --save-probabilities, "
    "--overlay"
)
# The key listing the segmentation files (names in OUT) whose case was finished with the record's settings.
PREDICTED_KEY = "predicted"
# The key listing every file usema has written or begun to write in OUT (segmentations, probabilities, the
# folder's dataset.json and plans.json, overlays: names relative to OUT), whatever the settings: --overwrite and
# --resume replace only these, never a file usema did not write (a reference label beside them).
WRITTEN_KEY = "written"
# Set by records that list every file usema wrote; an older record lists only segmentations, and the files usema
# wrote beside them (probabilities, overlays, the folder's files) are recognised by their names.
EVERY_FILE_KEY = "written_lists_every_file"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prediction_settings(
    run_dir: str | Path,
    checkpoints: list[Path],
    tta: bool,
    step_size: float,
    precision: str,
    save_probabilities: bool,
    overlay: bool,
) -> dict[str, Any]:
    """The record of one prediction's settings; a checkpoint is named by its content (sha256), so that a fold
    trained again, or a run folder copied elsewhere, is told apart or recognised."""
    return {
        "run": str(Path(run_dir).resolve()),
        "checkpoints": {f"{path.parent.name}/{path.name}": _sha256(path) for path in checkpoints},
        "tta": bool(tta),
        "step_size": float(step_size),
        "precision": precision,
        "save_probabilities": bool(save_probabilities),
        "overlay": bool(overlay),
        "command": command_line(),
        "usema_version": __version__,
    }


def read_record(output: Path) -> dict[str, Any] | None:
    """OUT/usema_predict.json, or None where OUT holds none; DataError naming it when it is not a record."""
    path = Path(output) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            path, f"cannot read the record of the earlier prediction ({exc}); remove it, or --overwrite"
        ) from exc
    if not isinstance(record, dict) or any(key not in record for key in DECIDING_KEYS):
        raise DataError(
            path,
            f"not a record of usema predict (it needs the keys {', '.join(DECIDING_KEYS)}); remove it, or "
            "--overwrite",
        )
    return record


def recorded_predictions(output: Path) -> list[str]:
    """The segmentation files OUT's record lists as finished, under the names they were written with ([] where
    OUT holds no record); the record's settings are checked by `check_same_settings`."""
    record = read_record(output)
    return [] if record is None else [str(name) for name in record.get(PREDICTED_KEY, [])]


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The deciding settings in which `now` differs from `earlier`, each as 'KEY EARLIER -> NOW'."""
    changed = []
    for key in DECIDING_KEYS:
        if earlier.get(key) != now[key]:
            if key == "checkpoints":
                changed.append(f"checkpoints {sorted(earlier.get(key) or {})} -> {sorted(now[key])} (or their "
                               "content: a fold trained again)")
            else:
                changed.append(f"{key} {earlier.get(key)!r} -> {now[key]!r}")
    return changed


def check_same_settings(
    output: Path, settings: dict[str, Any], resume: bool, predictions_there: bool
) -> list[str]:
    """Refuse to `resume` the predictions in `output` with other settings than those its record names, or where
    predictions are there without a record (made by another tool or an older usema: nothing tells what made
    them). Predictions of other cases added with other settings are allowed, as nnU-Net allows them, with a
    warning: the folder then holds two models' predictions, which an evaluation would score as one.
    Returns the segmentation files the record lists as finished with these same settings ([] otherwise)."""
    record = read_record(output)
    path = Path(output) / RECORD_NAME
    if record is None:
        if resume and predictions_there:
            raise DataError(
                path,
                "not found, so nothing tells what made the predictions already there; --resume continues only a "
                "usema prediction; --overwrite predicts every case again",
            )
        return []
    changed = "; ".join(differences(record, settings))
    if changed and resume:
        raise DataError(
            path,
            f"the predictions there were made with other settings: {changed}. --resume continues only with the "
            f"same settings ({DECIDING_OPTIONS} as before); choose another output folder, or --overwrite to "
            "predict every case again",
        )
    if changed:
        warnings.warn(
            f"{output} holds predictions made with other settings ({changed}); the new ones are added beside "
            f"them and {RECORD_NAME} now describes these",
            stacklevel=3,
        )
        return []
    return [str(name) for name in record.get(PREDICTED_KEY, [])]


def split_cases(
    output: Path,
    settings: dict[str, Any],
    outputs_of_case: dict[str, list[Path]],
    resume: bool,
    overwrite: bool,
    planned: Sequence[Path] | None = None,
) -> tuple[list[str], list[str]]:
    """Check OUT's record against `settings` (`check_same_settings`; not with `overwrite`) and split the cases,
    each named by its segmentation file (`outputs_of_case`: name -> every file the case writes), into (the
    names to predict, the names of earlier predictions the record goes on listing). With `resume` a case is
    kept where the record lists it as finished with these settings and all its files are there; predictions
    the record does not list (another model's, or a case cut off while its files were written) are made again.
    With `overwrite` or `resume`, a file usema did not write among `planned` (every file the prediction may
    write; default: those of `outputs_of_case`) is refused (`check_replaces_only_predictions`)."""
    predictions_there = any(path.exists() for paths in outputs_of_case.values() for path in paths)
    listed = [] if overwrite else check_same_settings(output, settings, resume, predictions_there)
    if overwrite or resume:
        every_file = [path for paths in outputs_of_case.values() for path in paths]
        check_replaces_only_predictions(output, every_file if planned is None else planned)
    kept = {
        name for name, paths in outputs_of_case.items()
        if resume and name in listed and all(path.is_file() for path in paths)
    }
    todo = [name for name in outputs_of_case if name not in kept]
    if kept:
        print(f"resume: {len(kept)} of {counted(len(outputs_of_case), 'case')} already predicted in {output}, kept",
              file=sys.stderr)
    return todo, [name for name in listed if name not in set(todo)]


def name_in(output: Path, path: Path) -> str:
    """How the record names `path`, a file usema writes in OUT: its path relative to OUT ('case.nii.gz',
    'overlays/case.png')."""
    return Path(path).relative_to(output).as_posix()


def written_by_usema(output: Path) -> list[str]:
    """The files of OUT that usema wrote or began to write, as its record lists them (`name_in`; [] where OUT
    holds no readable record; a record of an older usema lists only its finished predictions)."""
    try:
        record = read_record(output)
    except DataError:
        return []
    if record is None:
        return []
    names = [str(name) for name in record.get(WRITTEN_KEY, record.get(PREDICTED_KEY, []))]
    return names if record.get(EVERY_FILE_KEY) else names + _written_beside(output, names)


def _written_beside(output: Path, segmentations: list[str]) -> list[str]:
    """What usema (or nnU-Net's predictor, for a results folder) wrote beside the listed segmentations before
    its record listed every file, where it is there: each case's probabilities and overlay, and the folder's
    files (names that are not there are not claimed, so a newer record does not list them)."""
    from usema.data.io import suffix_of
    from usema.inference.predict_files import OVERLAY_DIR
    from usema.inference.probabilities import FOLDER_FILES, NNUNET_PREDICTION_ARGS

    beside = [*FOLDER_FILES, NNUNET_PREDICTION_ARGS]
    for name in segmentations:
        case = name[: len(name) - len(suffix_of(name))]
        if case and case != name:
            beside += [f"{case}.npz", f"{case}.pkl", f"{OVERLAY_DIR}/{case}.png"]
    return [name for name in beside if (Path(output) / name).exists()]


def check_replaces_only_predictions(output: Path, planned: Iterable[Path]) -> None:
    """Refuse to replace any of the `planned` files of OUT that usema did not write there: an --overwrite or
    --resume into a folder that also holds reference labels, another tool's probabilities or a run's plans.json
    must not replace them."""
    ours = set(written_by_usema(output))
    foreign = list(dict.fromkeys(path for path in planned if path.exists() and name_in(output, path) not in ours))
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DataError(
            foreign[0],
            f"exists{more}, and {RECORD_NAME} there does not list it as written by usema predict; --overwrite and "
            "--resume replace only usema's own predictions: move it away, or choose another output folder",
        )


def write_record(output: Path, settings: dict[str, Any], predicted: list[str], writing: list[str] = ()) -> Path:
    """Write OUT/usema_predict.json atomically: `settings`, the `predicted` segmentation files, and every file
    usema wrote there (the earlier record's, the predicted ones and those `writing` now, by `name_in`, listed
    before their first byte, so that a kill at any point leaves them replaceable)."""
    written = dict.fromkeys([*written_by_usema(output), *predicted, *writing])
    record = {**settings, PREDICTED_KEY: list(predicted), WRITTEN_KEY: list(written), EVERY_FILE_KEY: True}
    return atomic_write_text(Path(output) / RECORD_NAME, json.dumps(record, indent=1) + "\n")


def remove_if_alone(output: Path) -> None:
    """Remove OUT's record where it is the only file there: a prediction that failed before its first file
    leaves no folder behind (see `usema.utils.atomic.removed_if_left_empty`)."""
    output = Path(output)
    if output.is_dir() and [path.name for path in output.iterdir()] == [RECORD_NAME]:
        (output / RECORD_NAME).unlink()

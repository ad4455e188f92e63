"""`usema evaluate`: score a folder (or file) of predicted segmentations against the reference, case by case.

Cases are matched by file stem (".nii.gz" aware). Every reference case must have a prediction: a missing one
is an error, never a silent skip, because skipping it would inflate the scores; `chill` (nnU-Net's --chill)
scores the predicted cases only, with a warning. Predictions without a reference are ignored with a warning (a
prediction folder may hold test cases or overlays), and so are predicted label values that the reference does
not declare. Predictions and references that share no label value at all (0/1 masks against 0/255 masks) are
not scored: every Dice would be 0 whatever the predictions are worth, so the evaluation stops and says what
each holds. Given the run that predicted them, the plan's label values are the classes.

Voxels whose reference holds nnU-Net's ignore label (the `ignore_label` argument, else the "ignore" label of
the dataset.json beside or above the reference folder) are left out of every class's score, as nnU-Net does:
they count as neither prediction nor reference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usema.data.datasets import dataset_holding, is_within
from usema.data.io import SUPPORTED_SUFFIXES, label_values, read_label, strip_suffix, suffix_of
from usema.data.layouts import dataset_ignore_value
from usema.errors import DataError, UsemaError
from usema.evaluation.instance_matching import IOU_THRESHOLD, instance_scores
from usema.evaluation.metrics import METRIC_NAMES, binary_scores, default_tolerance
from usema.evaluation.report import (
    PER_CASE_NAME,
    SUMMARY_NAME,
    format_table,
    summarise,
    write_per_case_csv,
    write_summary_json,
)
from usema.planning.plans import Plans
from usema.utils.text import counted, listed

INSTANCE_METRICS = ("f1", "precision", "recall", "tp", "fp", "fn")
# More classes than this in a "semantic" reference usually means instance ids were given without --instance.
MANY_CLASSES = 50
# The missing cases a strict evaluation names in its error.
MISSING_LISTED = 20
# The predictions without a reference named beside them: a few show a naming difference (CASE0 for case0).
UNMATCHED_LISTED = 5


def _is_label_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and bool(suffix_of(path))


def _files_by_case(folder: Path) -> dict[str, Path]:
    """The segmentation files of a folder keyed by case id; two files for one case is an error."""
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _is_label_file(path):
            continue
        case = strip_suffix(path.name)
        if case in cases:
            raise DataError(path, f"a second file for case '{case}' (also {cases[case].name}); keep one")
        cases[case] = path
    return cases


def pair_cases(pred: Path, gt: Path, chill: bool = False) -> list[tuple[str, Path, Path]]:
    """(case id, prediction file, reference file) for every reference case, in case order.

    `pred` and `gt` are both folders or both files. A reference case without a prediction raises DataError
    that lists the missing cases and the first predictions without a reference (the cause is often their
    naming); with `chill` it is left out with a warning (at least one case must be predicted).
    """
    if not gt.exists():
        raise DataError(gt, "reference not found")
    if not pred.exists():
        raise DataError(pred, "predictions not found")
    if gt.is_file() != pred.is_file():
        raise DataError(
            pred,
            f"give two folders or two files (reference {gt} is {'a file' if gt.is_file() else 'a folder'})",
        )
    if gt.is_file():
        return [(strip_suffix(gt.name), pred, gt)]

    references = _files_by_case(gt)
    if not references:
        raise DataError(gt, f"no segmentation files ({', '.join(SUPPORTED_SUFFIXES)}) in this folder")
    predictions = _files_by_case(pred)
    missing = [case for case in references if case not in predictions]
    unscored = sorted(set(predictions) - set(references))
    if missing and (not chill or len(missing) == len(references)):
        others = missing[1:MISSING_LISTED]
        more = f", nor for {len(missing) - 1} more: {', '.join(others)}" if others else ""
        more += f" and {len(missing) - MISSING_LISTED} others" if len(missing) > MISSING_LISTED else ""
        if not predictions:
            more += f"; {pred} holds no segmentation files ({', '.join(SUPPORTED_SUFFIXES)})"
        elif unscored:
            more += f"; predictions without a reference: {_unmatched(unscored, predictions, missing)}"
        raise DataError(
            references[missing[0]],
            f"no prediction for case '{missing[0]}' in {pred}{more}"
            + ("" if chill else "; --chill scores the predicted cases only"),
        )
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(references)} reference cases have no prediction in {pred} and are not scored "
            f"(chill), e.g. {missing[0]}",
            stacklevel=3,
        )
    if unscored:
        warnings.warn(
            f"{counted(len(unscored), 'prediction')} in {pred} {'has' if len(unscored) == 1 else 'have'} no "
            f"reference in {gt} and {'is' if len(unscored) == 1 else 'are'} not scored: "
            f"{_unmatched(unscored, predictions, missing)}",
            stacklevel=3,
        )
    return [(case, predictions[case], path) for case, path in references.items() if case in predictions]


def _unmatched(unscored: Sequence[str], predictions: Mapping[str, Path], missing: Sequence[str]) -> str:
    """The first few prediction files without a reference, each with the missing reference case it differs
    from only in letter case, where there is one."""
    missing_of = {case.lower(): case for case in missing}
    named = []
    for case in unscored[:UNMATCHED_LISTED]:
        near = missing_of.get(case.lower())
        hint = f" (reference '{near}' differs only in letter case)" if near else ""
        named.append(f"{predictions[case].name}{hint}")
    more = f" and {len(unscored) - UNMATCHED_LISTED} others" if len(unscored) > UNMATCHED_LISTED else ""
    return ", ".join(named) + more


def default_output_dir(pred: Path, gt: Path) -> Path:
    """PRED_evaluation beside the prediction folder PRED (CASE_evaluation beside a prediction file), beside the
    reference folder instead when that would fall inside it: named after its predictions, so that the results
    of two prediction folders in one parent never overwrite each other."""
    pred = pred.resolve()
    name = f"{pred.name if pred.is_dir() else strip_suffix(pred.name)}_evaluation"
    candidate = pred.parent / name
    # The predictions live inside the reference folder: put the results beside the reference folder.
    gt_folder = _reference_folder(gt)
    if gt_folder is not None and is_within(candidate, gt_folder):
        return gt_folder.resolve().parent / name
    return candidate


def _reference_folder(gt: Path) -> Path | None:
    """The folder of references that scores stay out of: GT itself, or a reference file's folder where that is
    a dataset's labels folder; None for a reference file elsewhere (it bounds no folder)."""
    if gt.is_dir():
        return gt
    return gt.parent if dataset_holding(gt.parent) is not None else None


def check_output_folder(output: Path, pred: Path, gt: Path) -> None:
    """Refuse an output folder that is, or lies inside, the reference folder (`_reference_folder`) or the
    prediction folder: scores are never written among the labels, nor among the predictions they score. Of two
    files given, only their own names are kept from the outputs (the caller's check). The message names the
    default (`default_output_dir`), which is outside both."""
    folders = [("reference", _reference_folder(gt)), ("prediction", pred if pred.is_dir() else None)]
    for what, folder in folders:
        if folder is not None and is_within(output, folder):
            raise DataError(
                output,
                f"is the {what} folder {folder} or inside it; evaluate writes its scores outside the folders it "
                f"scores: leave out -o for the default {default_output_dir(pred, gt)}, or choose another folder",
            )


def _class_names(labels: Mapping[Any, str]) -> dict[int, str]:
    """{class id: name} of the foreground classes of a label table (keys may be strings, as in plans.json)."""
    try:
        names = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError) as err:
        raise UsemaError(f"label ids must be integers, got {list(labels)}") from err
    return dict(sorted((k, v) for k, v in names.items() if k > 0))


def _values_found(pairs: Sequence[tuple[str, Path, Path]]) -> tuple[dict[int, str], set[int]]:
    """The label values of the predictions (each with the first case holding it) and of the references."""
    predicted: dict[int, str] = {}
    referenced: set[int] = set()
    for case, pred_path, gt_path in pairs:
        for value in label_values(read_label(pred_path)[0]).tolist():
            predicted.setdefault(value, case)
        referenced.update(label_values(read_label(gt_path)[0]).tolist())
    return predicted, referenced


def _classes_and_checks(
    pred: Path,
    gt: Path,
    pairs: Sequence[tuple[str, Path, Path]],
    labels: Mapping[Any, str] | None,
    ignore_label: int | None,
    named_by: str,
) -> dict[int, str]:
    """The classes to score ({label value: name}: `labels`, else the foreground values of the references),
    after checking that predictions, references and classes share their values. Where they share none (masks
    of 0/1 against masks of 0/255, say) every Dice would be 0, which says nothing about the predictions: that
    stops the evaluation with what was found; predicted values outside the classes are warned about."""
    predicted, referenced = _values_found(pairs)
    predicted_fg = sorted(set(predicted) - {0, ignore_label})
    referenced_fg = sorted(referenced - {0, ignore_label})
    if labels is None:
        classes = {v: str(v) for v in referenced_fg}
        if len(classes) > MANY_CLASSES:
            warnings.warn(
                f"the reference holds {len(classes)} label values: if these are instance ids, use instance=True",
                stacklevel=4,
            )
    else:
        classes = {k: v for k, v in _class_names(labels).items() if k != ignore_label}
        if referenced_fg and not set(referenced_fg) & set(classes):
            raise UsemaError(
                f"the references in {gt} hold label values {listed(referenced_fg)} and the classes of "
                f"{named_by} have the values {listed(sorted(classes))}: no value in common, so every Dice "
                "would be 0. Score references in the label values of the dataset the classes are from"
            )
    if predicted_fg and referenced_fg and not set(predicted_fg) & set(classes):
        raise UsemaError(
            f"the predictions in {pred} hold label values {listed(predicted_fg)} and the references in {gt} "
            f"hold {listed(referenced_fg)}: no value in common, so every Dice would be 0. Score usema "
            "predictions with their run (--run RUN), whose plan maps its classes to the dataset's label values; "
            "other predictions in the references' values"
        )
    undeclared = [v for v in predicted_fg if v not in classes]
    if undeclared:
        warnings.warn(
            f"predictions hold label values {listed(undeclared)} that the reference labels "
            f"{listed(sorted(classes))} do not declare (e.g. case {predicted[undeclared[0]]}); they are not scored",
            stacklevel=4,
        )
    return classes


def resolve_tolerances(
    tolerance_mm: float | Sequence[float] | None, classes: Sequence[int], spatial_dims: int
) -> dict[int, float]:
    """NSD tolerance per class: the default for the dimensionality, one value for all, or one per class."""
    if tolerance_mm is None:
        values = [default_tolerance(spatial_dims)]
    elif isinstance(tolerance_mm, int | float):
        values = [float(tolerance_mm)]
    else:
        values = [float(t) for t in tolerance_mm]
    if len(values) == 1:
        values = values * len(classes)
    if len(values) != len(classes):
        raise UsemaError(
            f"{len(values)} NSD tolerances given for {counted(len(classes), 'class')} {list(classes)}: give one "
            "or one per class"
        )
    if any(not math.isfinite(t) or t < 0 for t in values):
        raise UsemaError(f"NSD tolerances must be finite and >= 0 mm, got {values}")
    return dict(zip(classes, values, strict=True))


def _read_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Prediction and reference arrays of one case and the reference spacing; shapes must agree."""
    gt, gt_geometry = read_label(gt_path)
    pred, pred_geometry = read_label(pred_path)
    if pred.shape != gt.shape:
        raise DataError(
            pred_path, f"shape {pred.shape} differs from the reference {gt_path} shape {gt.shape}"
        )
    difference = pred_geometry.agrees_with(gt_geometry)
    if difference:
        # Same voxel grid size but another spacing or position: score it, but say so; distances use the reference's.
        warnings.warn(f"{pred_path}: {difference} (the reference {gt_path.name})", stacklevel=3)
    return pred, gt, gt_geometry.spacing


def evaluate(
    pred: str | Path,
    gt: str | Path,
    output: str | Path | None = None,
    tolerance_mm: float | Sequence[float] | None = None,
    instance: bool = False,
    labels: Mapping[Any, str] | None = None,
    chill: bool = False,
    ignore_label: int | None = None,
    run: str | Path | Plans | None = None,
) -> dict[str, Any]:
    """Score predictions against references; write OUTPUT/per_case.csv and OUTPUT/summary.json; return the
    summary.

    Per case and class: Dice, NSD (tolerance in mm: `tolerance_mm`, one value or one per class; default 1 mm
    in 3D, 2 px in 2D) and HD95 in mm. With `instance=True` the files hold instance ids: the foreground (label
    > 0) gets Dice/NSD/HD95 and the instances F1, precision and recall at IoU >= 0.5. Classes are `labels`
    ({label value: name}, e.g. dataset.json's), else those of `run` (a run folder, its plans.json or a Plans:
    the dataset's label values under the plan's class names, its ignore label, instance scoring for instance
    labels), else the label values > 0 seen in the references. Predictions and references that share no label
    value stop with a UsemaError saying what each holds; predicted values outside the classes are warned
    about. Output defaults to PRED_evaluation beside PRED (`default_output_dir`); an output inside the reference
    or prediction folder is refused (`check_output_folder`). `chill` scores the
    predicted cases only, where every reference case needs a prediction otherwise. Reference voxels of
    `ignore_label` (default: the plan's, else the dataset's "ignore" label, see the module docstring) are
    scored nowhere.
    """
    pred, gt = Path(pred), Path(gt)
    named_by = "the labels given"
    if run is not None:
        plans = run if isinstance(run, Plans) else Plans.load(run)
        info, named_by = plans.dataset, str(plans.source)
        instance = instance or info.label_values is None
        labels = labels if labels is not None or instance else info.value_names()
        ignore_label = ignore_label if ignore_label is not None else info.ignore_value
    if ignore_label is None:
        ignore_label = dataset_ignore_value(gt if gt.is_dir() else gt.parent)
    pairs = pair_cases(pred, gt, chill)
    output = Path(output) if output is not None else default_output_dir(pred, gt)
    inputs = {p.resolve() for _, pred_path, gt_path in pairs for p in (pred_path, gt_path)}
    for name in (PER_CASE_NAME, SUMMARY_NAME):
        if (output / name).resolve() in inputs:
            raise DataError(output / name, "is an input of this evaluation; choose another output folder")
    check_output_folder(output, pred, gt)

    if instance:
        class_names = {1: "foreground"}
    else:
        class_names = _classes_and_checks(pred, gt, pairs, labels, ignore_label, named_by)
    if not class_names:
        raise DataError(
            gt, "no foreground class to score (all references are empty and no labels were given)"
        )
    metrics = METRIC_NAMES + (INSTANCE_METRICS if instance else ())

    rows: list[dict[str, Any]] = []
    tolerances: dict[int, float] | None = None
    spatial_dims: int | None = None
    for case, pred_path, gt_path in pairs:
        prediction, reference, spacing = _read_pair(pred_path, gt_path)
        if spatial_dims is None:
            spatial_dims = reference.ndim
            tolerances = resolve_tolerances(tolerance_mm, list(class_names), spatial_dims)
        elif reference.ndim != spatial_dims:
            raise DataError(gt_path, f"{reference.ndim}D, but the first reference is {spatial_dims}D")
        assert tolerances is not None
        if instance:
            scores = binary_scores(prediction > 0, reference > 0, spacing, tolerances[1])
            scores.update(instance_scores(prediction, reference))
            rows.append({"case": case, "class": 1, "name": "foreground", **scores})
            continue
        scored = reference != ignore_label if ignore_label is not None else True
        for label, name in class_names.items():
            predicted = (prediction == label) & scored
            scores = binary_scores(predicted, reference == label, spacing, tolerances[label])
            rows.append({"case": case, "class": label, "name": name, **scores})

    assert tolerances is not None
    details: dict[str, Any] = {
        "pred": str(pred),
        "gt": str(gt),
        "mode": "instance" if instance else "semantic",
        "spatial_dims": spatial_dims,
        "tolerance_mm": {str(c): t for c, t in tolerances.items()},
        "empty_masks": "absent in both: dice 1, nsd 1, hd95 0; absent in one: dice 0, nsd 0, hd95 = image diagonal (mm)",
    }
    if ignore_label is not None:
        details["ignore_label"] = ignore_label
    summary = summarise(rows, metrics, class_names, **details)
    if instance:
        tp, fp, fn = (summary["classes"]["1"][k]["total"] for k in ("tp", "fp", "fn"))
        summary["instance"] = {
            "iou_threshold": IOU_THRESHOLD,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            # F1 of all instances pooled over cases: large images weigh more than in the per-case mean.
            "f1_pooled": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        }
    write_per_case_csv(rows, output / PER_CASE_NAME)
    write_summary_json(summary, output / SUMMARY_NAME)
    print(format_table(summary, metrics[:3] + (("f1",) if instance else ())))
    tolerance = ", ".join(f"{t:g}" for t in dict.fromkeys(tolerances.values()))
    print(f"hd95 and the nsd tolerance ({tolerance}) in the images' spacing units: mm, or pixels for "
          "PNG/JPEG/TIFF/BMP")
    print(f"{counted(summary['num_cases'], 'case')}; wrote {output / PER_CASE_NAME} and {output / SUMMARY_NAME}")
    return summary

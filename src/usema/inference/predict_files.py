"""`usema predict`: segment image files and folders with a trained run (one fold or an ensemble of folds),
writing each prediction in its input's format and geometry."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from usema.data.writing import segmentation_paths, write_segmentation
from usema.errors import UsemaError
from usema.inference.inputs import InferenceCase, check_cases, check_output_location, collect_cases
from usema.inference.overlay import write_overlay
from usema.inference.prediction_record import (
    name_in,
    prediction_settings,
    recorded_predictions,
    remove_if_alone,
    split_cases,
    write_record,
)
from usema.inference.predictor import DEFAULT_STEP_SIZE, Predictor, load_predictor
from usema.inference.probabilities import (
    folder_paths,
    probability_paths,
    write_folder_files,
    write_probabilities,
)
from usema.utils.atomic import removed_if_left_empty
from usema.utils.device import precision_name
from usema.utils.progress import progress
from usema.utils.text import counted

OVERLAY_DIR = "overlays"


def overlay_path(output: Path, case: InferenceCase) -> Path:
    """Where the overlay PNG of `case` goes: OUT/overlays/<case id>.png."""
    return Path(output) / OVERLAY_DIR / f"{case.case_id}.png"


def describe(checkpoints: Sequence[Path], tta: bool, step_size: float, device: object, precision: str) -> str:
    """What predicts, in one line: the folds and checkpoint, mirroring, step size, device and precision."""
    folds = ", ".join(path.parent.name for path in checkpoints)
    ensemble = f"an ensemble of {len(checkpoints)} folds ({folds})" if len(checkpoints) > 1 else folds
    return (
        f"{ensemble}, {checkpoints[0].name}, {'mirroring TTA' if tta else 'no TTA'}, step size {step_size:g}, "
        f"{device} {precision}"
    )


def _predict_case(
    predictor: Predictor,
    case: InferenceCase,
    target: Path,
    output: Path,
    save_probabilities: bool,
    overlay: bool,
    with_folder_files: bool,
) -> Path:
    """Predict one case and write its segmentation to `target` (returned: write_segmentation may change its
    suffix), its probabilities and the folder's dataset.json and plans.json, and its overlay, as asked."""
    plans = predictor.plans
    image, geometry = predictor.read(case.images)
    probabilities = predictor.probabilities_on_input_grid(image, geometry)
    classes = probabilities.argmax(axis=0)
    segmentation = predictor.labels_of_classes(classes)
    target = write_segmentation(segmentation, geometry, target)
    if save_probabilities:
        write_probabilities(probabilities, geometry, case, plans, output)
        if with_folder_files:
            write_folder_files(output, plans, geometry, target.name[len(case.case_id) :])
    if overlay:
        # coloured by class, whatever value the files give it (0/255 masks: the first colour)
        shown = segmentation if plans.dataset.label_values is None else classes
        write_overlay(image, shown, geometry, overlay_path(output, case))
    return target


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    checkpoint: str | None = None,
    tta: bool = True,
    overlay: bool = False,
    device: str = "auto",
    fold: int | str | None = None,
    precision: str | None = None,
    overwrite: bool = False,
    folds: int | str | Sequence[int | str] | None = None,
    step_size: float = DEFAULT_STEP_SIZE,
    save_probabilities: bool = False,
    resume: bool = False,
) -> list[Path]:
    """Segment every image of `inputs` (files or folders) with the `checkpoint` ("best", the default, or
    "latest") of RUN's `fold`, of each of `folds` (a list, or "all"), or of every trained fold when neither is
    given; several folds predict as an ensemble, their softmax averaged (see `load_predictor`).

    Each prediction is written atomically to OUTPUT/<case id><input suffix> with the input's shape and
    geometry (JPEG inputs get PNG). `tta` averages the softmax over all mirrorings (on by default, as
    nnU-Net); `step_size` is the distance between sliding windows as a fraction of the patch;
    `save_probabilities` also writes OUTPUT/<case id>.npz and .pkl, and OUTPUT/dataset.json and plans.json, as
    nnU-Net does (see `usema.inference.probabilities`); `overlay` also writes OUTPUT/overlays/<case id>.png. `precision` (auto,
    fp32, bf16, fp16) replaces the training precision. The output folder may not be, or lie inside, an input
    folder, a dataset, or be a run folder or lie in one's fold or preprocessed folders (see
    `check_output_location`); files already there are replaced only with
    `overwrite` or `resume`, and only those the record lists as written by usema (every file is listed before
    its first byte).
    Every input is checked from its header before the first prediction (`check_cases`), so a bad file fails
    the run at once. OUTPUT/usema_predict.json records the settings (`usema.inference.prediction_record`):
    `resume` continues an interrupted prediction, keeping the cases whose outputs are all there and predicting
    the rest (only predictions the record lists as finished with the same settings are kept), and is refused
    where the earlier predictions were made with other settings. Without `resume` or
    `overwrite`, predictions of other cases may be added to a folder that holds some, as in nnU-Net; where the
    record there names other settings a warning says so, and the record then describes the new ones.
    Progress goes to stderr: a bar on a terminal, a line every twentieth of the cases elsewhere.
    RUN may also be an nnU-Net results folder of a USEMA model (`usema.integrations.nnunet.results`): there, as
    nnUNetv2_predict, checkpoint_final.pth ("latest") of the numbered folds predicts by default, and `fold`
    "all" is nnU-Net's fold_all (`results_checkpoints`).
    Returns the prediction paths in case order.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise UsemaError("nothing to predict: give at least one input file or folder")
    if resume and overwrite:
        raise UsemaError("resume keeps the predictions already there and overwrite replaces them: give one")
    output = Path(output)
    from usema.integrations.nnunet.results import is_results_folder, predict_results_folder

    if is_results_folder(run_dir):  # an nnU-Net results folder of a USEMA model: nnU-Net's predictor
        return predict_results_folder(run_dir, inputs, output, checkpoint=checkpoint, fold=fold, folds=folds, tta=tta,
                                      step_size=step_size, device=device, save_probabilities=save_probabilities,
                                      overwrite=overwrite, resume=resume)
    predictor = load_predictor(run_dir, checkpoint=checkpoint or "best", fold=fold, folds=folds, device=device,
                               precision=precision, tta=tta, step_size=step_size)
    plans = predictor.plans
    cases = collect_cases(inputs, plans)
    values = plans.dataset.label_values
    max_label = None if values is None else max(values)  # None: instance maps, counted only once predicted
    targets = [output / case.output_name for case in cases]
    if resume:  # a segmentation written under another name (a BMP's labels over 255 as PNG) is kept there
        recorded = set(recorded_predictions(output))
        targets = [
            next((path for path in segmentation_paths(target, max_label) if path.name in recorded), target)
            for target in targets
        ]
    outputs_of_case = [
        [targets[index]]
        + (list(probability_paths(output, case.case_id)) if save_probabilities else [])
        + ([overlay_path(output, case)] if overlay else [])
        for index, case in enumerate(cases)
    ]
    if save_probabilities:  # the first case predicted writes them, so a resume without them predicts it again
        outputs_of_case[0] += folder_paths(output)
    # every name a file may get, so that nothing there is replaced unasked
    planned = [name for paths in outputs_of_case for path in paths for name in segmentation_paths(path, max_label)]
    check_output_location(output, inputs, planned, overwrite or resume, plans.dataset.path)
    check_cases(cases, predictor.spatial_dims, plans.dataset.num_channels)
    settings = prediction_settings(run_dir, predictor.checkpoints, predictor.tta, predictor.step_size,
                                   precision_name(predictor.autocast_dtype), save_probabilities, overlay)
    names = [target.name for target in targets]
    todo_names, predicted = split_cases(output, settings, dict(zip(names, outputs_of_case)), resume, overwrite,
                                        planned)
    position = {name: index for index, name in enumerate(names)}
    todo = [position[name] for name in todo_names]
    if not todo:
        return targets

    what = describe(predictor.checkpoints, predictor.tta, predictor.step_size, predictor.device, settings["precision"])
    print(f"predicting {counted(len(todo), 'case')} with {what}", file=sys.stderr, flush=True)
    # the output folder is made by the first write; a run that fails before it leaves none behind
    with removed_if_left_empty(output):
        try:
            for number, index in enumerate(progress(todo, desc="predict", unit="case")):
                # every file of the case (the first case predicted: the folder's too) is listed before its first
                # byte, so that a run killed at any point can resume and replace it
                files = outputs_of_case[index] + (folder_paths(output) if save_probabilities and number == 0 else [])
                write_record(output, settings, predicted,
                             [name_in(output, name) for path in files for name in segmentation_paths(path, max_label)])
                targets[index] = _predict_case(predictor, cases[index], targets[index], output, save_probabilities,
                                               overlay, with_folder_files=number == 0)
                predicted.append(targets[index].name)  # every file of the case is written: a resume keeps it
                write_record(output, settings, predicted)
        except BaseException:
            remove_if_alone(output)  # a run that failed before its first file leaves no record behind
            raise
    return targets

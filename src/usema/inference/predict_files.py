"""`usema predict`: segment image files and folders with a trained run (one fold or an ensemble of folds),
writing each prediction in its input's format and geometry."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from usema.data.io import write_segmentation
from usema.errors import UsemaError
from usema.inference.inputs import InferenceCase, check_output_location, collect_cases
from usema.inference.overlay import write_overlay
from usema.inference.predictor import DEFAULT_STEP_SIZE, Predictor, load_predictor
from usema.inference.probabilities import (
    folder_paths,
    probability_paths,
    write_folder_files,
    write_probabilities,
)
from usema.utils.atomic import removed_if_left_empty
from usema.utils.progress import progress

OVERLAY_DIR = "overlays"


def overlay_path(output: Path, case: InferenceCase) -> Path:
    """Where the overlay PNG of `case` goes: OUT/overlays/<case id>.png."""
    return Path(output) / OVERLAY_DIR / f"{case.case_id}.png"


def describe(predictor: Predictor) -> str:
    """What predicts, in one line: the folds and checkpoint, mirroring, step size, device and precision."""
    folds = ", ".join(path.parent.name for path in predictor.checkpoints)
    several = len(predictor.models) > 1
    ensemble = f"an ensemble of {len(predictor.models)} folds ({folds})" if several else folds
    precision = str(predictor.autocast_dtype).replace("torch.", "") if predictor.autocast_dtype else "fp32"
    return (
        f"{ensemble}, {predictor.checkpoints[0].name}, "
        f"{'mirroring TTA' if predictor.tta else 'no TTA'}, step size {predictor.step_size:g}, "
        f"{predictor.device} {precision}"
    )


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    checkpoint: str = "best",
    tta: bool = True,
    overlay: bool = False,
    device: str = "auto",
    fold: int | None = None,
    precision: str | None = None,
    overwrite: bool = False,
    folds: int | str | Sequence[int | str] | None = None,
    step_size: float = DEFAULT_STEP_SIZE,
    save_probabilities: bool = False,
) -> list[Path]:
    """Segment every image of `inputs` (files or folders) with the `checkpoint` ("best" or "latest") of RUN's
    `fold`, of each of `folds` (a list, or "all"), or of every trained fold when neither is given; several
    folds predict as an ensemble, their softmax averaged (see `load_predictor`).

    Each prediction is written atomically to OUTPUT/<case id><input suffix> with the input's shape and
    geometry (JPEG inputs get PNG). `tta` averages the softmax over all mirrorings (on by default, as
    nnU-Net); `step_size` is the distance between sliding windows as a fraction of the patch;
    `save_probabilities` also writes OUTPUT/<case id>.npz and .pkl, and OUTPUT/dataset.json and plans.json, as
    nnU-Net does (see `usema.inference.probabilities`); `overlay` also writes OUTPUT/overlays/<case id>.png. `precision` (auto,
    fp32, bf16, fp16) replaces the training precision. The output folder may not be, or lie inside, an input
    folder or a dataset (see `check_output_location`); files already there are replaced only with `overwrite`.
    Progress goes to stderr: a bar on a terminal, a line every twentieth of the cases elsewhere.
    RUN may also be an nnU-Net results folder of a USEMA model (`usema.integrations.nnunet.results`).
    Returns the prediction paths in case order.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise UsemaError("nothing to predict: give at least one input file or folder")
    output = Path(output)
    from usema.integrations.nnunet.results import is_results_folder, predict_results_folder

    if is_results_folder(run_dir):  # an nnU-Net results folder of a USEMA model: nnU-Net's predictor
        return predict_results_folder(run_dir, inputs, output, checkpoint=checkpoint, fold=fold, folds=folds, tta=tta,
                                      step_size=step_size, device=device, save_probabilities=save_probabilities,
                                      overwrite=overwrite)
    predictor = load_predictor(run_dir, checkpoint=checkpoint, fold=fold, folds=folds, device=device,
                               precision=precision, tta=tta, step_size=step_size)
    plans = predictor.plans
    cases = collect_cases(inputs, plans)
    targets = [output / case.output_name for case in cases]
    extras = [path for case in cases for path in probability_paths(output, case.case_id)]
    extras = extras + folder_paths(output) if save_probabilities else []
    overlays = [overlay_path(output, case) for case in cases] if overlay else []
    check_output_location(output, inputs, targets + extras + overlays, overwrite, plans.dataset.path)

    print(f"predicting {len(cases)} case(s) with {describe(predictor)}", file=sys.stderr, flush=True)
    written: list[Path] = []
    # the output folder is made by the first write; a run that fails before it leaves none behind
    with removed_if_left_empty(output):
        for index, case in enumerate(progress(cases, desc="predict", unit="case")):
            image, geometry = predictor.read(case.images)
            probabilities = predictor.probabilities_on_input_grid(image, geometry)
            classes = probabilities.argmax(axis=0)
            segmentation = predictor.labels_of_classes(classes)
            written.append(write_segmentation(segmentation, geometry, targets[index]))
            if save_probabilities:
                write_probabilities(probabilities, geometry, case, plans, output)
                if index == 0:
                    ending = written[0].name[len(case.case_id) :]
                    write_folder_files(output, plans, geometry, ending)
            if overlay:
                # coloured by class, whatever value the files give it (0/255 masks: the first colour)
                shown = segmentation if plans.dataset.label_values is None else classes
                write_overlay(image, shown, geometry, overlays[index])
    return written

"""`usema predict`: segment image files and folders with a trained run, writing each prediction in its input's
format and geometry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from usema.data.channels import convert_channels
from usema.data.io import read_image, write_segmentation
from usema.errors import DataError, UsemaError
from usema.inference.inputs import InferenceCase, check_output_location, collect_cases
from usema.inference.overlay import write_overlay
from usema.inference.predictor import load_predictor
from usema.utils.atomic import removed_if_left_empty

OVERLAY_DIR = "overlays"


def overlay_path(output: Path, case: InferenceCase) -> Path:
    """Where the overlay PNG of `case` goes: OUT/overlays/<case id>.png."""
    return Path(output) / OVERLAY_DIR / f"{case.case_id}.png"


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    checkpoint: str = "best",
    tta: bool = False,
    overlay: bool = False,
    device: str = "auto",
    fold: int = 0,
    precision: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Segment every image of `inputs` (files or folders) with RUN/fold_K's `checkpoint` ("best" or "latest").

    Each prediction is written atomically to OUTPUT/<case id><input suffix> with the input's shape and geometry
    (JPEG inputs get PNG). `tta` averages the softmax over all mirrorings; `overlay` also writes
    OUTPUT/overlays/<case id>.png. `precision` (auto, fp32, bf16, fp16) replaces the training precision. The output
    folder may not be, or lie inside, an input folder or a dataset (see `check_output_location`); files already
    there are replaced only with `overwrite`.
    Returns the prediction paths in case order.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise UsemaError("nothing to predict: give at least one input file or folder")
    output = Path(output)
    predictor = load_predictor(run_dir, checkpoint=checkpoint, fold=fold, device=device, precision=precision)
    plans = predictor.plans
    cases = collect_cases(inputs, plans)
    targets = [output / case.output_name for case in cases]
    overlays = [overlay_path(output, case) for case in cases] if overlay else []
    check_output_location(output, inputs, targets + overlays, overwrite, plans.dataset.path)

    num_channels = plans.dataset.num_channels
    spatial_dims = predictor.spatial_dims
    conversion_announced = False
    written: list[Path] = []
    # the output folder is made by the first write; a run that fails before it leaves none behind
    with removed_if_left_empty(output):
        for index, case in enumerate(tqdm(cases, desc="predict", unit="case", disable=None)):
            image, geometry = read_image(list(case.images))
            if geometry.spatial_dims != spatial_dims:
                raise DataError(
                    case.images[0], f"is {geometry.spatial_dims}D but the model is {spatial_dims}D"
                )
            # Gray <-> RGB of photographs as in training; a folder of mixed images would warn for each: warn once.
            converted = image.shape[0] != num_channels
            image = convert_channels(
                image, num_channels, geometry, case.images[0], warn=not conversion_announced
            )
            conversion_announced |= converted
            segmentation = predictor.segment(image, geometry, tta=tta)
            written.append(write_segmentation(segmentation, geometry, targets[index]))
            if overlay:
                write_overlay(image, segmentation, geometry, overlays[index])
    return written

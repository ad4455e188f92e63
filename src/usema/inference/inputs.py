"""What to predict: input files and folders grouped into cases, and where each prediction may be written."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from usema.checkpoint import run_holding
from usema.data.channels import check_channels, holds_every_channel
from usema.data.datasets import dataset_holding, is_within
from usema.data.io import (
    FORMAT_OF_SUFFIX,
    SUPPORTED_SUFFIXES,
    ImageGeometry,
    format_of,
    probe_images,
    strip_suffix,
    suffix_of,
)
from usema.data.writing import SEGMENTATION_SUFFIX
from usema.errors import DataError
from usema.inference.probabilities import is_prediction_folder
from usema.planning.plans import Plans
from usema.utils.text import counted

# nnU-Net raw naming: one file per channel, CASE_0000.ext, CASE_0001.ext, ...
_CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


@dataclass(frozen=True)
class InferenceCase:
    """One image to segment: its channel files (one multi-channel file, or one file per channel, in order)."""

    case_id: str
    images: tuple[Path, ...]
    suffix: str

    @property
    def output_name(self) -> str:
        """File name of the prediction: the case id with the input's suffix, so the format stays the same
        (except lossy JPEG, whose segmentation write_segmentation stores as PNG)."""
        keeps_format = FORMAT_OF_SUFFIX[self.suffix.lower()] in SEGMENTATION_SUFFIX
        return self.case_id + (self.suffix if keeps_format else SEGMENTATION_SUFFIX["png"])


def _is_supported(path: Path) -> bool:
    return bool(suffix_of(path))


def _suffix(path: Path) -> str:
    return path.name[len(strip_suffix(path.name)) :]


def _list_folder(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _is_supported(p)
    )
    if not files:
        raise DataError(folder, f"no image files to predict (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    return files


def _group(files: list[Path], num_channels: int, channel_files: bool) -> list[InferenceCase]:
    """Group one input's files into cases.

    With `channel_files` (a plan of several channels, or one trained on nnU-Net raw data), files named
    CASE_NNNN.ext are the channels of CASE and must be complete (_0000 to the plan's last channel), except a
    photograph CASE_0000 alone, which holds every channel as nnU-Net's RGB natural images do; any other file is
    a case of its own (one multi-channel file, e.g. RGB PNG or 4D NIfTI).
    """
    cases: list[InferenceCase] = []
    channels: dict[tuple[Path, str, str], dict[int, Path]] = defaultdict(dict)
    for path in files:
        stem, suffix = strip_suffix(path.name), _suffix(path)
        match = _CHANNEL_FILE.fullmatch(stem) if channel_files else None
        if match is None:
            cases.append(InferenceCase(stem, (path,), suffix))
        else:
            channels[(path.parent, match["case"], suffix)][int(match["channel"])] = path
    for (_, case_id, suffix), by_index in channels.items():
        if holds_every_channel(by_index, num_channels, suffix):  # an RGB photograph: one CASE_0000 file
            cases.append(InferenceCase(case_id, (by_index[0],), suffix))
            continue
        if sorted(by_index) != list(range(num_channels)):
            found = ", ".join(f"_{i:04d}" for i in sorted(by_index))
            raise DataError(
                by_index[min(by_index)],
                f"case {case_id!r} has channel files {found}; the model expects {counted(num_channels, 'channel')}, "
                f"_0000 to _{num_channels - 1:04d}",
            )
        cases.append(InferenceCase(case_id, tuple(by_index[i] for i in range(num_channels)), suffix))
    return sorted(cases, key=lambda case: (case.case_id, case.images))


def _nnunet_named(files: list[Path]) -> bool:
    """Whether one-channel inputs are named as nnU-Net names them (CASE_0000.ext, no other channel number), so
    that the prediction is named CASE.ext, as nnU-Net's evaluator expects, whatever layout the run was trained
    on. Numbered cases (img_0000, img_0001, ...) are not channel files."""
    channels = [_CHANNEL_FILE.fullmatch(strip_suffix(path.name)) for path in files]
    numbers = {match["channel"] for match in channels if match is not None}
    return numbers == {"0000"}


def collect_cases(inputs: Sequence[str | Path], plans: Plans) -> list[InferenceCase]:
    """Turn input files and folders into cases, grouping nnU-Net channel files by the plan's channel count.

    Inputs named as nnU-Net names one-channel images (CASE_0000.ext only) are case CASE for any plan.

    A folder contributes every supported image file directly inside it; files given by name form one group.
    Missing paths, unsupported files and empty folders raise DataError.
    """
    num_channels = plans.dataset.num_channels
    planned_channel_files = num_channels > 1 or plans.dataset.format == "nnunet"
    cases: list[InferenceCase] = []
    loose_files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = _list_folder(path)
            cases += _group(files, num_channels, planned_channel_files or _nnunet_named(files))
        elif path.is_file():
            format_of(path)  # DataError naming the file when its type is not supported
            loose_files.append(path)
        else:
            raise DataError(path, "input not found")
    if loose_files:
        files = sorted(set(loose_files))
        cases += _group(files, num_channels, planned_channel_files or _nnunet_named(files))
    return cases


# How many of the problems found before predicting one error lists, so that a folder of bad files stays readable.
PROBLEMS_LISTED = 10


def check_fits_model(
    path: Path,
    channels: int,
    geometry: ImageGeometry,
    spatial_dims: int | Collection[int],
    num_channels: int,
    converts_photos: bool = True,
) -> None:
    """DataError naming `path` unless an image of `channels` channels on `geometry` goes into a model of
    `spatial_dims` axes (or any of several: nnU-Net's 2d configurations take 3D volumes slice by slice) and
    `num_channels` input channels (with `converts_photos`, a photograph is converted between gray and RGB)."""
    accepted = {spatial_dims} if isinstance(spatial_dims, int) else set(spatial_dims)
    if geometry.spatial_dims not in accepted:
        takes = " or ".join(f"{dims}D" for dims in sorted(accepted))
        raise DataError(path, f"is {geometry.spatial_dims}D but the model is {takes}")
    if converts_photos:
        check_channels(channels, num_channels, geometry, path)
    elif channels != num_channels:
        raise DataError(path, f"has {counted(channels, 'channel')} but the model takes {num_channels}")


def check_cases(
    cases: Sequence[InferenceCase],
    spatial_dims: int | Collection[int],
    num_channels: int,
    converts_photos: bool = True,
) -> None:
    """Check every case from its files' headers before the first prediction, so that one bad file among many
    stops a run in seconds rather than after hours of predictions: readable, channel files on one grid, and
    the model's dimensions and channels (see `check_fits_model`). One DataError lists the problems found (the
    first PROBLEMS_LISTED)."""
    problems: list[DataError] = []
    for case in cases:
        try:
            channels, geometry = probe_images(case.images)
            check_fits_model(case.images[0], channels, geometry, spatial_dims, num_channels, converts_photos)
        except DataError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        shown = "\n".join(f"  {problem}" for problem in problems[:PROBLEMS_LISTED])
        more = (
            f"\n  ... and {len(problems) - PROBLEMS_LISTED} more" if len(problems) > PROBLEMS_LISTED else ""
        )
        raise DataError(
            None, f"{len(problems)} of the {len(cases)} input cases cannot be predicted:\n{shown}{more}"
        )


def check_output_location(
    output: Path,
    inputs: Sequence[str | Path],
    planned: Sequence[Path],
    overwrite: bool = False,
    planned_from: str | Path | None = None,
) -> None:
    """Refuse an output folder that would put predictions over inputs, into a dataset or a run, or over earlier
    files.

    The output folder may not be an input folder or lie inside one (its predictions would mix with, and could
    replace, the images, and a later run would read them back as inputs); it may not be a dataset's folder (one
    holding dataset.json, or its images or labels folder: predictions there would replace or pose as ground
    truth) nor lie inside `planned_from`, the dataset the run was planned from; it may not be a run folder
    (the one that predicts or any other) nor lie in one's fold folders (`run_holding`: the probabilities'
    plans.json would replace the run's); no planned output file may be an input file; no two
    cases may share an output name; a planned file that exists already is replaced only with `overwrite`.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(output, "the output must be a folder, and this is an existing file")
    run = run_holding(output)
    if run is not None:
        raise DataError(
            output,
            f"is the run folder {run} or inside one of its fold or preprocessed folders; predictions are never "
            "written among a run's files (they could replace its plans.json or checkpoints): choose another "
            "output folder",
        )
    input_files: set[Path] = set()
    for raw in inputs:
        path = Path(raw).resolve()
        if path.is_dir():
            if is_within(output, path):
                raise DataError(
                    output,
                    f"the output folder is the input folder {raw} or inside it; choose a folder outside the inputs "
                    "so that no input is overwritten",
                )
            input_files.update(p.resolve() for p in _list_folder(path))
        else:
            input_files.add(path)
    dataset = dataset_holding(output)
    if dataset is not None and is_prediction_folder(dataset):
        dataset = None  # the dataset.json of an earlier `--save-probabilities`, which nnU-Net's tools read
    if dataset is not None or (planned_from is not None and is_within(output, planned_from)):
        raise DataError(
            output,
            f"is a folder of the dataset {dataset or planned_from}; predictions are never written into a dataset, "
            "choose an output folder outside it",
        )
    seen: set[Path] = set()
    for target in planned:
        resolved = Path(target).resolve()
        if resolved in input_files:
            raise DataError(
                target, "this output would overwrite an input image; choose another output folder"
            )
        if resolved in seen:
            raise DataError(target, "two input cases would write this same output; rename one of them")
        seen.add(resolved)
    existing = [target for target in planned if Path(target).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise DataError(existing[0], f"exists already{more}; --resume continues an interrupted prediction, "
                        "--overwrite replaces earlier predictions")

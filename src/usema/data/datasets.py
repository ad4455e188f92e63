"""Datasets on disk: the DatasetSpec of a dataset's cases, the path checks, and one case loaded as checked
training arrays (usema.data.layouts reads a folder of each layout into a DatasetSpec).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usema.data.channels import channel_names_for, convert_channels
from usema.data.instance_classes import instances_to_classes
from usema.data.io import (
    ImageGeometry,
    label_values,
    read_image,
    read_label,
)
from usema.errors import DataError

LABEL_MODES = ("semantic", "binary", "instance")
# Where datasets keep their images and labels (MSD and nnU-Net v2 train/test, 2D folders).
DATASET_SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "images", "labels")
FORMATS = ("msd", "nnunet", "folder2d")
BINARY_CLASSES = {0: "background", 1: "foreground"}
# nnU-Net v2's label for voxels without a reference (left out of the loss and the scores); its value is the
# highest of dataset.json's labels.
IGNORE_NAME = "ignore"


@dataclass
class Case:
    """One training case: its image file(s) (one per channel, or one multi-channel file) and its label."""

    case_id: str
    images: list[Path]
    label: Path | None = None


@dataclass
class DatasetSpec:
    """A dataset's layout and meaning. `labels` are the training classes 0..K-1 with their names (for binary and
    instance label modes the classes the labels are mapped to); `label_values` the value each class has in the
    label files (0/255 masks: [0, 255]; dataset.json labels 0, 2, 5: [0, 2, 5]), None in instance mode, whose
    files hold instance ids, and for binary 2D folders until planning has read the masks
    (`resolve_label_values`)."""

    root: Path
    format: str
    spatial_dims: int
    channel_names: list[str]
    modality: str
    labels: dict[int, str]
    label_mode: str
    cases: list[Case]
    manifest: Path | None = None  # dataset.json, where there is one
    # the value of nnU-Net's "ignore" label in the label files, where dataset.json declares one
    ignore_value: int | None = None
    label_values: list[int] | None = None
    # a converted channel count was warned about: a dataset says so once, not once per image
    announced_channel_mix: bool = field(default=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Training classes including background (instance -> 3: background, interior, boundary)."""
        return max(self.labels) + 1

    @property
    def ignore_label(self) -> int | None:
        """The training-class value of the ignore label's voxels (num_classes, one past the last class)."""
        return None if self.ignore_value is None else self.num_classes

    @property
    def class_values(self) -> list[int]:
        """The label file value of each training class (index = class): `label_values`, else the classes
        themselves (instance mode)."""
        return list(self.label_values) if self.label_values is not None else list(range(self.num_classes))

    @property
    def num_channels(self) -> int:
        """Input channels every case is converted to."""
        return len(self.channel_names)

    def input_files(self) -> set[Path]:
        """Every file the dataset reads (absolute, lexically normalised): nothing may be written over them."""
        files = {
            lexical_absolute(p)
            for case in self.cases
            for p in [*case.images, *([case.label] if case.label else [])]
        }
        return files | ({lexical_absolute(self.manifest)} if self.manifest else set())

    def holds(self, path: str | Path) -> bool:
        """Whether `path` lies inside the dataset folder (lexically)."""
        root = lexical_absolute(self.root)
        return os.path.commonpath([lexical_absolute(path), root]) == str(root)

    def case(self, case_id: str) -> Case:
        """The case called `case_id`; DataError if there is none."""
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DataError(self.manifest or self.root, f"no case {case_id!r} in this dataset")


def with_channel_count(spec: DatasetSpec, count: int, names: list[str] | None = None) -> DatasetSpec:
    """`spec` read with `count` input channels (a plan may convert gray <-> RGB photographs): the channels
    take `names` where they fit, else generic names, and the first converted case warns again."""
    if count != spec.num_channels:
        spec.channel_names = list(names) if names and len(names) == count else channel_names_for(count)
        spec.announced_channel_mix = False
    return spec


def lexical_absolute(path: str | Path) -> Path:
    """`path` made absolute and normalised without resolving symbolic links."""
    return Path(os.path.normpath(Path(path).absolute()))


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies inside it, links resolved."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def dataset_holding(folder: str | Path) -> Path | None:
    """The dataset that `folder` is (it holds dataset.json, or images/ and labels/), or whose images or labels
    folder it is; None for any other folder."""
    folder = Path(folder)
    for root in (folder, folder.parent) if folder.name in DATASET_SUBFOLDERS else (folder,):
        if (root / "dataset.json").is_file() or ((root / "images").is_dir() and (root / "labels").is_dir()):
            return root
    return None


def modality_of(channel_names: Iterable[str]) -> str:
    """The imaging modality the channel names say: "CT", "MR", "US", or the name itself ("+"-joined if
    mixed)."""
    kinds = []
    for name in channel_names:
        low = name.strip().lower()
        if low == "ct":
            kinds.append("CT")
        elif low in ("mr", "mri", "flair", "adc", "dwi", "pd") or low[:2] in ("t1", "t2"):
            kinds.append("MR")
        elif low in ("us", "ultrasound"):
            kinds.append("US")
        else:
            kinds.append(name)
    unique = list(dict.fromkeys(kinds))
    return "+".join(unique) if unique else "unknown"


# ------------------------------------------------------------------------------------------------ loading
def load_case(spec: DatasetSpec, case: Case) -> tuple[np.ndarray, np.ndarray | None, ImageGeometry]:
    """Read and check one case: image (C, *S) float32 with the dataset's channel count, label (*S) int64 in
    training classes (or None), geometry. Raises DataError naming the file on any mismatch."""
    image, geometry = read_image(case.images)
    if geometry.spatial_dims != spec.spatial_dims:
        raise DataError(
            case.images[0], f"is {geometry.spatial_dims}D but the dataset is {spec.spatial_dims}D"
        )
    converted = image.shape[0] != spec.num_channels
    image = convert_channels(
        image, spec.num_channels, geometry, case.images[0], warn=not spec.announced_channel_mix
    )
    spec.announced_channel_mix |= converted
    if case.label is None:
        return image, None, geometry
    raw, label_geometry = read_label(case.label)
    problem = label_geometry.agrees_with(geometry)
    if problem:
        raise DataError(case.label, f"label does not match its image {case.images[0].name}: {problem}")
    return image, to_training_classes(raw, spec, case.label), geometry


def to_training_classes(raw: np.ndarray, spec: DatasetSpec, source: str | Path) -> np.ndarray:
    """Map a label file's values to training classes for the dataset's label mode: binary, every value but 0
    (and the ignore label) is class 1; semantic, the value `spec.class_values[k]` is class k (the ignore label's
    value becomes `spec.ignore_label`), any other value is a DataError."""
    if spec.label_mode == "binary":
        classes = (raw > 0).astype(np.int64)
        if spec.ignore_value is not None:
            classes[raw == spec.ignore_value] = spec.ignore_label
        return classes
    if spec.label_mode == "instance":
        return instances_to_classes(raw)
    values = spec.class_values
    undeclared = sorted(set(label_values(raw).tolist()) - set(values) - {spec.ignore_value})
    if undeclared:
        raise DataError(
            source, f"label values {undeclared} are not declared in the dataset's labels {values}"
        )
    if values == list(range(len(values))):  # the classes are the values (the ignore label's too)
        return raw.astype(np.int64, copy=False)
    lookup = np.zeros(max(values + [spec.ignore_value or 0]) + 1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    if spec.ignore_value is not None:
        lookup[spec.ignore_value] = spec.ignore_label
    return lookup[raw]


def to_label_values(classes: np.ndarray, class_values: Sequence[int]) -> np.ndarray:
    """Training classes (*S) as the label files' values: class k becomes `class_values[k]` (the inverse of
    `to_training_classes` for semantic and binary labels)."""
    values = np.asarray(class_values, dtype=np.int64)
    if np.array_equal(values, np.arange(len(values))):
        return np.asarray(classes, dtype=np.int64)
    return values[np.asarray(classes)]


def binary_label_values(found: Iterable[int], ignore_value: int | None = None) -> list[int]:
    """The label values of binary masks that hold the values `found`: [0, V] where V is their one
    foreground value (0/255 masks stay 0/255), [0, 1] where they hold several (merged into one class) or
    none."""
    foreground = sorted(set(found) - {0, ignore_value})
    return [0, foreground[0] if len(foreground) == 1 else 1]


def resolve_label_values(spec: DatasetSpec, cases: Iterable[Case] | None = None) -> DatasetSpec:
    """`spec` with its label values known: binary masks whose foreground value the layout did not declare
    (2D folders read with label mode "binary") are read (`cases`, default all) to find it."""
    if spec.label_values is None and spec.label_mode == "binary":
        found: set[int] = set()
        for case in spec.cases if cases is None else cases:
            if case.label is not None:
                found.update(label_values(read_label(case.label)[0]).tolist())
        spec.label_values = binary_label_values(found, spec.ignore_value)
    return spec


def check_dataset(spec: DatasetSpec, case_ids: Iterable[str] | None = None) -> None:
    """Read and check every case (or those named) so that bad input fails before any training time is
    spent."""
    for case in spec.cases if case_ids is None else [spec.case(c) for c in case_ids]:
        load_case(spec, case)

"""Preprocessed cases on disk: written once per run, read lazily by training.

Case `<id>` is four files in RUN/preprocessed:
- `<id>.npy`: the image (C, *S) float32;
- `<id>_seg.npy`: the label (*S), uint8 (int32 from 256 classes on); labelled cases only;
- `<id>_locations.npy`: (N, spatial_dims) int32 voxel coordinates of the foreground classes, class after
  class, a sample of at most LOCATIONS_PER_CLASS each (patches are centred on them to oversample foreground);
- `<id>.json`: the plans key that made the case, the input's geometry, the shape and each class's rows in the
  locations file. It is written first, marked incomplete (so that the arrays are known to be ours if writing
  them is interrupted), and again once the arrays are written.

The arrays are plain .npy files, so that they open as memory maps: a patch reads the pages it covers and no
more, and since every access opens its own map, nothing of a case stays in the process between two patches.
Its memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usema.errors import DataError
from usema.utils.atomic import atomic_path

LOCATIONS_PER_CLASS = 5000
# `stored_key` of a case whose writing was interrupted: its files are ours, its arrays possibly not all there.
INCOMPLETE = "(incomplete)"


def case_files(folder: Path, case_id: str) -> dict[str, Path]:
    """The files of case `case_id` in `folder`: image, label, locations and meta (the JSON)."""
    return {
        "image": folder / f"{case_id}.npy",
        "label": folder / f"{case_id}_seg.npy",
        "locations": folder / f"{case_id}_locations.npy",
        "meta": folder / f"{case_id}.json",
    }


def sample_class_locations(label: np.ndarray, num_classes: int, seed: int) -> dict[int, np.ndarray]:
    """{k: (N, spatial_dims) int32} voxel coordinates of every foreground class k, N <= LOCATIONS_PER_CLASS,
    sampled by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(1, num_classes):
        where = np.argwhere(label == k)
        if len(where) > LOCATIONS_PER_CLASS:
            where = where[np.sort(rng.choice(len(where), LOCATIONS_PER_CLASS, replace=False))]
        out[k] = where.astype(np.int32)
    return out


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def write_case(
    folder: Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray | None,
    num_classes: int,
    key: str,
    geometry: dict[str, Any] | None = None,
) -> None:
    """Store one preprocessed case (atomic writes; the JSON first, marked incomplete, and again once the
    arrays are written). `label` holds training classes (None: an unlabelled case); its
    foreground locations are sampled with a generator seeded by the case id, so a case always stores the same
    sample. `key` names the plan settings that made the case (see usema.preprocessing.dataset)."""
    files = case_files(folder, case_id)
    meta: dict[str, Any] = {"plans_key": key, "complete": False}
    with atomic_path(files["meta"]) as tmp:
        tmp.write_text(json.dumps(meta))
    _save_array(files["image"], np.asarray(image, dtype=np.float32))
    meta.update(geometry=geometry, shape=list(image.shape[1:]), class_locations={})
    if label is not None:
        # values 0..num_classes: the ignore label, where there is one, is num_classes
        _save_array(files["label"], np.asarray(label).astype(np.uint8 if num_classes < 256 else np.int32))
        locations = sample_class_locations(label, num_classes, zlib.crc32(case_id.encode()))
        rows, start = {}, 0
        for k, where in locations.items():
            rows[str(k)] = [start, start + len(where)]
            start += len(where)
        _save_array(files["locations"], np.concatenate([locations[k] for k in sorted(locations)]))
        meta["class_locations"] = rows
    else:
        files["label"].unlink(missing_ok=True)
        files["locations"].unlink(missing_ok=True)
    with atomic_path(files["meta"]) as tmp:
        tmp.write_text(json.dumps({**meta, "complete": True}))


def stored_key(folder: Path, case_id: str) -> str | None:
    """The plans key case `case_id` was stored with; INCOMPLETE where writing it was interrupted, "" where its
    JSON is not ours, None where there is none."""
    meta = case_files(folder, case_id)["meta"]
    if not meta.is_file():
        return None
    try:
        stored = json.loads(meta.read_text())
        key, complete = stored.get("plans_key"), stored.get("complete")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return ""
    if not isinstance(key, str):
        return ""
    return key if complete else INCOMPLETE


def _open_array(path: Path, mapped: bool = True) -> np.ndarray:
    """The array of an .npy file: memory-mapped (read-only), or read into memory."""
    try:
        return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable preprocessed array ({err}); delete it to have it redone") from err


@dataclass(frozen=True)
class PreprocessedCase:
    """A preprocessed case on disk, read lazily: `image` and `label` open a memory map on every access (read a
    region of it and let it go), `read_image` and `read_label` load the whole array."""

    case_id: str
    folder: Path
    shape: tuple[int, ...]  # spatial
    # class -> (first row, end row) of its voxels in the locations file
    location_rows: dict[int, tuple[int, int]]

    @property
    def files(self) -> dict[str, Path]:
        """The case's files (see `case_files`)."""
        return case_files(self.folder, self.case_id)

    @property
    def image(self) -> np.ndarray:
        """(C, *S) float32, memory-mapped."""
        return _open_array(self.files["image"])

    @property
    def label(self) -> np.ndarray:
        """(*S) training classes, memory-mapped."""
        return _open_array(self.files["label"])

    def read_image(self) -> np.ndarray:
        """The whole image in memory (read directly: no map holds a second copy meanwhile)."""
        return _open_array(self.files["image"], mapped=False)

    def read_label(self) -> np.ndarray:
        """The whole label in memory."""
        return _open_array(self.files["label"], mapped=False)

    @property
    def present_classes(self) -> list[int]:
        """The foreground classes with at least one voxel."""
        return [k for k, (start, end) in sorted(self.location_rows.items()) if end > start]

    def class_location(self, k: int, index: int) -> tuple[int, ...]:
        """The `index`-th stored voxel of class `k`."""
        start, end = self.location_rows[k]
        if not 0 <= index < end - start:
            raise IndexError(f"class {k} of {self.case_id} has {end - start} stored voxels, not {index + 1}")
        return tuple(int(v) for v in _open_array(self.files["locations"])[start + index])

    def location_count(self, k: int) -> int:
        """How many voxels of class `k` are stored."""
        start, end = self.location_rows.get(k, (0, 0))
        return end - start


def open_case(folder: str | Path, case_id: str) -> PreprocessedCase:
    """Case `case_id` of a preprocessed folder, checked (files present, labelled, image and label agree) but
    not read; DataError otherwise."""
    folder = Path(folder)
    files = case_files(folder, case_id)
    if not files["meta"].is_file():
        raise DataError(files["meta"], "preprocessed case not found; preprocessing did not finish")
    if stored_key(folder, case_id) in ("", INCOMPLETE):
        raise DataError(files["meta"], "not a complete preprocessed case; preprocess the run again")
    try:
        meta = json.loads(files["meta"].read_text())
        rows = {int(k): (int(v[0]), int(v[1])) for k, v in meta["class_locations"].items()}
        shape = tuple(int(s) for s in meta["shape"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise DataError(
            files["meta"], f"unreadable preprocessed case ({err}); delete it to have it redone"
        ) from err
    if not files["label"].is_file():
        raise DataError(files["label"], "preprocessed case has no label; training needs labelled cases")
    image, label = _open_array(files["image"]), _open_array(files["label"])
    if image.ndim != label.ndim + 1 or image.shape[1:] != label.shape or label.shape != shape:
        raise DataError(files["image"], f"image {image.shape} and label {label.shape} do not match")
    return PreprocessedCase(case_id, folder, shape, rows)

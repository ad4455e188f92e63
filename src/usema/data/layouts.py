"""Reading a dataset folder: detect its layout (MSD, nnU-Net v2 raw, 2D images/ + labels/ folder), read its
manifest and list its cases as a DatasetSpec (usema.data.datasets holds the spec and loads single cases).

Paths named in dataset.json are checked lexically against the dataset folder (no `..` or absolute path may
leave it); symbolic links inside the folder may point anywhere, so a folder of links to real files works.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usema.data.channels import channel_names_for, holds_every_channel, is_convertible
from usema.data.datasets import (
    BINARY_CLASSES,
    IGNORE_NAME,
    LABEL_MODES,
    Case,
    DatasetSpec,
    binary_label_values,
    lexical_absolute,
    modality_of,
)
from usema.data.instance_classes import INSTANCE_CLASSES
from usema.data.io import label_values, probe_image, read_label, strip_suffix, suffix_of
from usema.errors import DataError
from usema.utils.text import counted


def dataset_folder(path: str | Path) -> Path:
    """The dataset folder that `path` names: the folder itself, or the folder of a dataset.json given."""
    path = Path(path)
    return path.parent if path.is_file() and path.name == "dataset.json" else path


def load_dataset(root: str | Path, label_mode: str | None = None) -> DatasetSpec:
    """Detect the dataset layout under `root` (the folder, or its dataset.json) and list its cases. Raises
    DataError for an empty dataset, a missing file, a path that leaves the folder, or a dataset.json that is
    neither MSD nor nnU-Net v2."""
    root = dataset_folder(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    if label_mode not in (None, *LABEL_MODES):
        raise DataError(root, f"unknown label mode {label_mode!r}; choose one of {', '.join(LABEL_MODES)}")
    manifest = root / "dataset.json"
    if manifest.is_file():
        meta = _read_json(manifest)
        if "channel_names" in meta or "file_ending" in meta:
            return _load_nnunet(root, manifest, meta, label_mode or "semantic")
        if "training" in meta:
            return _load_msd(root, manifest, meta, label_mode or "semantic")
        raise DataError(
            manifest,
            "neither MSD (needs 'training') nor nnU-Net v2 (needs 'channel_names', 'labels', 'file_ending')",
        )
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return _load_folder2d(root, label_mode)
    raise DataError(
        root, "not a dataset: expected dataset.json (MSD or nnU-Net v2) or images/ and labels/ folders"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def _inside(root: Path, entry: Any, manifest: Path) -> Path:
    """The file a dataset.json entry names, refusing paths that leave the dataset folder and missing files."""
    if not isinstance(entry, str) or not entry:
        raise DataError(manifest, f"expected a file path, found {entry!r}")
    base = lexical_absolute(root)
    path = Path(os.path.normpath(base / entry))
    if os.path.commonpath([path, base]) != str(base):
        raise DataError(manifest, f"path {entry!r} leads outside the dataset folder {base}")
    if not path.is_file():
        raise DataError(path, f"file named in {manifest.name} does not exist")
    return path


def _int_keyed(mapping: Any, manifest: Path, key: str) -> dict[int, str]:
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(manifest, f"'{key}' must be a non-empty object")
    try:
        return {int(k): str(v) for k, v in sorted(mapping.items(), key=lambda kv: int(kv[0]))}
    except (TypeError, ValueError) as exc:
        raise DataError(manifest, f"'{key}' keys must be integers: {exc}") from exc


def _split_ignore(
    declared: dict[int, str] | None, label_mode: str, where: Path
) -> tuple[dict[int, str] | None, int | None]:
    """The declared labels without nnU-Net's "ignore" label, and its value (None without one). As in nnU-Net
    v2 the ignore label must have the highest value, one past the others; instance labels cannot have one."""
    values = [value for value, name in (declared or {}).items() if name == IGNORE_NAME]
    if not values:
        return declared, None
    others = {value: name for value, name in declared.items() if name != IGNORE_NAME}
    if len(values) > 1 or values[0] != max(others, default=-1) + 1:
        raise DataError(
            where,
            f"label {IGNORE_NAME!r} is {values if len(values) > 1 else values[0]}; the ignore label must have "
            f"the highest value, one past the others ({max(others, default=-1) + 1}), as in nnU-Net v2",
        )
    if label_mode == "instance":
        raise DataError(where, f"an {IGNORE_NAME!r} label is not supported with instance labels")
    return others, values[0]


def dataset_ignore_value(folder: str | Path) -> int | None:
    """The "ignore" label's value of the dataset whose dataset.json lies in `folder` or its parent (a labelsTr
    folder, say); None without such a dataset.json or label."""
    folder = Path(folder)
    for manifest in (folder / "dataset.json", folder.parent / "dataset.json"):
        if manifest.is_file():
            labels = _read_json(manifest).get("labels") or {}
            for key, value in labels.items():
                if key == IGNORE_NAME and isinstance(value, int):  # nnU-Net v2: name -> value
                    return value
                if value == IGNORE_NAME and str(key).isdigit():  # MSD: value -> name
                    return int(key)
            return None
    return None


def _training_labels(
    declared: dict[int, str] | None, label_mode: str, where: Path
) -> tuple[dict[int, str], list[int] | None]:
    """The training classes {class: name} of the declared labels {file value: name} and the file value of
    each class: semantic, the declared values in order (0 must be one: background); binary, background and
    the declared foreground value where there is one (None where the masks must tell, see
    `resolve_label_values`); instance, the instance classes and no values."""
    if label_mode == "binary":
        values = binary_label_values(declared) if declared and len(declared) > 1 else None
        return dict(BINARY_CLASSES), values
    if label_mode == "instance":
        return dict(INSTANCE_CLASSES), None
    if not declared:
        raise DataError(where, "no labels declared; semantic label mode needs them")
    if 0 not in declared:
        raise DataError(where, f"labels must include 0 (background); found {sorted(declared)}")
    values = sorted(declared)
    return {k: declared[value] for k, value in enumerate(values)}, values


def _load_msd(root: Path, manifest: Path, meta: dict[str, Any], label_mode: str) -> DatasetSpec:
    training = meta["training"]
    if not isinstance(training, list) or not training:
        raise DataError(manifest, "empty dataset: 'training' lists no cases")
    cases, seen = [], set()
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(manifest, f"each 'training' entry needs an 'image'; found {entry!r}")
        names = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        images = [_inside(root, name, manifest) for name in names]
        label = _inside(root, entry["label"], manifest) if entry.get("label") is not None else None
        case_id = strip_suffix(images[0])
        if case_id in seen:
            raise DataError(manifest, f"case {case_id!r} is listed twice")
        seen.add(case_id)
        cases.append(Case(case_id, images, label))
    modality = meta.get("modality")
    declared_names = list(_int_keyed(modality, manifest, "modality").values()) if modality else None
    labels_meta = meta.get("labels")
    declared = _int_keyed(labels_meta, manifest, "labels") if labels_meta else None
    declared, ignore = _split_ignore(declared, label_mode, manifest)
    labels, values = _training_labels(declared, label_mode, manifest)
    return _finish(root, "msd", manifest, cases, declared_names, labels, label_mode, ignore, values)


def _load_nnunet(root: Path, manifest: Path, meta: dict[str, Any], label_mode: str) -> DatasetSpec:
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise DataError(manifest, f"nnU-Net v2 dataset.json lacks '{key}'")
    channel_names = list(_int_keyed(meta["channel_names"], manifest, "channel_names").values())
    declared: dict[int, str] = {}
    for name, value in dict(meta["labels"]).items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(
                manifest, f"label {name!r}: region-based or non-integer labels ({value!r}) are not supported"
            )
        declared[value] = name
    ending = str(meta["file_ending"])
    cases: list[Case] = []
    if isinstance(meta.get("dataset"), dict):  # nnU-Net v2's explicit file list
        for case_id, entry in meta["dataset"].items():
            images = [_inside(root, p, manifest) for p in entry.get("images", [])]
            label = _inside(root, entry["label"], manifest) if entry.get("label") else None
            cases.append(Case(str(case_id), images, label))
    else:
        cases = _scan_nnunet(root, manifest, ending, len(channel_names))
    if not cases:
        raise DataError(root / "imagesTr", f"empty dataset: no *_0000{ending} images")
    declared, ignore = _split_ignore(declared, label_mode, manifest)
    labels, values = _training_labels(declared, label_mode, manifest)
    return _finish(root, "nnunet", manifest, cases, channel_names, labels, label_mode, ignore, values)


def _scan_nnunet(root: Path, manifest: Path, ending: str, num_channels: int) -> list[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(images_dir, "missing folder (nnU-Net v2 keeps training images in imagesTr/)")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    channels: dict[str, set[int]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(ending):
            continue
        match = pattern.match(path.name)
        if not match:
            raise DataError(path, f"name does not follow CASE_XXXX{ending}")
        channels.setdefault(match.group(1), set()).add(int(match.group(2)))
    cases = []
    for case_id, found in sorted(channels.items()):
        # an RGB photograph is one CASE_0000 file; _finish and the loader check the channels it holds
        count = 1 if holds_every_channel(found, num_channels, ending) else num_channels
        images = [images_dir / f"{case_id}_{c:04d}{ending}" for c in range(count)]
        for channel, path in enumerate(images):
            if channel not in found:
                raise DataError(
                    path,
                    f"missing channel {channel} of case {case_id} ({manifest.name} declares "
                    f"{num_channels} channels)",
                )
        label = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            raise DataError(label, f"missing label of case {case_id}")
        cases.append(Case(case_id, images, label))
    return cases


def _load_folder2d(root: Path, label_mode: str | None) -> DatasetSpec:
    def listing(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or not suffix_of(path):
                continue
            stem = strip_suffix(path)
            if stem in found:
                raise DataError(path, f"two files named {stem!r} in {folder.name}/ ({found[stem].name})")
            found[stem] = path
        return found

    images, labels = listing(root / "images"), listing(root / "labels")
    if not images:
        raise DataError(root / "images", "empty dataset: no image files")
    cases = []
    for stem, image in images.items():
        if stem not in labels:
            raise DataError(image, "no label file with the same name in labels/")
        cases.append(Case(stem, [image], labels[stem]))
    found = None  # the values of every mask, where reading them is needed anyway
    if label_mode is None:
        label_mode, found = _guess_label_mode(root, [c.label for c in cases if c.label])
    elif label_mode == "semantic":
        found = _values_in(c.label for c in cases if c.label)
    declared = {0: "background", **{k: f"class_{k}" for k in found if k}} if found is not None else None
    labels, values = _training_labels(declared, label_mode, root)
    return _finish(root, "folder2d", None, cases, None, labels, label_mode, label_values=values)


def _values_in(labels: Iterable[Path]) -> set[int]:
    """Every value that the label files hold."""
    return set().union(*(label_values(read_label(path)[0]).tolist() for path in labels))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Warn about a dataset once per process: planning, training and the benchmarks read one dataset several
    times, and libraries that reset the warning filters (catch_warnings) defeat Python's own once-per-place."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=5)


def _guess_label_mode(root: Path, labels: list[Path]) -> tuple[str, set[int] | None]:
    """The label mode the files look like, and the values they hold (None for instance ids): 16- or 32-bit
    label files hold instance ids; masks of 0 and one value above 1 (0/255) are binary; anything else is
    semantic."""
    _, geometry = probe_image(labels[0])
    if str(geometry.extra.get("mode", "")).startswith("I") or read_label(labels[0])[0].max(initial=0) > 255:
        guess, values = "instance", None
    else:
        values = _values_in(labels)
        guess = "binary" if len(values) == 2 and max(values) > 1 else "semantic"
    if guess != "semantic":
        _warn_once(
            f"{root}: no label mode given; the label files look {guess} (pass --labels, in Python label_mode=, to "
            f"choose)"
        )
    return guess, values


def _finish(
    root: Path,
    fmt: str,
    manifest: Path | None,
    cases: list[Case],
    channel_names: list[str] | None,
    labels: dict[int, str],
    label_mode: str,
    ignore_value: int | None = None,
    label_values: list[int] | None = None,
) -> DatasetSpec:
    """Probe the images (header only where possible) for spatial dims and channel counts."""
    # Declared channels: the first case shows the layout; undeclared (2D folders): every image votes.
    probed = [
        (case.images[0], *probe_image(case.images[0]))
        for case in (cases if channel_names is None else cases[:1])
    ]
    dims = Counter(geo.spatial_dims for _, _, geo in probed)
    spatial_dims = dims.most_common(1)[0][0]
    for path, _, geo in probed:
        if geo.spatial_dims != spatial_dims:
            raise DataError(path, f"is {geo.spatial_dims}D but the dataset's images are {spatial_dims}D")
    announced = False
    if channel_names is None:
        counts = Counter(channels for _, channels, _ in probed)
        majority = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        tied = sorted(c for c, n in counts.items() if n == counts[majority] and c != majority)
        # a tie is no majority: say so, and which count wins it
        why = (
            f"as many as have {' or '.join(map(str, tied))}, and a tie goes to the larger count"
            if tied else "the majority"
        )
        channel_names = channel_names_for(majority)
        for path, channels, geo in probed:
            if channels != majority and not is_convertible(channels, majority, geo):
                raise DataError(
                    path,
                    f"has {counted(channels, 'channel')} but {counted(counts[majority], 'image')} of the dataset "
                    f"{'has' if counts[majority] == 1 else 'have'} {majority} ({why})",
                )
        if len(counts) > 1:
            others = len(probed) - counts[majority]
            _warn_once(
                f"{root}: {others} of {len(cases)} images do not have {counted(majority, 'channel')} "
                f"({counts[majority]} have: {why}); they are converted on load"
            )
            announced = True
    else:
        first = cases[0].images
        found = len(first) if len(first) > 1 else probed[0][1]
        convertible = len(first) == 1 and is_convertible(found, len(channel_names), probed[0][2])
        if found != len(channel_names) and not convertible:
            raise DataError(
                first[0],
                f"has {counted(found, 'channel')} but the dataset declares {len(channel_names)} "
                f"({', '.join(channel_names)})",
            )
    modality = modality_of(channel_names) if fmt != "folder2d" else "unknown"
    return DatasetSpec(
        root, fmt, spatial_dims, channel_names, modality, labels, label_mode, cases, manifest, ignore_value,
        label_values, announced,
    )


# ----------------------------------------------------------------------------------------------- one case

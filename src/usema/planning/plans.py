"""`Plans`: plans.json as an object, the one reader of the file. Every stage after planning asks it for what
it needs (dataset, spacing, normalisation, patch, batch, training settings, the network) instead of indexing
the JSON, and gets typed values (`DatasetInfo`, `Normalization`, `TrainingSettings`, `NetworkSpec`); edits
make a new, validated Plans.

Plans of an older version are read through `schema.migrate_plans` and saved in the current one.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from usema.data.datasets import DatasetSpec, with_channel_count
from usema.data.layouts import load_dataset
from usema.errors import DataError, UsemaError
from usema.models.spec import NetworkSpec
from usema.planning.network import check_network_settings, network_settings_for, settings_for_building
from usema.planning.schema import READABLE_VERSIONS, migrate_plans, validate_plans
from usema.planning.settings import TrainingSettings
from usema.utils.atomic import atomic_path

PLANS_NAME = "plans.json"


@dataclass(frozen=True)
class DatasetInfo:
    """The plan's "dataset" section: the dataset it was made for and the cases it plans."""

    path: str
    format: str
    spatial_dims: int
    num_channels: int
    channel_names: list[str] | None
    modality: str | None
    labels: dict[str, str]
    label_mode: str
    num_classes: int
    case_ids: list[str]
    # the training-class value (num_classes) of nnU-Net's "ignore" label, whose voxels count in no loss and no
    # score; None without one
    ignore_label: int | None = None
    # the label files' value of each training class (index = class; 0/255 masks: [0, 255]): what training
    # reads as classes and prediction writes back; None for instance labels (the files hold instance ids)
    label_values: list[int] | None = None
    # the ignore label's value in the label files (None without one)
    ignore_value: int | None = None

    @property
    def class_names(self) -> list[str]:
        """The names of the foreground training classes 1..num_classes-1 (the class number where unnamed)."""
        return [str(self.labels.get(str(k), k)) for k in range(1, self.num_classes)]

    def value_names(self) -> dict[int, str]:
        """{label file value: name} of the foreground classes, as predictions and references hold them (instance
        labels: {1: "foreground"}, every instance id being foreground)."""
        if self.label_values is None:
            return {1: "foreground"}
        return dict(zip(self.label_values[1:], self.class_names, strict=True))


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel's intensities are normalised: "zscore_per_image" (by the image's own mean and standard
    deviation), "ct" (clipped to `clip`, then (x - mean) / std, the dataset's foreground statistics) or
    "none"."""

    scheme: str
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ChannelNormalization:
        """An entry of plans.json's "normalization" (validated: schema._validate_normalization)."""
        clip = entry.get("clip")
        return cls(str(entry["scheme"]), None if clip is None else (clip[0], clip[1]), entry.get("mean"),
                   entry.get("std"))

    def to_dict(self) -> dict[str, Any]:
        """The entry as plans.json holds it."""
        entry: dict[str, Any] = {"scheme": self.scheme}
        if self.clip is not None:
            entry["clip"] = list(self.clip)
        entry.update({key: value for key, value in (("mean", self.mean), ("std", self.std)) if value is not None})
        return entry


@dataclass(frozen=True)
class Normalization:
    """The plan's intensity normalisation (plans.json "normalization", schema.NORMALIZATION_SCHEMES): one
    `ChannelNormalization` for every channel, or, `per_channel` (the scheme "per_channel" in the file), one of
    its own for each channel."""

    channels: tuple[ChannelNormalization, ...]
    per_channel: bool = False

    @property
    def scheme(self) -> str:
        """The scheme as plans.json names it: the shared channel scheme, or "per_channel"."""
        return "per_channel" if self.per_channel else self.channels[0].scheme

    def for_channels(self, count: int) -> tuple[ChannelNormalization, ...]:
        """The normalisation of each of `count` channels."""
        return self.channels if self.per_channel else self.channels[:1] * count

    @classmethod
    def from_dict(cls, normalization: dict[str, Any]) -> Normalization:
        """plans.json's "normalization" (validated)."""
        if normalization["scheme"] == "per_channel":
            return cls(tuple(ChannelNormalization.from_dict(e) for e in normalization["channels"]), True)
        return cls((ChannelNormalization.from_dict(normalization),))

    def to_dict(self) -> dict[str, Any]:
        """The normalisation as plans.json holds it."""
        if self.per_channel:
            return {"scheme": "per_channel", "channels": [channel.to_dict() for channel in self.channels]}
        return self.channels[0].to_dict()

    def __str__(self) -> str:
        return str(self.to_dict())


class _Absent:
    """A key that one of two compared plans lacks."""

    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


class Plans:
    """A validated plan. `Plans.load(run_dir)` reads RUN/plans.json; `source` names it in error messages."""

    def __init__(self, data: dict[str, Any], source: str | Path = PLANS_NAME):
        data = migrate_plans(data)
        validate_plans(data, source)
        self._data = copy.deepcopy(data)
        self.source = source

    # ------------------------------------------------------------------------------------------------ file
    @classmethod
    def load(cls, run_dir: str | Path) -> Plans:
        """Read and check `run_dir/plans.json` (or a plans file given directly); DataError naming the file and
        the key when something later stages need is missing or malformed."""
        path = Path(run_dir)
        if path.is_dir() or path.suffix.lower() != ".json":
            path = path / PLANS_NAME
        if not path.is_file():
            raise DataError(path, "plans not found; run `usema plan DATA -o RUN` first")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(path, f"cannot read plans JSON: {exc}") from exc
        return cls(data, path)

    def save(self, run_dir: str | Path) -> Path:
        """Write `run_dir/plans.json` atomically; returns its path."""
        path = Path(run_dir) / PLANS_NAME
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self._data, indent=1) + "\n")
        return path

    def to_dict(self) -> dict[str, Any]:
        """The plan as plans.json holds it (a copy)."""
        return copy.deepcopy(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plans) and self._data == other._data

    def __repr__(self) -> str:
        return f"Plans({self.model_name!r}, patch {self.patch_size}, batch {self.batch_size}: {self.source})"

    # -------------------------------------------------------------------------------------------- sections
    @property
    def version(self) -> int:
        """The plans format version (schema.PLANS_VERSION)."""
        return int(self._data["version"])

    @property
    def dataset(self) -> DatasetInfo:
        """The dataset section."""
        info = self._data["dataset"]
        return DatasetInfo(
            path=str(info["path"]),
            format=str(info["format"]),
            spatial_dims=int(info["spatial_dims"]),
            num_channels=int(info["num_channels"]),
            channel_names=list(info["channel_names"]) if info.get("channel_names") else None,
            modality=info.get("modality"),
            labels={str(k): str(v) for k, v in info["labels"].items()},
            label_mode=str(info["label_mode"]),
            num_classes=int(info["num_classes"]),
            case_ids=list(info["cases"]),
            ignore_label=None if info.get("ignore_label") is None else int(info["ignore_label"]),
            label_values=None if info.get("label_values") is None else [int(v) for v in info["label_values"]],
            ignore_value=None if info.get("ignore_value") is None else int(info["ignore_value"]),
        )

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What planning measured of the dataset (shapes, spacings, intensities, class voxels)."""
        return copy.deepcopy(self._data.get("fingerprint", {}))

    @property
    def target_spacing(self) -> list[float]:
        """The spacing (mm per axis) every image is resampled to."""
        return [float(s) for s in self._data["target_spacing"]]

    @property
    def normalization(self) -> Normalization:
        """The intensity normalisation."""
        return Normalization.from_dict(self._data["normalization"])

    @property
    def patch_size(self) -> list[int]:
        """The training patch, which is also the sliding window of inference."""
        return [int(p) for p in self._data["patch_size"]]

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self._data["patch_size"])

    @property
    def batch_size(self) -> int:
        """Patches per optimizer step (over all processes under DDP)."""
        return int(self._data["batch_size"])

    @property
    def model_name(self) -> str:
        """The model preset the plan trains (usema.models.registry)."""
        return str(self._data["model"]["name"])

    @property
    def network_settings(self) -> dict[str, Any]:
        """The network's keyword arguments (strides, SEMA windows, widths, ...) as the plan stores them."""
        return copy.deepcopy(self._data["model"].get("network_settings", {}))

    @property
    def training(self) -> TrainingSettings:
        """The training settings, defaults filled in."""
        return TrainingSettings.from_dict(self._data["training"])

    @property
    def planned_for(self) -> dict[str, Any]:
        """What the plan was made for and with: device, memory budget, --plan edits ({} for plans written by
        hand)."""
        return copy.deepcopy(self._data.get("planned_for", {}))

    @property
    def planned_device(self) -> str | None:
        """The kind of device the plan was made for, "cpu" or "cuda" (None for plans that do not say)."""
        return self._data.get("planned_for", {}).get("device")

    @property
    def plan_edits(self) -> dict[str, Any]:
        """The --plan KEY=JSON edits the plan was made with ({} for none)."""
        return copy.deepcopy(self._data.get("planned_for", {}).get("plan_edits") or {})

    def median_shape_at_target(self) -> list[int]:
        """The median image shape at the target spacing (the patch for plans without a fingerprint)."""
        fingerprint = self._data.get("fingerprint") or {}
        if not fingerprint.get("shapes"):
            return self.patch_size
        shapes, spacings = (np.asarray(fingerprint[key], dtype=float) for key in ("shapes", "spacings"))
        median = np.median(shapes * spacings / np.asarray(self.target_spacing), axis=0)
        return [max(1, int(round(s))) for s in median]

    def case_sizes(self) -> dict[str, int] | None:
        """Each planned case's size, what the validation subset is stratified by: its foreground voxels as the
        fingerprint counted them, else its voxels; None for plans whose fingerprint has neither."""
        fingerprint, cases = self._data.get("fingerprint") or {}, self.dataset.case_ids
        sizes = fingerprint.get("foreground_voxels")
        if sizes is None and fingerprint.get("shapes"):
            sizes = [int(np.prod(shape)) for shape in fingerprint["shapes"]]
        if sizes is None or len(sizes) != len(cases):
            return None
        return {case: int(size) for case, size in zip(cases, sizes, strict=True)}

    def validated_cases_per_epoch(self, folds: int = 5) -> int:
        """How many held-out cases each epoch validates: a fold's share of the cases, at most
        val_max_cases (a draw stratified by size: `usema.training.splits.validation_subset`)."""
        held_out = max(1, len(self.dataset.case_ids) // folds)
        limit = self.training.val_max_cases
        return min(held_out, limit) if limit else held_out

    def dataset_spec(self) -> DatasetSpec:
        """The dataset the plan was made for, with the plan's label mode, label values and channel count (a
        user's edit included)."""
        info = self.dataset
        spec = load_dataset(info.path, info.label_mode)
        spec.label_values = info.label_values
        return with_channel_count(spec, info.num_channels, info.channel_names)

    # ----------------------------------------------------------------------------------------------- edits
    def _edited(self, edit) -> Plans:
        data = self.to_dict()
        edit(data)
        return Plans(data, self.source)

    def with_training(self, settings: TrainingSettings) -> Plans:
        """This plan with other training settings (keys of the file that are no setting are kept)."""
        return self._edited(lambda data: data["training"].update(settings.to_dict()))

    def with_planning_record(self, **facts: Any) -> Plans:
        """This plan with `facts` (e.g. plan_edits) added to what it records of its making (`planned_for`)."""
        return self._edited(lambda data: data.setdefault("planned_for", {}).update(copy.deepcopy(facts)))

    def with_model(self, name: str, network_settings: dict[str, Any] | None = None) -> Plans:
        """This plan for model `name`, with `network_settings` over the plan's settings that `name` takes (no
        SEMA placement for usema-nosema, no head_dim for nnU-Net's UNet). SEMA placement and windows are
        planned for `name`: the windows of the model the plan was made for do not carry over, unless given."""
        from usema.models.registry import settings_it_takes

        shared = {k: v for k, v in self.network_settings.items() if k != "stage_windows"}
        settings = settings_it_takes(name, self.spatial_dims, shared)
        settings.update(network_settings or {})
        if "strides" in settings:  # plans written by hand may leave the strides to the network's defaults
            settings = network_settings_for(
                name, self.spatial_dims, self.patch_size, settings.pop("strides"), settings
            )

        def edit(data: dict[str, Any]) -> None:
            data["model"] = {**data["model"], "name": name, "network_settings": settings}

        return self._edited(edit)

    # --------------------------------------------------------------------------------------------- network
    @property
    def network(self) -> NetworkSpec:
        """The network the plan trains: its model for the dataset's channels and classes, with the settings it
        is built with (UNETR's at the plan's patch size); `plans.network.build()` makes it, untrained, and a
        checkpoint stores it beside the weights (with the deep supervision it was trained with)."""
        return NetworkSpec(
            self.model_name,
            self.spatial_dims,
            self.dataset.num_channels,
            self.dataset.num_classes,
            settings_for_building(self.model_name, self.network_settings, self.patch_size),
        )

    def network_description(self, deep_supervision: bool | None = None) -> dict[str, Any]:
        """Deprecated (removed in the next release): `plans.network.to_dict()`."""
        warnings.warn("Plans.network_description() is plans.network.to_dict() now", FutureWarning, stacklevel=2)
        return replace(self.network, deep_supervision=deep_supervision).to_dict()

    def build_network(self, deep_supervision: bool = False):
        """Deprecated (removed in the next release): `plans.network.build(deep_supervision)`."""
        warnings.warn("Plans.build_network() is plans.network.build() now", FutureWarning, stacklevel=2)
        return self.network.build(deep_supervision)

    def check_network(self) -> None:
        """DataError naming the plans file when its model is unknown, its network settings hold a setting the
        model does not take (a typo names the key and lists the model's settings), or a value the network
        refuses (`check_it_builds`)."""
        from usema.models.registry import check_it_builds  # imports torch: only where a network is checked

        network = self.network
        try:
            check_network_settings(self.model_name, self.spatial_dims, network.network_settings)
        except UsemaError as err:
            raise DataError(self.source, str(err)) from err
        try:
            check_it_builds(network.build)
        except UsemaError as err:
            raise DataError(self.source, f"model {self.model_name!r} cannot be built from its network settings: {err}") from err

    def difference_from(self, trained: Plans) -> str | None:
        """The first setting in which this plan differs from `trained` where a checkpoint trained under
        `trained` cannot continue under this one, as "KEY was OLD, plans.json now has NEW"; None when they
        agree. Training settings (a caller may change them on resume, e.g. more epochs) and the dataset's
        location do not count."""

        def relevant(data: dict[str, Any]) -> dict[str, Any]:
            kept = {key: value for key, value in data.items() if key not in ("training", "planned_for")}
            kept["dataset"] = {key: value for key, value in data["dataset"].items() if key != "path"}
            return kept

        def first_difference(old: Any, new: Any, key: str) -> str | None:
            if isinstance(old, dict) and isinstance(new, dict):
                for name in sorted(set(old) | set(new), key=str):
                    inner = f"{key}.{name}" if key else str(name)
                    found = first_difference(old.get(name, _ABSENT), new.get(name, _ABSENT), inner)
                    if found:
                        return found
                return None
            return None if old == new else f"{key} was {old!r}, plans.json now has {new!r}"

        return first_difference(relevant(trained._data), relevant(self._data), "")


def is_plans_file(path: Path) -> bool:
    """Whether `path` holds a usema plan (of any version this package reads)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("version") in READABLE_VERSIONS and "dataset" in data

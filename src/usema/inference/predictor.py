"""Trained networks ready to segment: one fold's checkpoint or an ensemble of folds, run by sliding window
with mirroring test-time augmentation, as `usema predict` and `usema.load` use them."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from usema.checkpoint import Checkpoint, checkpoint_path
from usema.data.channels import convert_channels
from usema.data.datasets import to_label_values
from usema.data.instance_classes import classes_to_instances
from usema.data.io import ImageGeometry, read_image
from usema.errors import CheckpointError, UsemaError
from usema.inference.folds import resolve_folds, run_folder
from usema.inference.inputs import check_fits_model
from usema.models.spec import NetworkSpec
from usema.planning.plans import PLANS_NAME, Plans
from usema.preprocessing.image import preprocess_image, restore_geometry
from usema.utils.device import resolve_device, resolve_precision

# Windows a half patch apart (nnU-Net's step size 0.5) blended with a Gaussian (centre-weighted) map: window
# borders, where the network sees the least context, count least.
DEFAULT_STEP_SIZE = 0.5
# Plan values that decide how an image is prepared for the network: the folds of an ensemble must agree.
PREPARATION_KEYS = ("target_spacing", "normalization", "patch_size")


def _network_with_weights(network: NetworkSpec, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Build the checkpoint's network without deep supervision and load its weights.

    A network trained with deep supervision may carry extra low-resolution output heads that inference never
    uses (USEMA keeps its heads either way; other networks may add them only with deep supervision), so the
    weights are loaded with strict=False; every other key must match exactly: a missing key, or a stray key
    that is not one of those heads, raises CheckpointError rather than leaving a layer at its random init.
    """
    model = network.build(deep_supervision=False)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even with strict=False
        raise CheckpointError(f"{path}: weights do not fit the model {network.name!r} ({err})") from err
    if result.missing_keys:
        raise CheckpointError(f"{path}: weights missing for {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        heads: set[str] = set()
        if network.deep_supervision:
            supervised = network.build(deep_supervision=True)
            heads = set(supervised.state_dict()) - set(model.state_dict())
        stray = [key for key in result.unexpected_keys if key not in heads]
        if stray:
            raise CheckpointError(
                f"{path}: weights for layers the model does not have: {', '.join(stray[:5])}"
            )
    return model.eval()


@dataclass
class Predictor:
    """Networks in eval mode on their device (one per fold; several make an ensemble), with the plans that say
    how to prepare their input. `tta` averages over every mirroring of the spatial axes; `step_size` is the
    distance between sliding windows as a fraction of the patch (nnU-Net's step size: 0.5 overlaps them by
    half)."""

    models: list[nn.Module]
    plans: Plans
    device: torch.device
    autocast_dtype: torch.dtype | None
    checkpoints: list[Path]
    tta: bool = True
    step_size: float = DEFAULT_STEP_SIZE
    # a folder of photographs that are converted (gray <-> RGB) warns once, not once per image
    _announced_conversion: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        check_step_size(self.step_size)

    def __repr__(self) -> str:
        # the dataclass's own repr prints every network in full
        folds = ", ".join(path.parent.name for path in self.checkpoints)
        return (f"Predictor({self.plans.model_name}, {self.spatial_dims}D, folds [{folds}], device {self.device}, "
                f"tta {self.tta}, step_size {self.step_size})")

    @property
    def model(self) -> nn.Module:
        """The network of a one-fold predictor."""
        if len(self.models) != 1:
            raise UsemaError(f"this predictor is an ensemble of {len(self.models)} folds; use .models")
        return self.models[0]

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.plans.spatial_dims

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax probabilities (K, *S) float32 of a preprocessed image (C, *S), by Gaussian sliding window.

        The softmax is averaged over the folds' networks and, with `tta`, over every mirroring of the spatial
        axes (2^d passes per network, each flipped back before averaging). The image and the summed results
        stay on the network's device; where they do not fit in its memory they are kept on the CPU and only the
        windows go to the device (`with_results_on_cpu_if_out_of_memory`), as nnU-Net does.
        """
        return with_results_on_cpu_if_out_of_memory(
            lambda results_device: self._probabilities(image, results_device), self.device
        )

    def _probabilities(self, image: np.ndarray, results_device: torch.device) -> np.ndarray:
        inferer = SlidingWindowInferer(
            roi_size=self.plans.patch_size,
            sw_batch_size=self.plans.batch_size,
            overlap=1.0 - self.step_size,
            mode="gaussian",
            sw_device=self.device,
            device=results_device,
        )
        spatial_axes = range(2, 2 + self.spatial_dims)
        flips = [()]
        if self.tta:
            flips = [
                axes for n in range(len(spatial_axes) + 1) for axes in itertools.combinations(spatial_axes, n)
            ]
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(results_device)
        total = None
        with torch.inference_mode(), self._autocast():
            for model in self.models:
                for axes in flips:
                    logits = inferer(torch.flip(batch, axes) if axes else batch, model)
                    probabilities = torch.softmax(logits.float(), dim=1)
                    probabilities = torch.flip(probabilities, axes) if axes else probabilities
                    total = probabilities if total is None else total + probabilities
        return (total[0] / (len(flips) * len(self.models))).float().cpu().numpy()

    def probabilities_on_input_grid(self, image: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
        """Class probabilities (K, *geometry.shape) of an input image (C, *S) as read: preprocessed as in
        training, predicted, and brought back to the input's grid."""
        prepared = preprocess_image(image, geometry, self.plans)
        return restore_geometry(self.probabilities(prepared), geometry, self.plans)

    def labels_of(self, probabilities: np.ndarray) -> np.ndarray:
        """Label map (*S) int64 of class probabilities (K, *S) in the dataset's label values: the argmax class
        as the value the plan records for it (0/255 masks give 0/255); in instance mode the classes are turned
        back into instance ids 1..N."""
        return self.labels_of_classes(probabilities.argmax(axis=0))

    def labels_of_classes(self, classes: np.ndarray) -> np.ndarray:
        """Label map (*S) int64 of a training-class map (*S): see `labels_of`."""
        info = self.plans.dataset
        if info.label_values is None:  # instance labels
            return classes_to_instances(classes)
        return to_label_values(classes, info.label_values)

    def segment(self, image: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
        """Label map (*geometry.shape) int64 of an input image (C, *S) as read (see `labels_of`)."""
        return self.labels_of(self.probabilities_on_input_grid(image, geometry))

    def read(self, paths: str | Path | Sequence[str | Path]) -> tuple[np.ndarray, ImageGeometry]:
        """An input image (one file, or one file per channel) read and checked as training read the dataset:
        its dimensions must be the model's, and only a 2D colour photograph is converted (gray <-> RGB, with a
        warning the first time)."""
        files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        image, geometry = read_image(files)
        channels = self.plans.dataset.num_channels
        check_fits_model(files[0], image.shape[0], geometry, self.spatial_dims, channels)
        converted = convert_channels(image, channels, geometry, files[0], warn=not self._announced_conversion)
        self._announced_conversion |= image.shape[0] != channels
        return converted, geometry

    def predict(
        self, image: str | Path | Sequence[str | Path] | np.ndarray, spacing: Sequence[float] | None = None
    ) -> np.ndarray:
        """The label map of one image, in its own grid: a file (or one file per channel) read as `usema
        predict` reads it, or an array or tensor (C, *S), or (*S) for one channel, whose voxel `spacing` defaults
        to the plan's target spacing (an array at the resolution the network was trained at)."""
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            return self.segment(*self.read(image))
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == self.spatial_dims:
            array = array[None]
        if array.ndim != self.spatial_dims + 1:
            raise UsemaError(
                f"an image array of shape {array.shape} for a {self.spatial_dims}D model: give "
                f"(channels, *spatial) or ({self.spatial_dims} spatial axes) for one channel"
            )
        channels = self.plans.dataset.num_channels
        # (H, W, C) is how PIL and most readers hand over a photograph: say so rather than count H channels
        last_is_channels = array.shape[-1] == channels or (self.spatial_dims == 2 and array.shape[-1] in (3, 4))
        if array.shape[0] != channels and array.shape[0] not in (1, 3, 4) and last_is_channels:
            raise UsemaError(
                f"an image array of shape {array.shape} has its channels last; the model takes (channels, "
                f"*spatial) with {channels}: pass np.moveaxis(array, -1, 0)"
            )
        spacing = list(spacing) if spacing is not None else self.plans.target_spacing
        if len(spacing) != self.spatial_dims:
            raise UsemaError(f"spacing {spacing} has {len(spacing)} values for a {self.spatial_dims}D model")
        if not all(np.isfinite(value) and value > 0 for value in spacing):
            raise UsemaError(f"spacing {spacing}: every voxel size must be a positive, finite number (mm)")
        return self.segment(array, ImageGeometry(array.shape[1:], spacing, None, "array"))


# torch.OutOfMemoryError from torch 2.5 on; torch.cuda's name for it before
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def with_results_on_cpu_if_out_of_memory(run: Callable[[torch.device], Any], device: torch.device) -> Any:
    """`run(device)`: the sliding window with the image and its results on `device`; if that runs out of the
    device's memory, `run(cpu)` again with them on the CPU (the network stays on `device`), with a warning. A
    large image's summed class probabilities can exceed a GPU's memory while every window fits."""
    try:
        return run(device)
    except OUT_OF_MEMORY:
        if device.type == "cpu":
            raise
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"the image and its results do not fit in {device} memory: they are kept on the CPU, the windows "
          f"go to {device} (slower)", file=sys.stderr, flush=True)
    return run(torch.device("cpu"))


def check_step_size(step_size: float) -> float:
    """`step_size` when it lies in (0, 1], else UsemaError (windows must overlap or touch, and move)."""
    if not 0.0 < float(step_size) <= 1.0:
        raise UsemaError(
            f"step size {step_size} is outside (0, 1]: the distance between sliding windows as a fraction of "
            "the patch (0.5: half-overlapping windows)"
        )
    return float(step_size)


def _inference_precision(plans: Plans, device: torch.device) -> torch.dtype | None:
    """The training precision where this device supports it, else the device's "auto" precision.

    A model trained in fp16 on a GPU must still run on a CPU, where fp16 autocast is refused.
    """
    try:
        return resolve_precision(plans.training.precision, device)
    except UsemaError:
        return resolve_precision("auto", device)


def _load_fold(run_dir: Path, path: Path) -> tuple[nn.Module, Plans]:
    """One fold's checkpoint as an eval-mode network on the CPU, with the plans it was trained with.

    The checkpoint must be of the model RUN/plans.json describes (name, network settings, channels, classes);
    the plans stored in the checkpoint then say how to prepare the input (RUN/plans.json for checkpoints
    without them).
    """
    run_plans = run_dir / PLANS_NAME
    if run_plans.is_file():
        # the run's plan says which model its folds hold: a checkpoint of another one (copied in, or left over
        # from an earlier run) is refused rather than used in its place
        checkpoint = Checkpoint.load(path, expected=Plans.load(run_dir).network, expected_by=run_plans)
    else:
        checkpoint = Checkpoint.load(path)
    network = checkpoint.network
    plans = checkpoint.plans or Plans.load(run_dir)
    for plan_key, model_key in (("num_channels", "in_channels"), ("num_classes", "num_classes")):
        if getattr(plans.dataset, plan_key) != getattr(network, model_key):
            raise CheckpointError(
                f"{path}: the model has {model_key}={getattr(network, model_key)} but the plans say "
                f"{plan_key}={getattr(plans.dataset, plan_key)}; the checkpoint belongs to another plan"
            )
    if plans.spatial_dims != network.spatial_dims:
        raise CheckpointError(f"{path}: a {network.spatial_dims}D model with a {plans.spatial_dims}D patch size")
    return _network_with_weights(network, checkpoint.model_state, path), plans


def load_predictor(
    run_dir: str | Path,
    checkpoint: str = "best",
    fold: int | None = None,
    folds: int | str | Sequence[int | str] | None = None,
    device: str = "auto",
    precision: str | None = None,
    tta: bool = True,
    step_size: float = DEFAULT_STEP_SIZE,
) -> Predictor:
    """Load RUN/fold_K's `checkpoint` ("best" or "latest") of `fold`, of each of `folds` (a list, or "all"),
    or of every trained fold when neither is given, into eval-mode networks on `device`: several folds predict
    as an ensemble (their softmax averaged). `precision` (auto, fp32, bf16, fp16) replaces the training
    precision; `tta` and `step_size` are the Predictor's. A fold never trained, a checkpoint of another model
    than RUN/plans.json's, or folds trained with other preprocessing raise one error naming the file.
    """
    run_dir = run_folder(run_dir)
    check_step_size(step_size)
    numbers = resolve_folds(run_dir, checkpoint, fold, folds)
    torch_device = resolve_device(device)
    models, paths, plans = [], [], None
    for number in numbers:
        path = checkpoint_path(run_dir, checkpoint, number)
        model, fold_plans = _load_fold(run_dir, path)
        if plans is None:
            plans = fold_plans
        for key in PREPARATION_KEYS:
            if getattr(fold_plans, key) != getattr(plans, key):
                raise CheckpointError(
                    f"{path}: trained with {key} {getattr(fold_plans, key)} but {paths[0]} with "
                    f"{getattr(plans, key)}; "
                    "the folds of an ensemble must prepare images alike (predict with one of them: --fold)"
                )
        models.append(model.to(torch_device))
        paths.append(path)
    return Predictor(
        models=models,
        plans=plans,
        device=torch_device,
        autocast_dtype=(
            resolve_precision(precision, torch_device)
            if precision
            else _inference_precision(plans, torch_device)
        ),
        checkpoints=paths,
        tta=tta,
        step_size=step_size,
    )

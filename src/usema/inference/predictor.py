"""A trained network ready to segment: loaded from a run's checkpoint, run by sliding window with optional TTA."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from usema.data.instances import classes_to_instances
from usema.data.io import ImageGeometry
from usema.errors import CheckpointError, UsemaError
from usema.planning.network import build_described_network
from usema.planning.plans import PLANS_NAME, Plans
from usema.preprocessing.image import preprocess_image, restore_geometry
from usema.training.checkpoint import CHECKPOINT_NAMES, load_checkpoint
from usema.utils.device import resolve_device, resolve_precision

# Half-overlapping windows blended with a Gaussian (centre-weighted) map: window borders, where the network sees
# the least context, count least.
WINDOW_OVERLAP = 0.5


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best", fold: int = 0) -> Path:
    """RUN/fold_K/checkpoint_{best,latest}.pt, as training writes it."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise UsemaError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(CHECKPOINT_NAMES)}")
    return Path(run_dir) / f"fold_{fold}" / CHECKPOINT_NAMES[checkpoint]


def _build_network(entry: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Build the checkpoint's network without deep supervision and load its weights.

    A network trained with deep supervision may carry extra low-resolution output heads that inference never
    uses (USEMA keeps its heads either way; other networks may add them only with deep supervision), so the
    weights are loaded with strict=False; every other key must match exactly: a missing key, or a stray key that
    is not one of those heads, raises CheckpointError rather than leaving a layer at its random init.
    """
    model = build_described_network(entry, deep_supervision=False)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even with strict=False
        raise CheckpointError(f"{path}: weights do not fit the model {entry['name']!r} ({err})") from err
    if result.missing_keys:
        raise CheckpointError(f"{path}: weights missing for {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        heads: set[str] = set()
        if entry.get("deep_supervision"):
            supervised = build_described_network(entry, deep_supervision=True)
            heads = set(supervised.state_dict()) - set(model.state_dict())
        stray = [key for key in result.unexpected_keys if key not in heads]
        if stray:
            raise CheckpointError(
                f"{path}: weights for layers the model does not have: {', '.join(stray[:5])}"
            )
    return model.eval()


@dataclass
class Predictor:
    """A network in eval mode on its device, with the plans that say how to prepare its input."""

    model: nn.Module
    plans: Plans
    device: torch.device
    autocast_dtype: torch.dtype | None
    checkpoint: Path

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.plans.spatial_dims

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Softmax probabilities (K, *S) float32 of a preprocessed image (C, *S), by Gaussian sliding window.

        With `tta`, the softmax is averaged over every mirroring of the spatial axes (2^d passes), each flipped
        back before averaging.
        """
        inferer = SlidingWindowInferer(
            roi_size=self.plans.patch_size,
            sw_batch_size=self.plans.batch_size,
            overlap=WINDOW_OVERLAP,
            mode="gaussian",
        )
        spatial_axes = range(2, 2 + self.spatial_dims)
        flips = [()]
        if tta:
            flips = [
                axes for n in range(len(spatial_axes) + 1) for axes in itertools.combinations(spatial_axes, n)
            ]
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(self.device)
        total = None
        with torch.inference_mode(), self._autocast():
            for axes in flips:
                logits = inferer(torch.flip(batch, axes) if axes else batch, self.model)
                probabilities = torch.softmax(logits.float(), dim=1)
                probabilities = torch.flip(probabilities, axes) if axes else probabilities
                total = probabilities if total is None else total + probabilities
        return (total[0] / len(flips)).float().cpu().numpy()

    def segment(self, image: np.ndarray, geometry: ImageGeometry, tta: bool = False) -> np.ndarray:
        """Label map (*geometry.shape) int64 of an input image (C, *S) as read: preprocessed as in training,
        predicted, probabilities restored to the input's grid, then argmax. Training classes are the label
        values (semantic, binary); in instance mode the classes are turned back into instance ids 1..N."""
        probabilities = self.probabilities(preprocess_image(image, geometry, self.plans), tta=tta)
        classes = restore_geometry(probabilities, geometry, self.plans).argmax(axis=0)
        if self.plans.dataset.label_mode == "instance":
            return classes_to_instances(classes)
        return classes.astype(np.int64)


def _inference_precision(plans: Plans, device: torch.device) -> torch.dtype | None:
    """The training precision where this device supports it, else the device's "auto" precision.

    A model trained in fp16 on a GPU must still run on a CPU, where fp16 autocast is refused.
    """
    try:
        return resolve_precision(plans.training.precision, device)
    except UsemaError:
        return resolve_precision("auto", device)


def load_predictor(
    run_dir: str | Path,
    checkpoint: str = "best",
    fold: int = 0,
    device: str = "auto",
    precision: str | None = None,
) -> Predictor:
    """Load RUN/fold_K's checkpoint into an eval-mode network on `device`, with the plans it was trained with.
    `precision` (auto, fp32, bf16, fp16) replaces the training precision for inference.

    The checkpoint must be of the model RUN/plans.json describes (name, network settings, channels, classes);
    the plans stored in the checkpoint then say how to prepare the input (RUN/plans.json for checkpoints without
    them).
    """
    path = checkpoint_path(run_dir, checkpoint, fold)
    if not path.is_file():
        found = sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).glob("fold_*/checkpoint_*.pt"))
        raise CheckpointError(
            f"{path}: checkpoint not found; "
            + (f"this run has {', '.join(found)}" if found else "train this fold first (usema train)")
        )
    run_plans = Path(run_dir) / PLANS_NAME
    if run_plans.is_file():
        # the run's plan says which model its folds hold: a checkpoint of another one (copied in, or left over
        # from an earlier run) is refused rather than used in its place
        payload = load_checkpoint(
            path, expected_model=Plans.load(run_dir).network_description(), expected_by=run_plans
        )
    else:
        payload = load_checkpoint(path)
    entry = payload["model"]
    plans = Plans(payload["plans"], path) if payload.get("plans") else Plans.load(run_dir)
    for plan_key, model_key in (("num_channels", "in_channels"), ("num_classes", "num_classes")):
        if getattr(plans.dataset, plan_key) != int(entry[model_key]):
            raise CheckpointError(
                f"{path}: the model has {model_key}={entry[model_key]} but the plans say "
                f"{plan_key}={getattr(plans.dataset, plan_key)}; the checkpoint belongs to another plan"
            )
    if plans.spatial_dims != int(entry["spatial_dims"]):
        raise CheckpointError(
            f"{path}: a {entry['spatial_dims']}D model with a {plans.spatial_dims}D patch size"
        )
    torch_device = resolve_device(device)
    model = _build_network(entry, payload["model_state"], path).to(torch_device)
    return Predictor(
        model=model,
        plans=plans,
        device=torch_device,
        autocast_dtype=(
            resolve_precision(precision, torch_device)
            if precision
            else _inference_precision(plans, torch_device)
        ),
        checkpoint=path,
    )

"""Validation during training: whole preprocessed cases by Gaussian sliding window, Dice per foreground class."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from monai.inferers import SlidingWindowInferer
from monai.metrics import get_confusion_matrix
from monai.networks.utils import one_hot
from torch import nn

from usema.preprocessing.storage import PreprocessedCase

WINDOW_OVERLAP = 0.5


def highest_resolution(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The full-resolution logits of a network output (deep supervision returns a list, highest first)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def confusion_counts(
    model: nn.Module,
    cases: Sequence[PreprocessedCase],
    patch_size: Sequence[int],
    num_classes: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
    ignore_label: int | None = None,
) -> torch.Tensor | None:
    """Summed (num_classes - 1, 4) true positive, false positive, true negative, false negative voxel counts of
    the foreground classes over `cases`, predicted whole by sliding window; None if `should_stop()` said so.
    Voxels labelled `ignore_label` count for no class (as background in both prediction and reference).
    """
    inferer = SlidingWindowInferer(
        roi_size=[int(s) for s in patch_size],
        sw_batch_size=max(1, batch_size),
        overlap=WINDOW_OVERLAP,
        mode="gaussian",
    )
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype
        else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    totals = torch.zeros(num_classes - 1, 4, dtype=torch.float64)
    try:
        for case in cases:
            if should_stop():
                return None
            image = torch.from_numpy(case.read_image()).float()[None].to(device)
            with torch.no_grad(), autocast:
                logits = inferer(image, lambda x: highest_resolution(model(x)))
            prediction = logits.argmax(dim=1).cpu()
            reference = torch.from_numpy(case.read_label()).long()[None]
            if ignore_label is not None:
                ignored = reference == ignore_label
                prediction, reference = prediction.masked_fill(ignored, 0), reference.masked_fill(ignored, 0)
            # uint8 one-hot maps: torch's int64 one_hot holds 8x the memory on a volume
            counts = get_confusion_matrix(
                one_hot(prediction[:, None], num_classes, dtype=torch.uint8),
                one_hot(reference[:, None], num_classes, dtype=torch.uint8),
                include_background=False,
            )
            totals += counts[0].double()
    finally:
        model.train(was_training)
    return totals


def dice_per_class(counts: torch.Tensor) -> list[float]:
    """Dice of each class from pooled counts, 2TP / (2TP + FP + FN); a class absent from both reference and
    prediction in every case scores 1 (as the evaluation stage scores an empty mask pair)."""
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 3]
    denominator = 2 * tp + fp + fn
    dice = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.ones_like(tp))
    return [float(v) for v in dice]

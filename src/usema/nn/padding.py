"""Any input size for networks that need multiples of their total stride: pad at the end, crop back after.

MONAI's `DivisiblePad` pads arrays in preprocessing; here the padding is part of the forward pass (on batched
tensors, kept in the autograd graph) and the crop must also handle deep-supervision outputs at lower resolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


# Shape arithmetic in integers only: sizes may be symbolic (torch.export, torch.compile with dynamic shapes),
# where math.ceil of a true division or int() would fix the graph to one input size.
def ceil_div(size: int, divisor: int) -> int:
    """`size` / `divisor` rounded up, in integers (both positive)."""
    # no floor division of a negative number: the TorchScript-based ONNX exporter writes // as ONNX's Div,
    # which rounds toward zero
    return (size + divisor - 1) // divisor


def exporting() -> bool:
    """Whether the model is being traced for export: by torch.jit.trace (TorchScript, and the TorchScript-based
    ONNX exporter) or by torch.export.

    Sizes are then traced (or symbolic) values, and a Python branch on one (is there padding? is the map
    smaller than the window?) would fix the graph to the example's case. Code that branches on sizes takes
    its general path while exporting instead (pad, crop and mask even by nothing), which computes the same
    values for every size, so that the graph takes other sizes than the example's.
    """
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return torch.jit.is_tracing() or bool(is_exporting and is_exporting())


def spatial_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """`sizes` as a tuple of ints, keeping symbolic sizes (torch.SymInt) symbolic and traced ones (0-dim
    tensors under torch.jit.trace) traced: int() would fix them to the example's."""
    if torch.jit.is_tracing():
        return tuple(sizes)
    return tuple(s if isinstance(s, torch.SymInt) else int(s) for s in sizes)


def padded_size(size: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """`size` rounded up, per axis, to a multiple of `multiple`."""
    return tuple(ceil_div(s, m) * m for s, m in zip(size, multiple, strict=True))


def pad_to_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the spatial axes of `x` (batch, channels, *spatial) at their end up to `size`."""
    pad: list[int] = []
    general = exporting()  # no branch on symbolic sizes (see `exporting`)
    for have, want in zip(reversed(x.shape[2:]), reversed(tuple(size)), strict=True):
        if not general and want < have:
            raise ValueError(f"cannot pad size {tuple(x.shape[2:])} down to {tuple(size)}")
        pad += [0, want - have]
    return F.pad(x, pad) if general or any(pad) else x


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Zero-pad the spatial axes of `x` at their end to multiples of `multiple` (one per axis)."""
    return pad_to_size(x, padded_size(x.shape[2:], multiple))


def total_stride(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per-axis product of per-stage strides."""
    return tuple(math.prod(axis) for axis in zip(*strides, strict=True))


def crop_outputs(outputs: Sequence[torch.Tensor], size: Sequence[int],
                 strides: Sequence[Sequence[int]] | None = None) -> list[torch.Tensor]:
    """Crop outputs computed on a padded input back to the input `size`.

    `outputs` are ordered highest resolution first; output k is at the resolution of decoder level k, i.e.
    downsampled by the product of `strides[1..k]` (per-stage strides, stage 0 first; only needed for k > 0).
    It keeps ceil(size / scale) voxels per axis, the part that covers the unpadded input.
    """
    cropped = []
    scale = [1] * len(size)
    for level, out in enumerate(outputs):
        if level > 0:
            if strides is None:
                raise ValueError("strides are needed to crop lower-resolution (deep supervision) outputs")
            scale = [sc * st for sc, st in zip(scale, strides[level], strict=True)]
        keep = [ceil_div(s, sc) for s, sc in zip(size, scale, strict=True)]
        cropped.append(out[(slice(None), slice(None), *(slice(0, k) for k in keep))])
    return cropped

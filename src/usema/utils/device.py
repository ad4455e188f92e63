"""Where to run and in which precision: one rule shared by training and inference.

Precision rules ("auto"):
- CPU: fp32. bf16 autocast is available on request (`precision="bf16"`); fp16 is refused on CPU.
- CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16 (the caller then needs a GradScaler).
"""

from __future__ import annotations

import torch

from usema.errors import UsemaError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsemaError(
                f"device {device!r} asked for, but CUDA is not available here (use --device cpu)"
            )
        return torch.device(name)
    raise UsemaError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}")


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32 (see the module docstring)."""
    name = (precision or "auto").lower()
    if name not in PRECISION_CHOICES:
        raise UsemaError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISION_CHOICES)}")
    is_cuda = torch.device(device).type == "cuda"
    if name == "fp32":
        return None
    if name == "auto":
        if not is_cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "bf16":
        if is_cuda and not torch.cuda.is_bf16_supported():
            raise UsemaError("precision bf16 asked for, but this GPU does not support bfloat16 (use fp16)")
        return torch.bfloat16
    if not is_cuda:
        raise UsemaError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16

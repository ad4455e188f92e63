"""Where to run and in which precision: one rule shared by training and inference.

Precision rules ("auto"):
- CPU: fp32. bf16 autocast is available on request (`precision="bf16"`), with a warning where the CPU lacks
  oneDNN's bfloat16 kernels (AVX512/AMX): there PyTorch falls back to reference convolutions, many times slower
  than fp32 (benchmarks/efficiency has the bf16 rows of an AVX2 CPU). fp16 is refused on CPU.
- CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16 (the caller then needs a GradScaler).
"""

from __future__ import annotations

import warnings

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
        if not is_cuda and not cpu_has_fast_bf16():
            warnings.warn(
                "bf16 autocast on a CPU without oneDNN bfloat16 kernels (needs AVX512 or AMX; this one has "
                f"{torch.backends.cpu.get_cpu_capability()}): convolutions fall back to slow reference code, "
                "many times slower than fp32",
                RuntimeWarning,
                stacklevel=2,
            )
        return torch.bfloat16
    if not is_cuda:
        raise UsemaError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (without them bf16 convolutions are reference code)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private op: absent from some builds
        return False

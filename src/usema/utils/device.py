"""Where to run and in which precision: one rule shared by training and inference.

Precision rules ("auto"):
- CPU: bf16 autocast where the CPU has native bfloat16 instructions (AVX512-BF16 or AMX-BF16), which oneDNN's
  bf16 kernels need to be fast; fp32 elsewhere. On an AVX512-BF16 CPU a compact 3D USEMA training step took
  0.6 of its fp32 time (benchmarks/efficiency-compact); on an AVX2 CPU PyTorch falls back to reference
  convolutions, many times slower than fp32, and asking for bf16 there warns. fp16 is refused on CPU.
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


def device_kind(device: str | torch.device = "auto") -> str:
    """"cpu" or "cuda": the kind of device "auto" (the one present), "cpu", "cuda" or "cuda:N" names. Unlike
    `resolve_device` it does not need the device to be here: a plan may be made on a CPU node for a GPU."""
    name = str(device).lower()
    if name == "auto":
        return resolve_device("auto").type
    if name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name[:4] if name.startswith("cuda") else name
    raise UsemaError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def precision_name(dtype: torch.dtype | None) -> str:
    """The option name (fp32, bf16, fp16) of an autocast dtype that `resolve_precision` returned."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


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
            return torch.bfloat16 if cpu_has_fast_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "bf16":
        if is_cuda and not torch.cuda.is_bf16_supported():
            raise UsemaError("precision bf16 asked for, but this GPU does not support bfloat16 (use fp16)")
        if not is_cuda and not cpu_has_fast_bf16():
            warnings.warn(
                "bf16 autocast on a CPU without native bfloat16 instructions (AVX512-BF16 or AMX; this one has "
                f"{torch.backends.cpu.get_cpu_capability()}): bf16 kernels are emulated or fall back to reference "
                "code, slower than fp32",
                RuntimeWarning,
                stacklevel=2,
            )
        return torch.bfloat16
    if not is_cuda:
        raise UsemaError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bfloat16 instructions (AVX512-BF16 or AMX-BF16) for oneDNN's bf16 kernels.

    oneDNN also accepts bf16 on AVX512 CPUs without them, emulated and not faster than fp32, and on AVX2 CPUs
    PyTorch runs bf16 convolutions in slow reference code."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.6
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags

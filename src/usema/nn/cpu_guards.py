"""Guards around CPU kernels that are known to be broken, applied to whole networks.

PyTorch 2.13 on AVX512 CPUs corrupts the heap (SIGSEGV or SIGABRT, sometimes later and elsewhere) in the
backward of a strided 1x1 convolution whose input is channels-last: seen with 2 to 15 input channels and 16
output channels in 2D (`Conv2d(8, 16, 1, stride=2)` on a channels-last (2, 8, 64, 64) input), not with 16 or
more input channels, nor with stride 1, nor in 3D. USEMA meets it because its SEMA blocks hand their output on
channels-last and the next stage's residual block projects its shortcut with exactly such a conv. A user cannot
work around it, so every such conv gets its CPU input in the default layout; the copy is of one feature map
per stage, and the set of broken shapes is not known well enough to narrow the guard further.
"""

from __future__ import annotations

from torch import nn


def _contiguous_cpu_input(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0]
    if x.device.type == "cpu" and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def is_strided_pointwise_conv(module: nn.Module) -> bool:
    """A convolution with a 1^d kernel and a stride above 1 along some axis."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and not module.transposed
        and all(k == 1 for k in module.kernel_size)
        and any(s > 1 for s in module.stride)
    )


def guard_strided_pointwise_convs(network: nn.Module) -> int:
    """Give every strided 1x1 conv of `network` its CPU input in the default (contiguous) layout.

    Returns how many convs were guarded. Idempotent: a conv that is already guarded is left as it is.
    """
    guarded = 0
    for module in network.modules():
        if is_strided_pointwise_conv(module) and not getattr(module, "_usema_cpu_guard", False):
            module.register_forward_pre_hook(_contiguous_cpu_input)
            module._usema_cpu_guard = True
            guarded += 1
    return guarded


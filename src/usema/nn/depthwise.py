"""Depthwise convolutions for the SEMA block, with a fast backward for 3D maps on CPU.

PyTorch's CPU backward of a depthwise 3D convolution (torch 2.13) does not use oneDNN: it ran 25-50x slower
than the forward (14 ms against 0.5 ms for a (4, 32, 20, 28, 20) channels-last map, 75 ms against 2.7 ms at
(4, 16, 40, 56, 40)), so the SEMA block's four depthwise convolutions cost more than its attention. Its two
parts are written here from fast kernels: the input gradient is the forward convolution of the output gradient
with the flipped kernel, and the weight gradient is a sum over depth offsets of 2D depthwise weight
gradients, whose oneDNN kernel is fast, computed on slices that are views of the channels-last map. Together
about 6x faster at those sizes; 1D and 2D convolutions and other devices keep PyTorch's own kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _depth_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: tuple[int, ...], padding: tuple[int, ...]
                       ) -> torch.Tensor:
    """Weight gradient (C, 1, kd, kh, kw) of a stride-1 depthwise conv3d, from channels-last x and grad."""
    channels, depth = x.shape[1], x.shape[2]
    template = x.new_empty(channels, 1, *kernel[1:])
    slabs = []
    for offset in range(kernel[0]):
        shift = offset - padding[0]  # output depth d reads input depth d + shift
        first, last = max(0, -shift), min(depth, depth - shift)
        total = torch.zeros_like(template)
        for n in range(x.shape[0]):
            if last <= first:
                break
            # (C, D', H, W) -> (D', C, H, W): a channels-last 2D batch, a view of the channels-last 3D map
            x_slab = x[n, :, first + shift : last + shift].transpose(0, 1)
            g_slab = grad[n, :, first:last].transpose(0, 1)
            total += torch.ops.aten.convolution_backward(
                g_slab, x_slab, template, None, [1, 1], list(padding[1:]), [1, 1], False, [0, 0], channels,
                [False, True, False],
            )[1]
        slabs.append(total)
    return torch.stack(slabs, dim=2)


class _DepthwiseConv3dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        x = x.contiguous(memory_format=torch.channels_last_3d)
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv3d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv3d(grad, weight.flip(2, 3, 4), padding=ctx.padding, groups=x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = _depth_weight_grad(x, grad, tuple(weight.shape[2:]), ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv3d(nn.Conv3d):
    """A depthwise, stride-1, size-keeping 3D convolution (odd kernel); on CPU with its fast backward.

    Under CPU autocast it runs in fp32: bf16 gave the depthwise 3D convolution no speed there.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled() or torch.jit.is_tracing():
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return _DepthwiseConv3dFunction.apply(x.float() if x.dtype != torch.float64 else x, self.weight,
                                                  self.bias, self.padding)


def depthwise_conv(spatial_dims: int, channels: int, kernel_size: int = 3) -> nn.Module:
    """A size-keeping depthwise convolution over `spatial_dims` axes."""
    if spatial_dims == 3:
        return DepthwiseConv3d(channels, kernel_size)
    conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
    return conv(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

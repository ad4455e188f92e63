"""The depthwise 3D convolution's hand-written CPU backward against PyTorch's own."""

import pytest
import torch
import torch.nn.functional as F

from usema.nn.depthwise import DepthwiseConv3d, depthwise_conv


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 2, 1, 3, 3), (2, 2, 2, 4, 3)])
def test_gradcheck_including_maps_thinner_than_the_kernel(shape):
    torch.manual_seed(0)
    conv = DepthwiseConv3d(shape[1], 3).double()  # on CPU with gradients: its own backward
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(shape[1], 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: torch.func.functional_call(conv, {"weight": w, "bias": b}, (a,)), (x, weight, bias)
    )


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_gradients_match_pytorch_on_channels_last_maps(kernel_size):
    torch.manual_seed(1)
    ours = DepthwiseConv3d(6, kernel_size)
    reference = torch.nn.Conv3d(6, 6, kernel_size, padding=kernel_size // 2, groups=6)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, 7, 9, 5).contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn(3, 6, 7, 9, 5)
    results = []
    for conv in (ours, reference):
        leaf = x.clone().requires_grad_()
        out = conv(leaf)
        out.backward(grad)
        results.append((out, leaf.grad, conv.weight.grad, conv.bias.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_runs_in_fp32_under_cpu_autocast_and_other_dims_keep_pytorch_convs():
    conv = DepthwiseConv3d(4)
    x = torch.randn(1, 4, 5, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.float32
    expected = F.conv3d(x, conv.weight, conv.bias, padding=1, groups=4)
    torch.testing.assert_close(out, expected)
    assert type(depthwise_conv(2, 4)) is torch.nn.Conv2d and type(depthwise_conv(3, 4)) is DepthwiseConv3d
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv3d(4, 2)

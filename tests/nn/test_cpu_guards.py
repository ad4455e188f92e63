"""The guard against PyTorch's heap-corrupting strided 1x1 conv backward on channels-last CPU input."""

import subprocess
import sys
import textwrap

import torch
from torch import nn

from usema.models import build_model
from usema.nn.cpu_guards import guard_strided_pointwise_convs, is_strided_pointwise_conv

# The smallest 2D USEMA with 8 channels in a SEMA stage: its SEMA block hands a channels-last map with 8
# channels to stage 1, whose shortcut is Conv2d(8, 16, 1, stride=2). Unguarded, this aborted with
# "double free or corruption" on an AVX512 CPU with torch 2.13; in a child process, so that a crash fails
# this test instead of killing the test run.
TRAIN_SMALLEST_2D_USEMA = textwrap.dedent("""
    import torch
    from usema.models import build_model
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = build_model("usema", 2, 1, 2, base_features=8, n_stages=2, blocks_per_stage=1, head_dim=8)
    optimizer = torch.optim.AdamW(net.parameters(), 3e-3)
    x = torch.randn(2, 1, 64, 64)
    y = (x[:, 0] > 0).long()
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(losses[0], losses[-1])
""")


def test_smallest_2d_usema_with_8_channels_in_a_sema_stage_trains():
    result = subprocess.run([sys.executable, "-c", TRAIN_SMALLEST_2D_USEMA], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"training crashed (rc {result.returncode}): {result.stderr[-2000:]}"
    first, last = (float(v) for v in result.stdout.split())
    assert last < first


def test_usema_guards_exactly_its_strided_pointwise_convs():
    net = build_model("usema", 2, 1, 2, base_features=8, n_stages=3, blocks_per_stage=1, head_dim=8)
    guarded = [m for m in net.modules() if getattr(m, "_usema_cpu_guard", False)]
    # one shortcut projection per downsampling stage
    assert len(guarded) == 2
    assert all(is_strided_pointwise_conv(m) for m in guarded)
    assert guard_strided_pointwise_convs(net) == 0  # idempotent


def test_guarded_conv_sees_contiguous_input_and_computes_the_same():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 1, stride=2)
    x = torch.randn(2, 8, 12, 10)
    expected = conv(x)
    assert guard_strided_pointwise_convs(nn.Sequential(conv, nn.Conv2d(16, 16, 3, stride=2), nn.Conv2d(16, 4, 1))) == 1
    seen = []
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    out = conv(x.contiguous(memory_format=torch.channels_last))
    assert seen == [True]  # the guard ran first and handed on the default layout
    torch.testing.assert_close(out, expected)

"""Export of a tiny conv net: the exported files reproduce the eager model's output."""

import numpy as np
import pytest
import torch
from torch import nn

from usema.inference.export import export_onnx, export_torchscript


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm with non-trivial running statistics: an export left in training mode would give other outputs.
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 16, 16) * 3 + 1)
    return net


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_torchscript_matches_eager_and_restores_mode(tmp_path):
    net = _tiny_net()
    example = torch.randn(1, 1, 16, 16)
    path = export_torchscript(net, example, tmp_path / "sub" / "model.pt")
    assert path.is_file() and net.training  # training flag restored
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    net.eval()
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(example), net(example))


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_export_onnx_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = _tiny_net()
    example = torch.randn(1, 1, 16, 16)
    path = export_onnx(net, example, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    net.eval()
    for batch in (example, torch.randn(3, 1, 16, 16)):  # the batch axis is dynamic
        (result,) = session.run(None, {"image": batch.numpy()})
        with torch.no_grad():
            expected = net(batch).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)

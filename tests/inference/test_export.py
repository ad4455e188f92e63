"""Export of a tiny conv net and small USEMAs: the exported files reproduce the eager model's output, USEMA's at
any batch and spatial size."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from usema.inference.export import SPATIAL_AXIS_NAMES, export_onnx, export_torchscript
from usema.models import build_model


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


def test_export_onnx_of_a_network_without_any_size_keeps_the_example_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = _tiny_net().eval()
    fixed = ort.InferenceSession(str(export_onnx(net, torch.randn(1, 1, 16, 16), tmp_path / "fixed.onnx")))
    assert fixed.get_inputs()[0].shape == ["batch", 1, 16, 16]
    # a size the graph cannot take: onnxruntime says which axis and what it expected
    with pytest.raises(Exception, match=r"(?s)invalid dimensions.*index: 2 Got: 20 Expected: 16"):
        fixed.run(None, {"image": np.zeros((1, 1, 20, 16), np.float32)})
    # the same net, said to take any size: traced with dynamic spatial axes
    path = export_onnx(net, torch.randn(1, 1, 16, 16), tmp_path / "any.onnx", any_size=True)
    session = ort.InferenceSession(str(path))
    assert session.get_inputs()[0].shape == ["batch", 1, "height", "width"]
    image = torch.randn(2, 1, 20, 24)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], net(image).numpy(),
                                   rtol=1e-4, atol=1e-5)


def _small_usema(spatial_dims: int) -> nn.Module:
    torch.manual_seed(0)
    # window 7 (2D) / 5 (3D) on stage maps that it does not tile, and in 3D a deepest map (4x5x5 at the export
    # size) shorter than the window along one axis, where the eager network shrinks the window to the map
    return build_model("usema", spatial_dims, 1, 3, base_features=8, n_stages=3, head_dim=8).eval()


# (export size, other sizes): larger ones, in one axis or all, by multiples of the total stride and not
EXPORT_SIZES = {
    2: ((32, 32), [(32, 32), (64, 32), (56, 48), (45, 38), (20, 13)]),
    3: ((16, 20, 20), [(16, 20, 20), (32, 20, 20), (24, 40, 28), (13, 22, 17)]),
}


def _check_onnx_at_sizes(model: nn.Module, export_size: tuple[int, ...], sizes, path: Path) -> None:
    """Export `model` on one image of `export_size`, then compare onnxruntime with eager at `sizes`, batch 1 and
    2 in turn."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    export_onnx(model, torch.randn(1, 1, *export_size), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = list(SPATIAL_AXIS_NAMES[len(export_size)])
    assert session.get_inputs()[0].shape == ["batch", 1, *names]
    assert session.get_outputs()[0].shape == ["batch", 3, *names]
    for i, size in enumerate(sizes):
        image = torch.randn(1 + i % 2, 1, *size)
        (logits,) = session.run(["logits"], {"image": image.numpy()})
        with torch.no_grad():
            expected = model(image).numpy()
        assert logits.shape == (image.shape[0], 3, *size)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4, err_msg=f"size {size}")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_usema_onnx_takes_any_batch_and_spatial_size(spatial_dims, tmp_path):
    export_size, sizes = EXPORT_SIZES[spatial_dims]
    _check_onnx_at_sizes(_small_usema(spatial_dims), export_size, sizes, tmp_path / "usema.onnx")


def test_nnunet_onnx_takes_any_batch_and_spatial_size(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    torch.manual_seed(0)
    model = build_model("nnunet", 2, 1, 3, n_stages=3, base_features=8).eval()
    _check_onnx_at_sizes(model, (32, 32), [(32, 32), (64, 48), (45, 38)], tmp_path / "nnunet.onnx")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_usema_torchscript_takes_any_batch_and_spatial_size(tmp_path):
    model = _small_usema(2)
    loaded = torch.jit.load(str(export_torchscript(model, torch.randn(1, 1, 32, 32), tmp_path / "usema.pt")))
    for image in (torch.randn(1, 1, 32, 32), torch.randn(2, 1, 56, 48), torch.randn(1, 1, 45, 38)):
        with torch.no_grad():
            torch.testing.assert_close(loaded(image), model(image), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tracing_usema_fixes_no_size_in_usemas_code(recwarn):
    # A Python branch on a traced size, or int() of one, warns while tracing and ties the graph to the example;
    # only torch's own input checks (instance norm) may warn.
    import usema

    model = _small_usema(3)
    warnings.simplefilter("always", torch.jit.TracerWarning)
    with torch.no_grad():
        torch.jit.trace(model, torch.randn(1, 1, 16, 20, 20), check_trace=False)
    package = str(Path(usema.__file__).parent)
    frozen = [f"{w.filename}:{w.lineno}: {w.message}" for w in recwarn
              if issubclass(w.category, torch.jit.TracerWarning) and w.filename.startswith(package)]
    assert frozen == []

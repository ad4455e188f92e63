"""USEMA-2D exports: TorchScript, torch.export, and ONNX checked against onnxruntime."""

import pytest
import torch

from usema.models import build_model


@pytest.fixture(scope="module")
def model_and_input():
    torch.manual_seed(0)
    model = build_model("usema", 2, 1, 3, base_features=8, n_stages=3, head_dim=8).eval()
    return model, torch.randn(1, 1, 45, 38)


def test_torchscript_trace(model_and_input, tmp_path):
    model, x = model_and_input
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        traced.save(str(tmp_path / "usema2d.pt"))
        loaded = torch.jit.load(str(tmp_path / "usema2d.pt"))
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export(model_and_input):
    model, x = model_and_input
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_matches_onnxruntime(model_and_input, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, x = model_and_input
    path = tmp_path / "usema2d.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape == (1, 3, 45, 38)
    assert abs(got - expected).max() < 1e-4

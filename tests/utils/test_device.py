"""Device and precision choice shared by training and inference."""

from pathlib import Path

import pytest
import torch

from usema.errors import UsemaError
from usema.utils import device as device_module
from usema.utils.device import precision_name, resolve_device, resolve_precision

CPU = torch.device("cpu")


def test_auto_picks_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU
    assert resolve_device(torch.device("cpu")) == CPU


def test_unknown_or_unavailable_devices_are_user_errors():
    with pytest.raises(UsemaError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsemaError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cpu_precision_rules(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", CPU) is None
    assert resolve_precision(None, CPU) is None
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", CPU) is torch.bfloat16  # native bf16 instructions: bf16 by default
    assert resolve_precision("fp32", CPU) is None
    with pytest.raises(UsemaError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UsemaError, match="unknown precision"):
        resolve_precision("fp8", CPU)
    # the option names back from the dtypes, as predict records them
    assert [precision_name(resolve_precision(name, CPU)) for name in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert precision_name(torch.float16) == "fp16"


def test_cpu_bf16_warns_only_without_onednn_bf16_kernels(monkeypatch):
    import warnings

    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bfloat16 instructions"):
        assert resolve_precision("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) is torch.bfloat16


def test_fast_bf16_check_reads_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text().split()
    assert device_module.cpu_has_fast_bf16() is ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_precision_is_bf16_where_supported_else_fp16():
    cuda = torch.device("cuda")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_precision("auto", cuda) is expected
    assert resolve_precision("fp16", cuda) is torch.float16

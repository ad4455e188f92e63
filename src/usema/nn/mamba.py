"""U-Mamba's token mixer: LayerNorm, then one Mamba block over the flattened voxels of a feature map.

The Mamba block is mambapy's (`MambaBlock`, pure PyTorch, parallel scan), whose parameters carry the same
names as mamba_ssm's `Mamba`. On CUDA, when mamba_ssm is importable, the selective scan runs in its fused
kernel instead; the parameters are the same either way, so a checkpoint moves between CPU and GPU.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn


def _cuda_selective_scan():
    """mamba_ssm's fused selective scan, or None where it is not installed (CPU-only machines)."""
    try:
        module = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except ImportError:
        return None
    return getattr(module, "selective_scan_fn", None)


class MambaLayer(nn.Module):
    """LayerNorm -> Mamba over the C-dimensional tokens of a (batch, C, *spatial) map, in raster order.

    As in U-Mamba, the layer runs in fp32 with autocast off (the scan is unstable in half precision) and its
    output replaces the input (U-Mamba's `MambaLayer` has no residual connection); `residual=True` adds one.

    Args:
        channels: token width C (the Mamba block's d_model).
        d_state / d_conv / expand: Mamba's state size, causal conv width and inner expansion (U-Mamba: 16, 4, 2).
        residual: add the input to the output.
    """

    def __init__(self, channels: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 residual: bool = False):
        super().__init__()
        try:
            from mambapy.mamba import MambaBlock, MambaConfig
        except ImportError as err:  # an optional dependency: the U-Mamba baselines only
            raise ImportError("the U-Mamba baselines need mambapy: pip install 'usema[baselines]'") from err
        self.channels, self.residual = channels, residual
        self.norm = nn.LayerNorm(channels)
        config = MambaConfig(d_model=channels, n_layers=1, d_state=d_state, d_conv=d_conv, expand_factor=expand)
        self.mamba = MambaBlock(config)
        self._cuda_scan = _cuda_selective_scan()
        if self._cuda_scan is not None:
            self.mamba.selective_scan_cuda = self._cuda_scan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_shape = x.shape[2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            tokens = x.float().flatten(2).transpose(1, 2)  # (B, N, C)
            # mambapy picks its scan from this flag at every call: the fused kernel on CUDA tensors only
            self.mamba.config.use_cuda = tokens.is_cuda and self._cuda_scan is not None
            out = self.mamba(self.norm(tokens))
            out = out.transpose(1, 2).reshape(x.shape[0], self.channels, *spatial_shape)
            if self.residual:
                out = out + x.float()
        return out.to(x.dtype)

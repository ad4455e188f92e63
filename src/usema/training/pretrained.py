"""`usema train --pretrained-weights CKPT`: start from another run's weights wherever they fit.

Every tensor of the checkpoint whose name and shape match one of the network's is copied; the rest keep their
initialisation (typically the output heads, when the classes differ, as nnU-Net's fine-tuning does). The file
may be a usema checkpoint (`model_state`), an nnU-Net checkpoint (`network_weights`), a `{"state_dict": ...}`
file or a bare state dict; names saved by DistributedDataParallel ("module.") or torch.compile ("_orig_mod.")
are matched without those prefixes. nnU-Net's checkpoint_final.pth is read as safely as a usema checkpoint
(weights_only, with the numpy scalars and arrays of its training log allowed and nothing else), and the
weights of nnU-Net's residual-encoder UNet are renamed to USEMA's by structure (`nnunet_resenc_names`).

Weights of which less than half fit the network are refused unless forced: they are another model's, and
training would start from its initialisation while the user believes it starts from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usema.checkpoint import read_checkpoint_file
from usema.errors import CheckpointError

_WEIGHT_ENTRIES = ("model_state", "network_weights", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Skipped tensors are listed one by one up to this many; beyond it the summary line alone.
LISTED_SKIPS = 10


def _numpy_globals() -> list:
    """The numpy types of nnU-Net's checkpoints (its training log holds numpy scalars): rebuilding them runs
    no code of the file's choosing. Named in numpy 2 (numpy._core) and numpy 1 (numpy.core)."""
    core = getattr(np, "_core", None) or np.core
    names = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType")
    dtypes = [getattr(np.dtypes, name) for name in names if hasattr(getattr(np, "dtypes", None), name)]
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def read_checkpoint_allowing_numpy(path: Path):
    """`read_checkpoint_file` with the numpy types of nnU-Net's checkpoints allowed (`_numpy_globals`)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch 2.4 has the global allow-list only
        torch.serialization.add_safe_globals(_numpy_globals())
        return read_checkpoint_file(path)
    with safe_globals(_numpy_globals()):
        return read_checkpoint_file(path)


def _state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    # a file of any of the formats of the module docstring, not only a usema checkpoint: its weights are looked
    # for under each format's entry rather than read through usema.checkpoint.Checkpoint
    tensors = read_checkpoint_allowing_numpy(path)
    if isinstance(tensors, dict):
        weights = [tensors.get(entry) for entry in _WEIGHT_ENTRIES]
        tensors = next((found for found in weights if isinstance(found, dict)), tensors)
    tensors = tensors if isinstance(tensors, dict) else {}
    state = {}
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            for prefix in _WRAPPER_PREFIXES:
                name = name.removeprefix(prefix)
            state[str(name)] = value
    if not state:
        raise CheckpointError(
            f"{path}: holds no network weights (no tensors under {', '.join(_WEIGHT_ENTRIES)})"
        )
    return state


# nnU-Net's residual-encoder UNet (dynamic_network_architectures) against USEMA (usema/models/usema.py): each
# USEMA conv with its norm, and where nnU-Net keeps the same weights. Both are residual UNets of the same
# layout (conv-norm-act, conv-norm plus a 1x1 projection per block; a transposed conv, convs and a 1x1 head per
# decoder stage, deepest first); nnU-Net's convs have a bias, which the instance norm after them cancels and
# USEMA's convs lack. nnU-Net's first stage starts with a stem conv from the input channels, the role of
# USEMA's first block's first conv. `all_modules` and `decoder.encoder` are nnU-Net's second names of the same
# tensors.
_NNUNET_ALIASES = re.compile(r"(^|\.)all_modules\.|^decoder\.encoder\.")
_NNUNET_MARK = "encoder.stages.0.blocks.0.conv1.conv.weight"


def _unit(own_conv: str, own_norm: str, source: str) -> list[tuple[str, str]]:
    """(USEMA name, nnU-Net name) of a conv's weight and its norm's weight and bias."""
    return [(f"{own_conv}.conv.weight", f"{source}.conv.weight"), (f"{own_norm}.weight", f"{source}.norm.weight"),
            (f"{own_norm}.bias", f"{source}.norm.bias")]


# A USEMA conv's weight name -> the nnU-Net units that may hold its weights, the first whose shapes fit wins.
_UNIT_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[list[tuple[str, str]]]]]] = [
    (re.compile(r"encoder\.(\d+)\.(\d+)\.conv([12])\.conv\.weight"), lambda m: [
        _unit(f"encoder.{m[1]}.{m[2]}.conv{m[3]}", f"encoder.{m[1]}.{m[2]}.norm{m[3]}",
              f"encoder.stages.{m[1]}.blocks.{m[2]}.conv{m[3]}"),
        *([_unit("encoder.0.0.conv1", "encoder.0.0.norm1", "encoder.stem.convs.0")] if m[0].startswith(
            "encoder.0.0.conv1") else []),
    ]),
    (re.compile(r"encoder\.(\d+)\.(\d+)\.conv3\.conv\.weight"), lambda m: [
        _unit(f"encoder.{m[1]}.{m[2]}.conv3", f"encoder.{m[1]}.{m[2]}.norm3",
              f"encoder.stages.{m[1]}.blocks.{m[2]}.skip.1"),
    ]),
    (re.compile(r"decoder\.(\d+)\.conv_block\.(\d+)\.conv\.weight"), lambda m: [  # nnU-Net-like decoder
        _unit(f"decoder.{m[1]}.conv_block.{m[2]}", f"decoder.{m[1]}.conv_block.{m[2]}.adn.N",
              f"decoder.stages.{m[1]}.convs.{m[2]}"),
    ]),
    (re.compile(r"decoder\.(\d+)\.conv_block\.conv(\d+)\.conv\.weight"), lambda m: [  # MONAI's two convs
        _unit(f"decoder.{m[1]}.conv_block.conv{m[2]}", f"decoder.{m[1]}.conv_block.norm{m[2]}",
              f"decoder.stages.{m[1]}.convs.{int(m[2]) - 1}"),
    ]),
    (re.compile(r"(decoder\.(\d+)\.transp_conv|heads\.(\d+)\.conv)\.conv\.weight"), lambda m: [
        [(f"{m[1]}.conv.{field}", f"decoder.transpconvs.{m[2]}.{field}" if m[2] is not None
          else f"decoder.seg_layers.{m[3]}.{field}") for field in ("weight", "bias")],
    ]),
]


def nnunet_resenc_names(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, str]:
    """USEMA tensor name -> the name of the tensor of nnU-Net's residual-encoder UNet that holds its weights,
    for every unit (a conv with its norm; a transposed conv or head with its bias) whose names exist and whose
    shapes agree; empty for a checkpoint that is not such a UNet."""
    if _NNUNET_MARK not in state:
        return {}
    mapping: dict[str, str] = {}
    for name in own:
        for pattern, units in _UNIT_RULES:
            match = pattern.fullmatch(name)
            fitting = (
                unit for unit in (units(match) if match else [])
                if all(o in own and s in state and own[o].shape == state[s].shape for o, s in unit)
            )
            mapping.update(next(fitting, []))
    return mapping


def load_matching_weights(network: nn.Module, path: str | Path, force: bool = False) -> list[str]:
    """Copy into `network` every tensor of the checkpoint at `path` whose name and shape match (for nnU-Net's
    residual-encoder UNet: whose unit fits, `nnunet_resenc_names`); returns the report: one summary line, then
    the skipped tensors when there are at most LISTED_SKIPS. CheckpointError naming the file when nothing
    matches, or when less than half of the checkpoint's tensors fit and not `force`."""
    path = Path(path)
    state = _state_dict_of(path)
    own = network.state_dict()
    renamed = nnunet_resenc_names(state, own)
    source = {name: state[origin] for name, origin in renamed.items()} or state
    matching = {
        name: tensor for name, tensor in source.items() if name in own and own[name].shape == tensor.shape
    }
    if not matching:
        raise CheckpointError(
            f"{path}: none of its {len(state)} tensors matches a tensor of the network by name and shape "
            f"(e.g. {next(iter(state))}); these are the weights of another model"
        )
    distinct = {name for name in state if not _NNUNET_ALIASES.search(name)}

    def origins(names) -> set[str]:
        found = {renamed.get(name, name) for name in names}
        # the bias of an nnU-Net conv is cancelled by the instance norm after it; USEMA's convs have none
        found |= {name.replace(".conv.weight", ".conv.bias") for name in found if name.endswith(".conv.weight")}
        return found & distinct

    used = origins(matching)
    if 2 * len(used) < len(distinct) and not force:
        raise CheckpointError(
            f"{path}: only {len(used)} of its {len(distinct)} tensors fit the network, so it would train from "
            "its initialisation almost everywhere; these look like the weights of another model (give --force "
            "to start from them anyway)"
        )
    network.load_state_dict(matching, strict=False)
    absent = [name for name in own if name not in source]
    reshaped = [name for name in own if name in source and name not in matching]
    unused = distinct - origins(name for name in source if name in own)
    origin = " (nnU-Net's residual-encoder UNet, mapped by structure)" if renamed else ""
    lines = [
        f"pretrained weights {path}{origin}: loaded {len(matching)} of the network's {len(own)} tensors; "
        f"skipped {len(absent) + len(reshaped)} ({len(reshaped)} of another shape, "
        f"{len(absent)} not in the checkpoint); "
        f"{len(unused)} of the checkpoint's tensors unused"
    ]
    if 0 < len(absent) + len(reshaped) <= LISTED_SKIPS:
        lines += [
            f"  kept initialised: {name}: {list(source[name].shape)} in the checkpoint, "
            f"{list(own[name].shape)} "
            "here"
            for name in reshaped
        ]
        lines += [f"  kept initialised: {name}: not in the checkpoint" for name in absent]
    return lines

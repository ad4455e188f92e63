"""`usema train --pretrained-weights CKPT`: start from another run's weights wherever they fit.

Every tensor of the checkpoint whose name and shape match one of the network's is copied; the rest keep their
initialisation (typically the output heads, when the classes differ, as nnU-Net's fine-tuning does). The file
may be a usema checkpoint (`model_state`), an nnU-Net checkpoint (`network_weights`), a `{"state_dict": ...}`
file or a bare state dict; names saved by DistributedDataParallel ("module.") or torch.compile ("_orig_mod.")
are matched without those prefixes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from usema.errors import CheckpointError
from usema.training.checkpoint import read_checkpoint_file

_WEIGHT_ENTRIES = ("model_state", "network_weights", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Skipped tensors are listed one by one up to this many; beyond it the summary line alone.
LISTED_SKIPS = 10


def _state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    payload = read_checkpoint_file(path)
    if isinstance(payload, dict):
        for entry in _WEIGHT_ENTRIES:
            if isinstance(payload.get(entry), dict):
                payload = payload[entry]
                break
    tensors = payload if isinstance(payload, dict) else {}
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


def load_matching_weights(network: nn.Module, path: str | Path) -> list[str]:
    """Copy into `network` every tensor of the checkpoint at `path` whose name and shape match; returns the
    report: one summary line, then the skipped tensors when there are at most LISTED_SKIPS. CheckpointError
    naming the file when nothing matches (the weights of another model)."""
    path = Path(path)
    state = _state_dict_of(path)
    own = network.state_dict()
    matching = {
        name: tensor for name, tensor in state.items() if name in own and own[name].shape == tensor.shape
    }
    if not matching:
        raise CheckpointError(
            f"{path}: none of its {len(state)} tensors matches a tensor of the network by name and shape "
            f"(e.g. {next(iter(state))}); these are the weights of another model"
        )
    network.load_state_dict(matching, strict=False)
    absent = [name for name in own if name not in state]
    reshaped = [name for name in own if name in state and name not in matching]
    unused = [name for name in state if name not in own]
    lines = [
        f"pretrained weights {path}: loaded {len(matching)} of the network's {len(own)} tensors; skipped "
        f"{len(absent) + len(reshaped)} ({len(reshaped)} of another shape, "
        f"{len(absent)} not in the checkpoint); "
        f"{len(unused)} of the checkpoint's tensors unused"
    ]
    if 0 < len(absent) + len(reshaped) <= LISTED_SKIPS:
        lines += [
            f"  kept initialised: {name}: {list(state[name].shape)} in the checkpoint, "
            f"{list(own[name].shape)} "
            "here"
            for name in reshaped
        ]
        lines += [f"  kept initialised: {name}: not in the checkpoint" for name in absent]
    return lines

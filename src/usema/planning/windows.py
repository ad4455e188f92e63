"""SEMA windows that tile the planned patch: in training, every SEMA stage's map is a whole number of windows.

A map that is not a whole number of windows pads its last windows and masks their padded keys, which the
attention pays for in every softmax (and the CPU's fused kernel cannot take a mask without slowing down). So
the planner gives each SEMA stage a window per axis that divides that stage's map, close to the target window
(7 in 2D, 5 in 3D), and nudges the patch by a multiple of the total stride where no such window exists. An
axis no longer than 1.5 windows is one window: the attention along it is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from usema.nn.attention import DEFAULT_WINDOW

# Divisors between half and twice the target keep the window's token count within 8x of the target's (3D).
WINDOW_RANGE = (0.5, 2.0)
ONE_WINDOW_UP_TO = 1.5


def axis_window(size: int, target: int) -> int | None:
    """The window along one axis of a stage map `size` long: the whole axis where it is at most 1.5 targets,
    else the divisor of `size` nearest the target (log scale; the larger on a tie) within half to twice the
    target; None where no divisor is that near."""
    if size <= ONE_WINDOW_UP_TO * target:
        return size
    low, high = math.ceil(WINDOW_RANGE[0] * target), math.floor(WINDOW_RANGE[1] * target)
    divisors = [w for w in range(max(low, 1), high + 1) if size % w == 0]
    if not divisors:
        return None
    return min(divisors, key=lambda w: (abs(math.log(w / target)), -w))


def stage_map_sizes(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each stage's map size for a `patch` (a multiple of the total stride)."""
    sizes, current = [], list(patch)
    for stride in strides:
        current = [c // s for c, s in zip(current, stride, strict=True)]
        sizes.append(current)
    return sizes


def sema_windows(patch: Sequence[int], strides: Sequence[Sequence[int]], sema_stages: Sequence[int],
                 target: int | Sequence[int]) -> tuple[list[list[int] | None], list[int]]:
    """(a window per stage, None where a stage has no SEMA block or no window tiles it; the SEMA stages that
    no window tiles)."""
    from monai.utils import ensure_tuple_rep  # MONAI takes seconds to import: only once windows are planned

    windows: list[list[int] | None] = [None] * len(strides)
    untiled = []
    targets = ensure_tuple_rep(target, len(patch))
    for stage, size in enumerate(stage_map_sizes(patch, strides)):
        if stage not in sema_stages:
            continue
        axes = [axis_window(s, t) for s, t in zip(size, targets, strict=True)]
        if None in axes:
            untiled.append(stage)
        else:
            windows[stage] = axes
    return windows, untiled


def tiling_patch(patch: list[int], strides_for: Callable[[list[int]], list[list[int]]],
                 sema_stages_for: Callable[[int], list[int]], target: int | Sequence[int],
                 max_steps: int = 3) -> list[int]:
    """`patch`, with each axis that no window tiles moved to the nearest length (up to `max_steps` total
    strides away, shorter first) that tiles every SEMA stage and keeps the network's strides; an axis where
    none does keeps its length (its last windows are then padded and masked)."""
    from monai.utils import ensure_tuple_rep

    strides = strides_for(patch)
    stages = sema_stages_for(len(strides))
    targets = ensure_tuple_rep(target, len(patch))

    def tiles(candidate: list[int], axis: int) -> bool:
        sizes = stage_map_sizes(candidate, strides)
        return all(axis_window(sizes[s][axis], targets[axis]) is not None for s in stages)

    result = list(patch)
    for axis in range(len(patch)):
        if tiles(result, axis):
            continue
        stride = math.prod(s[axis] for s in strides)
        for step in (step for n in range(1, max_steps + 1) for step in (-n, n)):
            candidate = list(result)
            candidate[axis] += step * stride
            if candidate[axis] >= stride and tiles(candidate, axis) and strides_for(candidate) == strides:
                result = candidate
                break
    return result


def placement_settings(model: str, spatial_dims: int, network_settings: dict[str, Any],
                       placement: str | int | Sequence[int] | None = None) -> dict[str, Any]:
    """{"sema_per_stage": placement} (DEFAULT_PLACEMENT when None) for a model whose SEMA blocks a plan places
    (a USEMA preset that does not fix them) when its settings name no placement, else {}. Plans name the
    placement, so that a plan keeps its network whatever the default becomes."""
    from usema.models.registry import preset_kwargs
    from usema.models.usema import DEFAULT_PLACEMENT

    builder, kwargs = preset_kwargs(model, spatial_dims)
    if builder != "usema" or "sema_per_stage" in kwargs or "sema_per_stage" in network_settings:
        return {}
    return {"sema_per_stage": DEFAULT_PLACEMENT if placement is None else placement}


def sema_stages_of(model: str, spatial_dims: int, network_settings: dict[str, Any]) -> Callable[[int], list[int]]:
    """For a model and its plan's network settings: a function from the stage count to the stages whose SEMA
    blocks attend within windows (none for models without them)."""
    from usema.models.registry import preset_kwargs
    from usema.models.usema import DEFAULT_PLACEMENT, blocks_per_placement

    builder, kwargs = preset_kwargs(model, spatial_dims)
    kwargs.update(network_settings)
    windowed = kwargs.get("mixer", "sema") == "sema" and kwargs.get("attention", "sema") in ("sema", "window")
    if builder != "usema" or not windowed:
        return lambda n_stages: []
    placement = kwargs.get("sema_per_stage", DEFAULT_PLACEMENT)
    return lambda n_stages: [s for s, c in enumerate(blocks_per_placement(placement, n_stages)) if c > 0]


def target_window(model: str, spatial_dims: int, network_settings: dict[str, Any]) -> int | Sequence[int]:
    """The window the model asks for (its setting, else the default of its dimension)."""
    from usema.models.registry import preset_kwargs

    kwargs = preset_kwargs(model, spatial_dims)[1]
    kwargs.update(network_settings)
    return kwargs.get("window_size") or DEFAULT_WINDOW[spatial_dims]


def window_settings(model: str, spatial_dims: int, patch: Sequence[int], strides: Sequence[Sequence[int]],
                    network_settings: dict[str, Any]) -> dict[str, Any]:
    """The `stage_windows` network setting for a model's plan ({} for models without windowed SEMA); warns
    about SEMA stages whose map no window tiles (their last windows are padded and masked)."""
    import warnings

    stages = sema_stages_of(model, spatial_dims, network_settings)(len(strides))
    if not stages:
        return {}
    windows, untiled = sema_windows(patch, strides, stages, target_window(model, spatial_dims, network_settings))
    if untiled:
        sizes = stage_map_sizes(patch, strides)
        maps = ", ".join(f"stage {s} ({'x'.join(map(str, sizes[s]))})" for s in untiled)
        warnings.warn(f"patch {list(patch)}: no window near the target tiles {maps}; there the last windows are "
                      "padded and their keys masked", stacklevel=2)
    return {"stage_windows": windows}

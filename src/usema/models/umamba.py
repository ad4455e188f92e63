"""The U-Mamba topologies on our residual UNet: USEMA with Mamba layers in the token-mixer slot.

`umamba-bot`: one Mamba layer at the bottleneck (after the last encoder stage); `umamba-enc`: one after every
encoder stage. Everything else (residual conv encoder, transposed-conv decoder, heads, padding) is USEMA's, so
the comparison isolates the mixer.
"""

from __future__ import annotations

from usema.errors import UsemaError
from usema.models.registry import passes_settings_to
from usema.models.usema import DEFAULT_STAGES, USEMA

LAYOUTS = ("bottleneck", "encoder")


def mamba_per_stage(layout: str, n_stages: int) -> list[int]:
    """Mamba layers per encoder stage: [0, ..., 0, 1] ("bottleneck") or [1, ..., 1] ("encoder")."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown U-Mamba layout {layout!r}; choose one of {LAYOUTS}")
    return [0] * (n_stages - 1) + [1] if layout == "bottleneck" else [1] * n_stages


@passes_settings_to(lambda: USEMA)
def build_umamba(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
    layout: str = "bottleneck",
    strides=None,
    n_stages: int | None = None,
    **kwargs,
) -> USEMA:
    """Registry builder for `umamba-bot` / `umamba-enc`: USEMA with Mamba layers placed by `layout`.

    `strides`, `n_stages` and the other keyword arguments are USEMA's (the plan's network settings pass
    through). """
    for fixed in ("sema_per_stage", "mixer"):
        if fixed in kwargs:
            raise UsemaError(
                f"U-Mamba places its Mamba layers by its layout ({layout!r}); {fixed} cannot be set"
            )
    n = len(strides) if strides is not None else (n_stages or DEFAULT_STAGES[spatial_dims])
    return USEMA(
        spatial_dims,
        in_channels,
        num_classes,
        strides=strides,
        n_stages=n_stages,
        sema_per_stage=mamba_per_stage(layout, n),
        mixer="mamba",
        deep_supervision=deep_supervision,
        **kwargs,
    )

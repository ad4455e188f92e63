"""Model variants a benchmark runs: a SEMA preset once per placement of its SEMA blocks, other models as they are."""

from __future__ import annotations

from typing import Any, NamedTuple

from usema.errors import UsemaError


class Variant(NamedTuple):
    """What one row of a benchmark trains or times: its label, the preset, and settings of its own."""

    label: str
    model: str
    settings: dict[str, Any]


def has_sema_blocks(model: str) -> bool:
    """A preset whose network places SEMA blocks (not its no-SEMA control, not U-Mamba's Mamba layers)."""
    from usema.models import load_presets

    preset = load_presets()[model]
    return preset["builder"] == "usema" and preset.get("kwargs", {}).get("sema_per_stage") != 0


def expand_placements(models: list[str], placements: list[str] | None) -> list[Variant]:
    """One variant per model, or, with `placements`, one per placement of every SEMA preset, labelled
    "usema@deepest-2" (`sema_per_stage` by name; see usema.models.usema.blocks_per_placement)."""
    from usema.models import list_models

    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UsemaError(f"unknown models {', '.join(unknown)}; choose from {', '.join(list_models())}")
    variants = []
    for model in models:
        if placements and has_sema_blocks(model):
            variants += [Variant(f"{model}@{p}", model, {"sema_per_stage": p}) for p in placements]
        else:
            variants.append(Variant(model, model, {}))
    return variants

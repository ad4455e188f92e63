"""Whole networks built from usema.nn: USEMA, its controls and ablations, the registry of presets, and
`NetworkSpec`, a network described as data (what plans and checkpoints hold) with the one way to build it."""

from usema.models.registry import build_model, list_models, load_presets, register_builder
from usema.models.spec import NetworkSpec
from usema.models.usema import USEMA

__all__ = ["USEMA", "NetworkSpec", "build_model", "list_models", "load_presets", "register_builder"]

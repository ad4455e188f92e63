"""Whole networks built from usema.nn: USEMA, its controls and ablations, and the registry of presets."""

from usema.models.registry import build_model, list_models, load_presets, register_builder
from usema.models.usema import USEMA

__all__ = ["USEMA", "build_model", "list_models", "load_presets", "register_builder"]

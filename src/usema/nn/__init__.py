"""Dimension-agnostic building blocks: the SEMA operator and its modes, RoPE and the SEMA block."""

from usema.nn.attention import ATTENTION_MODES, full_attention_materialized, sema_attention
from usema.nn.rope import apply_rope, rope_angles
from usema.nn.sema_block import SEMABlock

__all__ = ["ATTENTION_MODES", "SEMABlock", "apply_rope", "full_attention_materialized", "rope_angles", "sema_attention"]

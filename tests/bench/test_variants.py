"""The variants a benchmark runs: every SEMA preset once per placement, other models as they are."""

import pytest

from usema.bench.variants import Variant, expand_placements, has_sema_blocks
from usema.errors import UsemaError


def test_placements_multiply_the_sema_presets_only():
    variants = expand_placements(["usema", "usema-nosema", "nnunet"], ["all", "deepest-2"])
    assert variants == [
        Variant("usema@all", "usema", {"sema_per_stage": "all"}),
        Variant("usema@deepest-2", "usema", {"sema_per_stage": "deepest-2"}),
        Variant("usema-nosema", "usema-nosema", {}),
        Variant("nnunet", "nnunet", {}),
    ]
    assert expand_placements(["usema"], None) == [Variant("usema", "usema", {})]
    assert has_sema_blocks("usema-window") and not has_sema_blocks("umamba-enc")


def test_an_unknown_model_is_named():
    with pytest.raises(UsemaError, match="unknown models nope"):
        expand_placements(["usema", "nope"], None)

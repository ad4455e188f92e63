"""usema.training's public names: each the object of the module that holds it, imported when asked for."""

import pytest

import usema.training
from usema.training import run_training, splits


def test_public_names_are_those_of_their_modules():
    from usema.training import SPLITS_NAME, load_or_create_splits, stop_if_interrupted

    assert (SPLITS_NAME, load_or_create_splits) == (splits.SPLITS_NAME, splits.load_or_create_splits)
    assert stop_if_interrupted is run_training.stop_if_interrupted
    assert sorted(usema.training.__all__) == ["SPLITS_NAME", "load_or_create_splits", "stop_if_interrupted"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        usema.training.nope  # noqa: B018

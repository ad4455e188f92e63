"""Padding inputs to a network's multiple and cropping every output back to the input."""

import pytest
import torch

from usema.nn.padding import crop_outputs, pad_to_multiple, pad_to_size, padded_size, total_stride


def test_pads_at_the_end_with_zeros():
    x = torch.ones(1, 2, 5, 8, 3)
    padded = pad_to_multiple(x, (4, 4, 2))
    assert padded.shape == (1, 2, 8, 8, 4)
    assert padded[:, :, :5, :, :3].eq(1).all() and padded.sum() == x.sum()
    assert pad_to_multiple(x, (5, 8, 3)) is x  # already a multiple: untouched
    assert padded_size((5, 8, 3), (4, 4, 2)) == (8, 8, 4)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to_size(x, (4, 8, 3))


def test_crops_each_resolution_to_what_covers_the_input():
    strides = [(1, 1), (2, 1), (2, 2)]
    assert total_stride(strides) == (4, 2)
    size = (9, 7)
    outputs = [torch.zeros(1, 3, 12, 8), torch.zeros(1, 3, 6, 8), torch.zeros(1, 3, 3, 4)]
    cropped = crop_outputs(outputs, size, strides)
    assert [tuple(o.shape[2:]) for o in cropped] == [(9, 7), (5, 7), (3, 4)]
    with pytest.raises(ValueError, match="strides"):
        crop_outputs(outputs, size)

"""Validation Dice: pooled per-class counts from a Gaussian sliding window over whole cases."""

import numpy as np
import pytest
import torch

from usema.preprocessing.storage import open_case, write_case
from usema.training.validation import confusion_counts, dice_per_class, highest_resolution


class OneHotOracle(torch.nn.Module):
    """Returns its input channels as logits: fed a one-hot label, it predicts that label exactly."""

    def forward(self, x):
        return [x * 10.0, x[:, :, ::2, ::2] * 10.0]  # deep supervision style: highest resolution first


def _case(folder, label, num_classes=3):
    """A preprocessed case whose image is the one-hot label."""
    one_hot = np.eye(num_classes, dtype=np.float32)[label].transpose(2, 0, 1)
    write_case(folder, "c", one_hot, label, num_classes, key="test")
    return open_case(folder, "c")


def test_a_perfect_prediction_scores_one_and_counts_match_the_label(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(21, 19))
    counts = confusion_counts(
        OneHotOracle(), [_case(tmp_path, label)], (8, 8), 3, torch.device("cpu"), batch_size=4
    )
    assert counts.shape == (2, 4)
    assert counts[:, 0].tolist() == [(label == 1).sum(), (label == 2).sum()]  # true positives
    assert counts[:, 1].sum() == 0 and counts[:, 3].sum() == 0  # no false positive or negative
    assert dice_per_class(counts) == [1.0, 1.0]


def test_dice_is_pooled_over_cases_and_empty_classes_score_one():
    # class 1: 2TP / (2TP + FP + FN) = 8 / (8 + 1 + 3); class 2 absent everywhere
    counts = torch.tensor([[4.0, 1.0, 100.0, 3.0], [0.0, 0.0, 108.0, 0.0]])
    assert dice_per_class(counts) == pytest.approx([8 / 12, 1.0])


def test_stop_request_abandons_validation(tmp_path):
    label = np.zeros((8, 8), dtype=np.int64)
    counts = confusion_counts(
        OneHotOracle(), [_case(tmp_path, label)], (8, 8), 3, torch.device("cpu"), should_stop=lambda: True
    )
    assert counts is None


def test_highest_resolution_takes_the_first_output():
    a, b = torch.zeros(1), torch.ones(1)
    assert highest_resolution([a, b]) is a and highest_resolution(b) is b


def test_voxels_of_the_ignore_label_count_for_no_class(tmp_path):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, size=(16, 16))
    image = np.eye(3, dtype=np.float32)[label].transpose(2, 0, 1)
    image[:, :, :8] = np.eye(3, dtype=np.float32)[2][:, None, None]  # the network sees class 2 on the left...
    label[:, :8] = 3  # ...where the reference is not annotated
    write_case(tmp_path, "c", image, label, 3, key="test")
    counts = confusion_counts(OneHotOracle(), [open_case(tmp_path, "c")], (8, 8), 3,
                              torch.device("cpu"), ignore_label=3)
    assert counts[:, 0].tolist() == [(label == 1).sum(), (label == 2).sum()]
    assert counts[:, 1].sum() == 0 and counts[:, 3].sum() == 0  # the class 2 predicted there is no false positive

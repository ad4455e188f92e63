"""The preprocessed cases of a fold, read lazily, and the seeded batch stream of an epoch (0 or N workers)."""

import numpy as np
import pytest
import torch

from usema.errors import DataError
from usema.preprocessing.storage import case_files
from usema.training.batches import EpochBatches, epoch_loader, load_training_cases
from usema.training.patches import PatchSampler


def test_preprocessed_cases_open_lazily_with_their_foreground_locations(prepared_run):
    _, run = prepared_run
    case = load_training_cases(run, ["phantom_000"])[0]
    assert case.case_id == "phantom_000" and case.shape == (20, 24, 20)
    image, label = case.image, case.label
    assert isinstance(image, np.memmap) and isinstance(label, np.memmap)  # nothing is read until sampled
    assert image.dtype == np.float32 and image.shape == (1, 20, 24, 20) and label.shape == (20, 24, 20)
    assert case.present_classes == [1, 2]
    for k in (1, 2):
        count = case.location_count(k)
        assert 0 < count <= int((label == k).sum())
        assert all(label[case.class_location(k, i)] == k for i in (0, count // 2, count - 1))


def test_missing_unlabelled_or_mismatched_cases_are_data_errors(prepared_run, tmp_path):
    import shutil

    _, run = prepared_run
    with pytest.raises(DataError, match="not found"):
        load_training_cases(tmp_path, ["nope"])
    folder = tmp_path / "preprocessed"
    shutil.copytree(run / "preprocessed", folder)
    case_files(folder, "phantom_000")["label"].unlink()
    with pytest.raises(DataError, match="no label"):
        load_training_cases(tmp_path, ["phantom_000"])
    np.save(case_files(folder, "phantom_001")["label"], np.zeros((20, 24, 19), np.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_training_cases(tmp_path, ["phantom_001"])


def test_batches_depend_only_on_seed_rank_epoch_and_iteration(prepared_run):
    _, run = prepared_run
    sampler = PatchSampler(load_training_cases(run, ["phantom_000", "phantom_001"]), (16, 16, 16))
    whole = list(epoch_loader(EpochBatches(sampler, 2, iterations=3, seed=0, rank=0, epoch=1)))
    assert (
        len(whole) == 3
        and whole[0][0].shape == (2, 1, 16, 16, 16)
        and whole[0][1].shape == (2, 1, 16, 16, 16)
    )
    # resuming at iteration 1 yields the same batches as the uninterrupted epoch
    tail = list(EpochBatches(sampler, 2, iterations=3, seed=0, rank=0, epoch=1, start=1))
    for (image, label), (image2, label2) in zip(whole[1:], tail, strict=True):
        assert torch.equal(image, image2) and torch.equal(label, label2)
    other_rank = next(iter(EpochBatches(sampler, 2, iterations=1, seed=0, rank=1, epoch=1)))
    assert not torch.equal(other_rank[0], whole[0][0])
    other_epoch = next(iter(EpochBatches(sampler, 2, iterations=1, seed=0, rank=0, epoch=2)))
    assert not torch.equal(other_epoch[0], whole[0][0])


@pytest.mark.parametrize("workers", [1, 2])
def test_loader_workers_yield_the_same_batches_in_order(prepared_run, workers):
    _, run = prepared_run
    sampler = PatchSampler(load_training_cases(run, ["phantom_000", "phantom_001"]), (16, 16, 16))
    torch.set_num_threads(2)  # the training process may use more threads than a worker (1): same batches
    alone = list(epoch_loader(EpochBatches(sampler, 2, iterations=5, seed=2, rank=0, epoch=1)))
    torch.set_num_threads(1)
    pooled = list(
        epoch_loader(
            EpochBatches(sampler, 2, iterations=5, seed=2, rank=0, epoch=1, start=1), num_workers=workers
        )
    )
    assert len(pooled) == 4
    for (image, label), (image2, label2) in zip(alone[1:], pooled, strict=True):
        assert torch.equal(image, image2) and torch.equal(label, label2)

"""Preprocessed cases in memory and the seeded batch stream of an epoch."""

import numpy as np
import pytest
import torch

from usema.errors import DataError
from usema.training.augmentation import PatchSampler
from usema.training.data import EpochBatches, epoch_loader, load_training_case, load_training_cases


def test_preprocessed_cases_load_with_their_foreground_locations(prepared_run):
    _, run = prepared_run
    case = load_training_cases(run, ["phantom_000"])[0]
    assert case.case_id == "phantom_000"
    assert case.image.dtype == np.float32 and case.image.shape == (1, 20, 24, 20)
    assert case.label.shape == (20, 24, 20)
    assert sorted(case.class_locations) == [1, 2]
    for k, where in case.class_locations.items():
        assert where.shape[1] == 3 and len(where) > 0
        assert (case.label[tuple(where.T)] == k).all()


def test_missing_or_unlabelled_cases_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_training_case(tmp_path / "nope.npz")
    np.savez(tmp_path / "unlabelled.npz", image=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match="no label"):
        load_training_case(tmp_path / "unlabelled.npz")
    np.savez(
        tmp_path / "mismatch.npz", image=np.zeros((1, 4, 4), np.float32), label=np.zeros((4, 5), np.uint8)
    )
    with pytest.raises(DataError, match="do not match"):
        load_training_case(tmp_path / "mismatch.npz")


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


def test_loader_workers_yield_the_same_batches_in_order(prepared_run):
    _, run = prepared_run
    sampler = PatchSampler(load_training_cases(run, ["phantom_000"]), (16, 16, 16))
    alone = list(epoch_loader(EpochBatches(sampler, 1, iterations=3, seed=2, rank=0, epoch=1)))
    workers = list(
        epoch_loader(EpochBatches(sampler, 1, iterations=3, seed=2, rank=0, epoch=1), num_workers=2)
    )
    assert len(workers) == 3
    for (image, label), (image2, label2) in zip(alone, workers, strict=True):
        assert torch.equal(image, image2) and torch.equal(label, label2)

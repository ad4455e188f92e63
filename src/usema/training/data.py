"""Training data: preprocessed cases loaded into memory, and the stream of augmented batches of one epoch.

Every batch is drawn from its own generator seeded by (seed, rank, epoch, iteration), so a run resumed at any
iteration, with any number of loader workers, sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from usema.errors import DataError
from usema.preprocessing.image import PREPROCESSED_DIR
from usema.training.augmentation import PatchSampler, TrainingCase

_LOCATIONS_KEY = re.compile(r"^class_locations_(\d+)$")


def load_training_case(path: str | Path) -> TrainingCase:
    """One preprocessed `<case>.npz` (keys image, label, class_locations_<k>) as a TrainingCase."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "preprocessed case not found; preprocessing did not finish")
    try:
        with np.load(path, allow_pickle=False) as stored:
            if "label" not in stored:
                raise DataError(path, "preprocessed case has no label; training needs labelled cases")
            image = np.ascontiguousarray(stored["image"], dtype=np.float32)
            label = np.ascontiguousarray(stored["label"])
            locations = {
                int(m.group(1)): stored[key] for key in stored.files if (m := _LOCATIONS_KEY.match(key))
            }
    except (OSError, ValueError, KeyError) as err:
        raise DataError(path, f"unreadable preprocessed case ({err}); delete it to have it redone") from err
    if image.ndim != label.ndim + 1 or image.shape[1:] != label.shape:
        raise DataError(path, f"image {image.shape} and label {label.shape} do not match")
    return TrainingCase(path.stem, image, label, locations)


def load_training_cases(run_dir: str | Path, case_ids: Sequence[str]) -> list[TrainingCase]:
    """The preprocessed cases `case_ids` of RUN/preprocessed, in memory (every epoch samples all of them)."""
    folder = Path(run_dir) / PREPROCESSED_DIR
    return [load_training_case(folder / f"{case_id}.npz") for case_id in case_ids]


class EpochBatches(IterableDataset):
    """The batches of one epoch from iteration `start` on, each drawn from its own seeded generator.

    With loader workers, worker w produces iterations start + w, start + w + W, ...; the DataLoader returns
    them in iteration order.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        batch_size: int,
        iterations: int,
        seed: int,
        rank: int,
        epoch: int,
        start: int = 0,
    ):
        super().__init__()
        self.sampler, self.batch_size, self.iterations = sampler, batch_size, iterations
        self.seed, self.rank, self.epoch, self.start = seed, rank, epoch, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for iteration in range(self.start + worker, self.iterations, workers):
            rng = np.random.default_rng([self.seed, self.rank, self.epoch, iteration])
            yield self.sampler.batch(self.batch_size, rng)

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)


def epoch_loader(batches: EpochBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-batched patches (batch_size=None), with `num_workers` worker processes."""
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=max(0, num_workers),
        pin_memory=pin_memory,
        persistent_workers=False,
    )

"""Training data: the preprocessed cases of a fold, read lazily from disk, and the stream of augmented
batches of one epoch, sampled in loader worker processes.

Every batch is drawn from its own generator seeded by (seed, rank, epoch, iteration), so a run resumed at any
iteration, with any number of loader workers, sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from usema.preprocessing.dataset import PREPROCESSED_DIR
from usema.preprocessing.storage import PreprocessedCase, open_case
from usema.training.patches import PatchSampler


def load_training_cases(run_dir: str | Path, case_ids: Sequence[str]) -> list[PreprocessedCase]:
    """The preprocessed cases `case_ids` of RUN/preprocessed, checked but not read: patches are read from disk
    as they are sampled, so memory does not grow with the dataset."""
    folder = Path(run_dir) / PREPROCESSED_DIR
    return [open_case(folder, case_id) for case_id in case_ids]


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


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """Loader workers ignore SIGINT and SIGTERM: a Ctrl-C reaches the whole process group, and the training
    process, which saves its checkpoint first, shuts its workers down itself (a worker whose parent is gone
    exits on its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_loader(batches: EpochBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-batched patches (batch_size=None), sampled and augmented by `num_workers`
    worker processes (0: by this process)."""
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=max(0, num_workers),
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=_leave_stop_signals_to_the_trainer if num_workers > 0 else None,
    )

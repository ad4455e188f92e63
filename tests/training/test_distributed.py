"""DistributedDataParallel under torchrun: two CPU processes (gloo) train one fold, rank 0 alone writes."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from usema.checkpoint import Checkpoint
from usema.errors import UsemaError
from usema.training.distributed import (
    DistributedContext,
    all_reduce_sum,
    any_process,
    gather_objects,
    init_distributed,
    require_shared_run_folder,
)


def test_without_torchrun_everything_is_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed(torch.device("cpu"))
    assert ctx == DistributedContext(device=torch.device("cpu"))
    assert ctx.is_main and not ctx.enabled
    assert torch.equal(all_reduce_sum(ctx, torch.tensor([2.0])), torch.tensor([2.0]))
    assert any_process(ctx, True) and not any_process(ctx, False)
    assert gather_objects(ctx, {"a": 1}) == [{"a": 1}]


def test_a_rank_that_cannot_see_the_run_folder_says_it_must_be_shared(tmp_path):
    # another machine of a multi-node torchrun, whose RUN is a local folder: rank 0 wrote the plan elsewhere
    worker = DistributedContext(rank=3, world_size=4, local_rank=1)
    with pytest.raises(UsemaError, match=rf"rank 3 on .*: {tmp_path / 'plans.json'} is not there, although rank 0 "
                                         r"has written it; .* every machine sees \(a shared file system\)"):
        require_shared_run_folder(worker, tmp_path, "plans.json")
    require_shared_run_folder(DistributedContext(), tmp_path, "plans.json")  # rank 0 wrote it itself
    (tmp_path / "plans.json").write_text("{}")
    require_shared_run_folder(worker, tmp_path, "plans.json")


# Two processes on a shared 2-core machine: keep it small, and in a group of its own under pytest-xdist.
@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")
def test_torchrun_two_processes_write_one_checkpoint_set(tiny_run):
    data, run = tiny_run
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "usema.cli",
        "train",
        str(data),
        "-o",
        str(run),
        "--folds",
        "2",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    fold_dir = run / "fold_0"
    assert sorted(p.name for p in fold_dir.iterdir()) == [
        "checkpoint_best.pt",
        "checkpoint_latest.pt",
        "progress.png",
        "train_log.csv",
        "validation_cases.json",
    ]
    with (fold_dir / "train_log.csv").open(newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1"]  # one writer
    checkpoint = Checkpoint.load(fold_dir / "checkpoint_latest.pt")
    assert checkpoint.world_size == 2 and checkpoint.epoch == 1
    # one RNG state per process, each seeded by seed + rank
    first, second = checkpoint.rng
    assert not torch.equal(first["torch"], second["torch"])

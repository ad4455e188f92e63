"""Distributed data parallel set-up for `torchrun`: one process per device, gloo on CPU, NCCL on CUDA.

Without RANK/WORLD_SIZE in the environment everything here is a no-op on a single process, so the training
code calls the same functions either way.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from usema.errors import UsemaError

# Rank 0 plans and preprocesses while the others wait at a barrier: allow it time on a large dataset.
SETUP_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes plans, logs and checkpoints."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by torchrun (env RANK and WORLD_SIZE), else a single-process context.

    On CUDA each process takes the GPU of its LOCAL_RANK.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=SETUP_TIMEOUT)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def barrier(ctx: DistributedContext) -> None:
    """Wait for every process (no-op on one process)."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: DistributedContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the processes, in place, and return it."""
    if ctx.enabled:
        moved = tensor.to(ctx.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        tensor.copy_(moved.to(tensor.device))
    return tensor


def any_process(ctx: DistributedContext, flag: bool) -> bool:
    """True when `flag` is true on any process: every process then takes the same branch."""
    if not ctx.enabled:
        return flag
    return bool(all_reduce_sum(ctx, torch.tensor([float(flag)])).item() > 0)


def gather_objects(ctx: DistributedContext, obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (picklable objects)."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group at the end of training."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def require_shared_run_folder(ctx: DistributedContext, run_dir: str | os.PathLike, plans_name: str) -> None:
    """After rank 0 has written RUN/plans.json: UsemaError on a rank that cannot see it. Every rank reads the
    plan, the split and the preprocessed cases from RUN, so under torchrun on several machines RUN must be a
    folder they all see (a shared file system), not a path that exists on each machine on its own."""
    plans = Path(run_dir) / plans_name
    if not ctx.is_main and not plans.is_file():
        raise UsemaError(
            f"rank {ctx.rank} on {socket.gethostname()}: {plans} is not there, although rank 0 has written it; "
            "with torchrun on several machines RUN must be one folder that every machine sees (a shared file "
            "system)"
        )

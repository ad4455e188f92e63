"""The training loop of one fold: optimiser, schedule, loss, epochs, validation, checkpoints and resume.

Resume is exact: a checkpoint holds the weights, optimiser, schedule, loss scaler and every RNG state (one
per process), and batches are drawn from generators seeded by (seed, rank, epoch, iteration). A run stopped
by a signal in the middle of an epoch records how far it got and continues from that iteration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from usema.checkpoint import (
    CHECKPOINT_NAMES,
    Checkpoint,
    capture_rng_state,
    fold_dir,
    restore_rng_state,
)
from usema.errors import CheckpointError
from usema.planning.plans import Plans
from usema.planning.settings import planned_loader_workers
from usema.preprocessing.storage import PreprocessedCase
from usema.training.batches import EpochBatches, epoch_loader
from usema.training.distributed import DistributedContext, all_reduce_sum, any_process, gather_objects
from usema.training.losses import DiceCEDeepSupervisionLoss
from usema.training.optimization import build_optimizer, build_scheduler
from usema.training.patches import PatchSampler
from usema.training.pretrained import load_matching_weights
from usema.training.signals import StopRequest
from usema.training.training_log import TrainingLog, dice_column
from usema.training.validation import confusion_counts, dice_per_class
from usema.utils.progress import on_terminal

GRAD_CLIP_NORM = 12.0  # nnU-Net's gradient norm clip


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains one fold: `run()` does every remaining epoch and returns the summary.

    `val_cases` are the cases validated after every epoch (the caller applies the plan's val_max_cases); the
    network is the one the plan builds, starting from the matching tensors of `pretrained_weights` where given
    (`load_matching_weights`; a resumed run then continues from its own checkpoint instead).
    """

    def __init__(
        self,
        plans: Plans,
        run_dir: str | Path,
        fold: int,
        train_cases: list[PreprocessedCase],
        val_cases: list[PreprocessedCase],
        ctx: DistributedContext,
        seed: int = 0,
        autocast_dtype: torch.dtype | None = None,
        budget_seconds: float | None = None,
        pretrained_weights: str | Path | None = None,
        force_pretrained: bool = False,
    ):
        self.plans, self.fold, self.ctx, self.seed = plans, fold, ctx, seed
        self.fold_dir = fold_dir(run_dir, fold)
        self.settings = plans.training
        workers = self.settings.num_workers
        self.loader_workers = planned_loader_workers() if workers is None else workers
        self.autocast_dtype = autocast_dtype
        # The budget is of training time over the whole run, resumes included: the checkpoint carries the
        # seconds trained so far, so a resumed run gets what is left and its learning rate keeps decaying.
        self.budget_seconds = budget_seconds
        self.trained_before = 0.0  # seconds trained up to the checkpoint this process started from
        self.clock_start = time.monotonic()
        self.device = ctx.device
        self.num_classes = plans.dataset.num_classes
        self.class_names = plans.dataset.class_names
        self.patch_size = plans.patch_size
        # the network as its checkpoints describe it: with the deep supervision it trains with
        self.network_spec = dataclasses.replace(plans.network, deep_supervision=self.settings.deep_supervision)
        seed_everything(seed + ctx.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its fastest kernels
        self.network = self.network_spec.build()
        if pretrained_weights is not None:
            report = load_matching_weights(self.network, pretrained_weights, force=force_pretrained)
            if ctx.is_main:
                print("\n".join(report), file=sys.stderr)
        self.network = self.network.to(self.device)
        if ctx.is_main and hasattr(self.network, "attention_plan"):
            for line in self.network.attention_plan(self.patch_size):
                print(f"attention on the {'x'.join(map(str, self.patch_size))} patch, {line}", file=sys.stderr)
        self.model: nn.Module = self.network
        if ctx.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # without deep supervision the lower-resolution heads get no gradient: DDP must look for them
            self.model = DistributedDataParallel(
                self.network, device_ids=device_ids, find_unused_parameters=not self.settings.deep_supervision
            )
        self.optimizer = build_optimizer(self.network.parameters(), self.settings)
        self.total_steps = self.settings.epochs * self.settings.iters_per_epoch
        time_fraction = None
        if budget_seconds is not None and not ctx.enabled:  # under DDP every rank must see the same rate

            def time_fraction() -> float:
                return self.trained_seconds() / max(budget_seconds, 1e-9)

        self.scheduler = build_scheduler(
            self.optimizer, self.settings.schedule, self.total_steps, time_fraction
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=autocast_dtype == torch.float16)
        self.ignore_label = plans.dataset.ignore_label
        self.loss = DiceCEDeepSupervisionLoss(self.ignore_label)
        self.sampler = PatchSampler(train_cases, self.patch_size, self.settings.oversample_foreground)
        # The plan's batch is global: split over the processes (at least one sample each), as nnU-Net.
        batch = plans.batch_size
        self.batch_size = max(1, batch // ctx.world_size + (ctx.rank < batch % ctx.world_size))
        self.val_cases = list(val_cases)
        self.val_cases_here = self.val_cases[ctx.rank :: ctx.world_size]
        self.train_case_ids = [c.case_id for c in train_cases]
        # progress (restored by resume)
        self.epoch = 0  # completed epochs
        self.partial: dict[str, float] | None = None  # {"iterations", "loss_sum"} of an epoch cut short
        self.best_dice, self.best_epoch = -1.0, 0
        self.last_dice = float("nan")

    # ------------------------------------------------------------------------------------------ checkpoints
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _checkpoint(self) -> Checkpoint:
        rng_states = gather_objects(self.ctx, capture_rng_state())  # collective: every process calls it
        return Checkpoint(
            model_state=self.network.state_dict(),
            network=self.network_spec,
            plans=self.plans,
            fold=self.fold,
            epoch=self.epoch,
            partial_epoch=self.partial,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            scaler_state=self.scaler.state_dict(),
            best_dice=self.best_dice,
            best_epoch=self.best_epoch,
            trained_seconds=self.trained_seconds(),
            seed=self.seed,
            world_size=self.ctx.world_size,
            rng=rng_states,
            train_cases=self.train_case_ids,
            val_cases=[c.case_id for c in self.val_cases],
        )

    def save(self, best: bool = False) -> None:
        """Write checkpoint_best (when `best`) and then checkpoint_latest from the main process; every process
        must call it. In that order a stop between the two (a kill, a full disk) leaves the latest checkpoint
        of the epoch before, which a resumed run redoes, never a latest one that counts a best not on disk."""
        checkpoint = self._checkpoint()
        if self.ctx.is_main:
            if best:
                checkpoint.save(self.fold_dir / CHECKPOINT_NAMES["best"])
            checkpoint.save(self.fold_dir / CHECKPOINT_NAMES["latest"])

    def _best_is_missing(self) -> bool:
        """Whether the fold has trained epochs but no checkpoint_best (agreed by every process)."""
        missing = self.ctx.is_main and not (self.fold_dir / CHECKPOINT_NAMES["best"]).is_file()
        return self.epoch > 0 and any_process(self.ctx, missing)

    def _save_missing_best(self, log: TrainingLog | None) -> None:
        """Write the current state as checkpoint_best when the fold has none (a run stopped, e.g. by a full
        disk, before it wrote one): predict needs it; the warning says which epoch it holds."""
        if not self._best_is_missing():
            return
        logged = [row["val_dice"] for row in log.rows if int(row["epoch"]) == self.epoch] if log else []
        dice = logged[-1] if logged else self.last_dice
        if self.ctx.is_main:
            warnings.warn(
                f"{self.fold_dir}: no {CHECKPOINT_NAMES['best']} was written before the run stopped; it now "
                f"holds the last epoch, {self.epoch} (validation Dice {dice:.4f})",
                stacklevel=3,
            )
        self.best_dice, self.best_epoch = float(dice), self.epoch
        self.save(best=True)

    def restore(self, path: Path) -> None:
        """Continue from checkpoint `path`; CheckpointError if it belongs to another model, plan or fold."""
        checkpoint = Checkpoint.load(path, expected=self.network_spec)
        trained = checkpoint.plans
        if trained is None:
            raise CheckpointError(f"{path}: the checkpoint holds no plan to check against plans.json")
        difference = self.plans.difference_from(trained)
        if difference:
            raise CheckpointError(f"{path}: checkpoint was trained with another plan: {difference}")
        if checkpoint.fold != self.fold:
            raise CheckpointError(f"{path}: checkpoint is of fold {checkpoint.fold}, not fold {self.fold}")
        trained_with = trained.training.optimizer
        if trained_with != self.settings.optimizer:
            raise CheckpointError(
                f"{path}: checkpoint was trained with {trained_with}, not {self.settings.optimizer}; "
                "resume with the same optimizer"
            )
        missing = [name for name in ("epoch", "optimizer_state", "scheduler_state")
                   if getattr(checkpoint, name) is None]
        if missing:
            raise CheckpointError(f"{path}: the checkpoint holds no {', '.join(missing)} to resume from")
        self.network.load_state_dict(checkpoint.model_state)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.scheduler.load_state_dict(checkpoint.scheduler_state)
        if checkpoint.scaler_state:
            self.scaler.load_state_dict(checkpoint.scaler_state)
        self.epoch = checkpoint.epoch
        self.partial = checkpoint.partial_epoch
        self.best_dice, self.best_epoch = checkpoint.best_dice, checkpoint.best_epoch
        if self._best_is_missing():  # lost before it was written: the next validated epoch writes one
            self.best_dice, self.best_epoch = -1.0, 0
        # checkpoints from before the field existed: the logged epochs' seconds (see run())
        trained_seconds = checkpoint.trained_seconds
        self.trained_before = float("nan") if trained_seconds is None else trained_seconds
        self.clock_start = time.monotonic()
        states = checkpoint.rng
        if len(states) == self.ctx.world_size:
            restore_rng_state(states[self.ctx.rank])
        else:
            warnings.warn(
                f"{path}: saved by {len(states)} process(es), resumed by {self.ctx.world_size}: random states "
                "are reseeded, so the run continues but not bit-identically",
                stacklevel=2,
            )
            seed_everything(self.seed + self.ctx.rank + self.epoch)

    # --------------------------------------------------------------------------------------------- training
    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).float()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self.model(images)
        loss = self.loss(outputs, labels)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def _validate(self, stop: StopRequest) -> list[float] | None:
        counts = confusion_counts(
            self.network,
            self.val_cases_here,
            self.patch_size,
            self.num_classes,
            self.device,
            self.autocast_dtype,
            self.plans.batch_size,
            should_stop=lambda: stop.requested,
            ignore_label=self.ignore_label,
        )
        if any_process(self.ctx, counts is None):
            return None
        return dice_per_class(all_reduce_sum(self.ctx, counts))

    def run(self, resume_from: Path | None = None) -> dict[str, Any]:
        """Train the remaining epochs; SIGINT/SIGTERM save checkpoint_latest and return early ("interrupted",
        with the signal in "stop_signal")."""
        if resume_from is not None:
            self.restore(resume_from)
        log = (
            TrainingLog(self.fold_dir, self.class_names, resume_after_epoch=self.epoch)
            if self.ctx.is_main
            else None
        )
        if math.isnan(self.trained_before):
            self.trained_before = sum(row["seconds"] for row in log.rows) if log is not None else 0.0
        started_at_epoch = self.epoch
        interrupted = out_of_time = False
        stop_signal = None
        # a run resumed with its budget already spent trains no further step: it only closes (validates and
        # logs) an epoch that a stop cut short, and otherwise ends at once
        spent = resume_from is not None and self._past_deadline()
        self.model.train()
        try:
            with StopRequest(announce=self.ctx.is_main) as stop:
                while self.epoch < self.settings.epochs:
                    if spent and self.partial is None:
                        out_of_time = True
                        break
                    row = self._run_epoch(stop, train=not spent)
                    if row is None:
                        interrupted = True
                        break
                    best = row["val_dice"] > self.best_dice
                    if best:
                        self.best_dice, self.best_epoch = row["val_dice"], self.epoch
                    # log first: a kill between the two leaves a row past the checkpoint, which a resumed
                    # run drops and redoes, never a checkpoint whose row is missing
                    if log is not None:
                        log.append(row)
                        self._report(row)
                    self.save(best=best)
                    if any_process(self.ctx, stop.requested):
                        interrupted = True
                        break
                    if self._past_deadline():
                        out_of_time = self.epoch < self.settings.epochs
                        break
                stop_signal = stop.signal_number
                if out_of_time:
                    self._report_spent_budget()
                if not interrupted:
                    self._save_missing_best(log)
        finally:
            if log is not None:
                log.close()
        return {
            "fold": self.fold,
            "epochs_run": self.epoch - started_at_epoch,
            "last_epoch": self.epoch,
            "epochs": self.settings.epochs,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "val_dice": self.last_dice,
            "interrupted": interrupted,
            "stop_signal": stop_signal,  # SIGINT or SIGTERM received here (None: none, or another process's)
            "out_of_time": out_of_time,
            "checkpoint_latest": self.fold_dir / CHECKPOINT_NAMES["latest"],
            "checkpoint_best": self.fold_dir / CHECKPOINT_NAMES["best"],
            "log": self.fold_dir / "train_log.csv",
        }

    def trained_seconds(self) -> float:
        """Wall-clock seconds of training (validation included) over the whole run, resumes included."""
        return self.trained_before + (time.monotonic() - self.clock_start)

    def _report_spent_budget(self) -> None:
        """Say (once, from the main process) that the time budget ends the run before its last epoch."""
        if self.ctx.is_main and self.budget_seconds is not None:
            print(
                f"{self.fold_dir}: the training budget of {self.budget_seconds / 60:g} minutes is spent after "
                f"epoch {self.epoch} of {self.settings.epochs}; a larger one (--max-minutes, max_minutes) with "
                "--resume trains on",
                file=sys.stderr,
            )

    def _past_deadline(self) -> bool:
        """Whether the training-time budget is spent (agreed by every process)."""
        return self.budget_seconds is not None and any_process(
            self.ctx, self.trained_seconds() > self.budget_seconds
        )

    def _run_epoch(self, stop: StopRequest, train: bool = True) -> dict[str, float] | None:
        """One epoch (from where a cut-short one stopped; with `train` False only its validation); None when a
        stop request cut it short (saved)."""
        epoch = self.epoch + 1
        start_time = time.monotonic()
        iterations = self.settings.iters_per_epoch
        done = int(self.partial["iterations"]) if self.partial else 0
        loss_sum = float(self.partial["loss_sum"]) if self.partial else 0.0
        # an epoch resumed part-way counts the seconds of its first part too
        start_time -= float(self.partial.get("seconds", 0.0)) if self.partial else 0.0
        batches = EpochBatches(
            self.sampler, self.batch_size, iterations, self.seed, self.ctx.rank, epoch, done
        )
        loader = epoch_loader(batches, self.loader_workers, pin_memory=self.device.type == "cuda")
        bar = tqdm(
            total=iterations,
            initial=done,
            desc=f"fold {self.fold} epoch {epoch}/{self.settings.epochs}",
            unit="it",
            # off a terminal (a log file) the bar's redraws would pile up: the epoch's line is the progress
            disable=not self.ctx.is_main or not on_terminal(),
            leave=False,
            file=sys.stderr,
        )
        with bar:
            for images, labels in loader if train else ():
                loss_sum += self._train_step(images, labels)
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / done:.4f}")
                if done < iterations and any_process(self.ctx, stop.requested):
                    self.partial = {
                        "iterations": done,
                        "loss_sum": loss_sum,
                        "seconds": time.monotonic() - start_time,
                    }
                    self.save()
                    return None
                if done < iterations and self._past_deadline():
                    break  # the budget ends this epoch early; it is validated and logged like a full one
        self.partial = {"iterations": done, "loss_sum": loss_sum, "seconds": time.monotonic() - start_time}
        dice = self._validate(stop)
        if dice is None:  # stopped during validation: the training part of the epoch is kept
            self.save()
            return None
        train_loss = float(all_reduce_sum(self.ctx, torch.tensor([loss_sum / done]))) / self.ctx.world_size
        self.epoch, self.partial = epoch, None
        self.last_dice = float(np.mean(dice))
        row = {"epoch": epoch, "train_loss": train_loss, "val_dice": self.last_dice}
        row.update({dice_column(name): value for name, value in zip(self.class_names, dice, strict=True)})
        row.update({"lr": self.optimizer.param_groups[0]["lr"], "seconds": time.monotonic() - start_time})
        return row

    def _report(self, row: dict[str, float]) -> None:
        tqdm.write(
            f"fold {self.fold} epoch {int(row['epoch'])}/{self.settings.epochs}: loss {row['train_loss']:.4f}, "
            f"val Dice {row['val_dice']:.4f} (best {self.best_dice:.4f} at epoch {self.best_epoch}), "
            f"{row['seconds']:.1f} s",
            file=sys.stderr,
        )

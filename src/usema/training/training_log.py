"""What a training run reports: train_log.csv (one row per epoch), progress.png curves, and TensorBoard if present."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Sequence
from pathlib import Path

from usema.utils.atomic import atomic_path, reporting_full_disk

LOG_NAME = "train_log.csv"
PLOT_NAME = "progress.png"


def dice_column(class_name: str) -> str:
    """The log column of one foreground class's validation Dice."""
    return f"dice_{class_name}"


class TrainingLog:
    """Appends one flushed CSV row per epoch, redraws the curves, and mirrors the numbers to TensorBoard."""

    def __init__(self, fold_dir: str | Path, class_names: Sequence[str], resume_after_epoch: int = 0):
        """Start a new log, or keep the rows up to `resume_after_epoch` of an existing one when resuming."""
        self.fold_dir = Path(fold_dir)
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.fold_dir / LOG_NAME
        self.columns = [
            "epoch",
            "train_loss",
            "val_dice",
            *(dice_column(n) for n in class_names),
            "lr",
            "seconds",
        ]
        self.rows: list[dict[str, float]] = []
        if resume_after_epoch > 0 and self.path.is_file():
            # rows past the checkpoint (an epoch logged just before a kill) are redone by the resumed run
            self.rows = [row for row in self._read() if row["epoch"] <= resume_after_epoch]
        self._rewrite()
        self._tensorboard = _open_tensorboard(self.fold_dir / "tensorboard")

    def _read(self) -> list[dict[str, float]]:
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != self.columns:
                return []
            rows = []
            for row in reader:
                # a row cut short (a kill or a full disk while it was written) is left out, not the whole log
                with contextlib.suppress(TypeError, ValueError):
                    rows.append({key: float(value) for key, value in row.items()})
            return rows

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow(_formatted(row))

    def append(self, row: dict[str, float]) -> None:
        """Record one epoch: appended and flushed to the CSV, then the plot and TensorBoard are updated."""
        row = {column: float(row[column]) for column in self.columns}
        self.rows.append(row)
        with reporting_full_disk(self.path), self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(_formatted(row))
            handle.flush()
            os.fsync(handle.fileno())
        self.plot()
        if self._tensorboard is not None:
            for column in self.columns[1:]:
                self._tensorboard.add_scalar(column, row[column], int(row["epoch"]))
            self._tensorboard.flush()

    def plot(self) -> Path:
        """Draw the loss and Dice curves to progress.png (atomically: a reader never sees a half-written file)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(10, 4), dpi=80)
        FigureCanvasAgg(figure)
        loss_axes, dice_axes = figure.subplots(1, 2)
        epochs = [row["epoch"] for row in self.rows]
        loss_axes.plot(epochs, [row["train_loss"] for row in self.rows], marker=".", label="train loss")
        loss_axes.set_xlabel("epoch")
        loss_axes.set_title("training loss")
        dice_axes.plot(epochs, [row["val_dice"] for row in self.rows], marker=".", linewidth=2, label="mean")
        for column in self.columns[3:-2]:
            dice_axes.plot(
                epochs, [row[column] for row in self.rows], alpha=0.6, label=column[len("dice_") :]
            )
        dice_axes.set_xlabel("epoch")
        for axes in (loss_axes, dice_axes):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        dice_axes.set_title("validation Dice")
        dice_axes.set_ylim(0, 1)
        dice_axes.legend(loc="lower right", fontsize="small")
        # fixed margins: matplotlib's tight_layout costs more than the drawing itself
        figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.2)
        path = self.fold_dir / PLOT_NAME
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
        return path

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _formatted(row: dict[str, float]) -> dict[str, str]:
    return {key: (str(int(value)) if key == "epoch" else f"{value:.6g}") for key, value in row.items()}


def _open_tensorboard(log_dir: Path):
    """A SummaryWriter when the tensorboard package is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))

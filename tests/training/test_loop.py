"""The training loop: a mid-epoch stop saves, and the resume is exact."""

import shutil
import signal
import threading

import pytest
import torch

from usema.checkpoint import Checkpoint
from usema.training import loop
from usema.training.run_training import train


def test_stop_signal_mid_epoch_saves_and_resume_is_exact(tiny_run, tmp_path, monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    data, run = tiny_run
    straight = tmp_path / "straight"
    shutil.copytree(run, straight)
    train(data, straight, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5)

    original_step = loop.Trainer._train_step
    steps = []

    def step_then_signal(self, images, labels):
        loss = original_step(self, images, labels)
        steps.append(loss)
        if len(steps) == 4:  # the first step of epoch 2
            signal.raise_signal(signal.SIGTERM)
        return loss

    monkeypatch.setattr(loop.Trainer, "_train_step", step_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    stopped = train(data, run, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert stopped["interrupted"] and stopped["last_epoch"] == 1
    saved = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    assert saved.epoch == 1 and saved.partial_epoch["iterations"] == 1

    monkeypatch.setattr(loop.Trainer, "_train_step", original_step)
    resumed = train(data, run, epochs=2, iters_per_epoch=3, device="cpu", folds=2, seed=5, resume=True)
    assert resumed["last_epoch"] == 2 and not resumed["interrupted"]
    expected = Checkpoint.load(straight / "fold_0" / "checkpoint_latest.pt").model_state
    got = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt").model_state
    assert all(torch.equal(expected[k], got[k]) for k in expected)

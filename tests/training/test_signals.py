"""SIGINT/SIGTERM during training: handlers set a flag, are restored, and a killed run leaves a checkpoint."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from usema.checkpoint import Checkpoint
from usema.training.signals import StopRequest


def test_first_signal_sets_the_flag_second_interrupts_and_handlers_come_back():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    previous = signal.getsignal(signal.SIGINT)
    with StopRequest(announce=False) as stop:
        assert signal.getsignal(signal.SIGINT) != previous
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_training_saves_a_checkpoint_and_exits_with_the_signal_code(tiny_run, signum, exit_code):
    data, run = tiny_run
    command = [
        sys.executable,
        "-m",
        "usema.cli",
        "train",
        str(data),
        "-o",
        str(run),
        "--folds",
        "2",
        "--epochs",
        "1000",
        "--iters-per-epoch",
        "1",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "fold_0" / "train_log.csv"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= 2:  # header + one epoch
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == exit_code, stderr[-2000:]  # `usema train && usema predict` stops here
    assert f"{signum.name} received" in stderr
    assert stderr.strip().splitlines()[-1].startswith("usema train: stopped by a signal;")
    checkpoint = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt")
    assert 1 <= checkpoint.epoch < 1000
    assert checkpoint.model_state and checkpoint.optimizer_state["state"]

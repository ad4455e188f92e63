"""Shared fixtures: where the real data lives and whether its absence fails or skips."""

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require_shared() -> bool:
    return os.environ.get("USEMA_REQUIRE_SHARED_DATA", "") not in ("", "0", "false", "False")


def shared_dataset(name: str) -> Path:
    """Path of ../shared/data/<name>; skips the test when absent, fails instead under USEMA_REQUIRE_SHARED_DATA=1."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = f"shared dataset {path} is missing"
        if _require_shared():
            pytest.fail(message + " and USEMA_REQUIRE_SHARED_DATA=1 is set")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return shared_dataset("hippocampus")


@pytest.fixture
def dsb2018_dir() -> Path:
    return shared_dataset("dsb2018")


@pytest.fixture
def one_thread():
    """Run on one CPU thread: tiny tensors are faster without a second thread on a busy 2-core machine, and
    training gives identical numbers from run to run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

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
def kvasir_dir() -> Path:
    return shared_dataset("kvasir_seg")


@pytest.fixture
def chaos_dir() -> Path:
    return shared_dataset("chaos_mr_t2")


@pytest.fixture
def one_thread():
    """Run on one CPU thread: tiny tensors are faster without a second thread on a busy 2-core machine, and
    training gives identical numbers from run to run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def two_fold_run(tmp_path_factory):
    """(data, run) of a 2D phantom dataset planned for a tiny USEMA, whose folds 0 and 1 hold untrained networks of
    different seeds as checkpoint_best.pt and checkpoint_latest.pt (shared: copy the run before changing it)."""
    from usema.checkpoint import CHECKPOINT_NAMES, Checkpoint
    from usema.data.phantoms import make_phantom_dataset
    from usema.planning.planner import plan_dataset

    root = tmp_path_factory.mktemp("two_folds")
    data = make_phantom_dataset(root / "data", spatial_dims=2, num_cases=4, shape=(24, 20), seed=0)
    run = root / "run"
    plans = plan_dataset(data, run, device="cpu", patch_size=[16, 16], batch_size=2,
                         network_settings={"base_features": 4, "blocks_per_stage": 1, "head_dim": 4})
    for fold in (0, 1):
        torch.manual_seed(fold)
        network = plans.network
        checkpoint = Checkpoint(network.build().state_dict(), network, plans, fold=fold, epoch=1)
        for name in CHECKPOINT_NAMES.values():
            checkpoint.save(run / f"fold_{fold}" / name)
    return data, run

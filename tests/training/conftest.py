"""A tiny planned and preprocessed 3D phantom run shared by the training tests (copied per test)."""

import dataclasses
import shutil

import pytest

from usema.data.phantoms import make_phantom_dataset
from usema.planning.planner import plan_dataset
from usema.preprocessing.dataset import preprocess_dataset

# A small real network from the registry (no attention: a few ms per step on one CPU thread).
TINY_MODEL = "usema-nosema"
TINY_SETTINGS = {"base_features": 4, "blocks_per_stage": 1}


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory):
    """(data folder, run folder) with plans.json (16^3 patches, batch 2, tiny model) and preprocessed cases."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_phantom_dataset(root / "data", spatial_dims=3, num_cases=6, shape=(20, 24, 20), seed=1)
    run = root / "run"
    plans = plan_dataset(
        data,
        run,
        model=TINY_MODEL,
        device="cpu",
        patch_size=[16, 16, 16],
        batch_size=2,
        network_settings=TINY_SETTINGS,
    )
    # a user's edit that training must honour: validate on one case only
    plans = plans.with_training(dataclasses.replace(plans.training, val_max_cases=1))
    plans.save(run)
    preprocess_dataset(plans, run)
    return data, run


@pytest.fixture
def tiny_run(prepared_run, tmp_path):
    """A fresh copy of the prepared run for one test: (data folder, run folder)."""
    data, run = prepared_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return data, copy


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test of this folder runs on one thread (tests/conftest.py)."""

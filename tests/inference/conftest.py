"""Every inference test runs on one CPU thread."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test of this folder runs on one thread (tests/conftest.py)."""

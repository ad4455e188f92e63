"""Old module paths (before issue 17's renames) import for one release, warn, and are the new modules."""

import importlib
import importlib.machinery
import subprocess
import sys

import pytest

import usema  # noqa: F401 (installs the finder)
from usema.moved_modules import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_path_warns_and_is_the_new_module(old):
    sys.modules.pop(old, None)  # a previous import would be served from the cache without a warning
    with pytest.warns(FutureWarning, match=rf"{old} moved to {MOVED_MODULES[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])


def test_the_old_paths_no_longer_exist_as_files():
    # the table only lists paths that moved: a real module at an old path would shadow the new one silently
    for old in MOVED_MODULES:
        sys.modules.pop(old, None)
        spec = importlib.machinery.PathFinder.find_spec(
            old.rsplit(".", 1)[1], importlib.import_module(old.rsplit(".", 1)[0]).__path__
        )
        assert spec is None, old


def test_an_unknown_module_is_still_not_found():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("usema.training.no_such_module")


def test_the_old_import_of_a_function_works_in_a_fresh_interpreter():
    code = "from usema.training.api import train; from usema.training.run_training import train as t; print(train is t)"
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "usema.training.api moved to usema.training.run_training" in done.stderr
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr

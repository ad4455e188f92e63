"""Old module paths that moved in 0.1 (issue 17's renames): importing one still works for one release, with a
FutureWarning naming the new path, and gives the new module itself (so its names are the new ones).

An import hook rather than a stub file per old path: one table to read and delete when the release passes, and
no modules that would each need a mirrored test."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED_MODULES = {
    "usema.training.api": "usema.training.run_training",
    "usema.inference.api": "usema.inference.predict_files",
    "usema.evaluation.api": "usema.evaluation.evaluate_folder",
    "usema.training.device_plan": "usema.planning.device",
    "usema.training.estimate": "usema.planning.estimate",
    "usema.training.checkpoint": "usema.checkpoint",
    "usema.training.data": "usema.training.batches",
    "usema.training.progress": "usema.training.training_log",
    "usema.data.instances": "usema.data.instance_classes",
    "usema.evaluation.instances": "usema.evaluation.instance_matching",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of `MOVED_MODULES` and loads them as their new module, warning once per import."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (the finder protocol's types)
        """A spec for an old path; None (let the other finders look) for any other name."""
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec) -> ModuleType:  # noqa: ANN001
        """The new module, imported (the old name becomes an alias of it in sys.modules)."""
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old path is removed in the next release", FutureWarning, stacklevel=2
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module ran when it was imported."""


def install() -> None:
    """Put the finder on sys.meta_path once (after the path finders: a real module always wins)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())

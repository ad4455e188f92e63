"""usema.training: a fold of a planned run trained (`usema.train`, `usema train`).

The names other packages (the benchmarks) use: `load_or_create_splits(run_dir, case_ids, folds, seed)` and
`SPLITS_NAME`, the run's cross-validation split (RUN/splits.json, made once and reused), and
`stop_if_interrupted(summary)`, which raises `usema.errors.Interrupted` when a training returned early on
SIGINT or SIGTERM. They are imported when first asked for, so that importing one training module does not
import the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that holds it
_EXPORTS = {
    "SPLITS_NAME": "usema.training.splits",
    "load_or_create_splits": "usema.training.splits",
    "stop_if_interrupted": "usema.training.run_training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public names of the package, each imported from its module when first asked for."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Errors that the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class UsemaError(Exception):
    """Base class of the errors a user can act on."""


class DataError(UsemaError, ValueError):
    """Bad input data: names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class CheckpointError(UsemaError):
    """A checkpoint that is missing, unsafe, or belongs to another model or plan."""

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


class Interrupted(Exception):
    """Work stopped by SIGINT or SIGTERM after saving what it had; the CLI exits with 128 + the signal number
    (130, 143), so that `usema train ... && usema predict ...` does not go on with a half-trained model."""

    def __init__(self, message: str, signal_number: int | None):
        self.signal_number = signal_number
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        """The shell's code for death by the signal; 1 when the signal is not known (another process got it)."""
        return 128 + self.signal_number if self.signal_number else 1

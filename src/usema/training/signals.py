"""Stop training cleanly on SIGINT or SIGTERM: the loop saves its checkpoint at the next step and returns."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class StopRequest:
    """While entered, the first SIGINT/SIGTERM sets `requested` (the loop polls it); a second one interrupts
    at once (KeyboardInterrupt). The previous handlers are restored on exit.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True):
        self.requested = False
        self.signal_number: int | None = None  # the signal that asked to stop
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal_number = True, signum
        if self.announce:
            name = signal.Signals(signum).name
            print(
                f"\n{name} received: saving checkpoint_latest and stopping (send it again to abort at once)",
                file=sys.stderr,
                flush=True,
            )

"""Progress that shows wherever the output goes: a tqdm bar on a terminal, plain lines in a log file.

tqdm draws its bar with carriage returns: on a terminal that is one line redrawn, in a file it is either
nothing (tqdm's disable=None off a terminal) or thousands of fragments on one line. Off a terminal, `progress`
prints a whole line every so many items instead, with the time spent and an estimate of the time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
# Off a terminal: a line at the first item, then about every twentieth of the work, and at the end.
LINES_PER_RUN = 20


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stderr, where progress goes) is a terminal that can redraw a bar."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads them in: s, min or h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress(items: Sequence[Item], desc: str, unit: str, stream: TextIO | None = None) -> Iterator[Item]:
    """Yield `items`, showing progress on `stream` (default: stderr): a bar on a terminal, else a line such as
    `predict: 40/200 cases, 1.5 min, about 6.0 min left` at the first item, every twentieth, and the last.
    """
    stream = stream or sys.stderr
    if on_terminal(stream):
        yield from tqdm(items, desc=desc, unit=unit, file=stream)
        return
    total = len(items)
    every = max(1, total // LINES_PER_RUN)
    started = time.monotonic()
    for index, item in enumerate(items, start=1):
        yield item
        if index == 1 or index % every == 0 or index == total:
            spent = time.monotonic() - started
            left = f", about {duration(spent / index * (total - index))} left" if index < total else ""
            print(f"{desc}: {index}/{total} {unit}s, {duration(spent)}{left}", file=stream, flush=True)

"""One writer per run folder: an exclusive lock on a file in the folder that holds the writer's process id.

The lock is an fcntl (flock) lock, which the kernel drops when its process ends, however it ends: the file a
killed run leaves behind is a stale lock that the next writer takes over. usema runs on POSIX systems (Linux,
macOS), where fcntl exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from usema.errors import UsemaError

LOCK_NAME = ".usema.lock"
# A killed run's data-loader workers (forked, so sharing its lock) notice their parent's death within about
# 5 s (torch's MP_STATUS_CHECK_INTERVAL) and exit: a lock whose named holder is dead is waited for this long.
DEAD_HOLDER_WAIT_S = 15.0


def _alive(pid: str) -> bool:
    """Whether process `pid` exists ("unknown" counts as alive)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(fd: int) -> str:
    """The process id written in the lock file, or "unknown" (the holder may not have written it yet)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | Path, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (FOLDER/.usema.lock, holding this process's id) while the block runs.

    Where another live process holds it, waits up to `wait_s` seconds (saying once whom it waits for), then
    raises UsemaError naming the folder and the holder's process id. Folders the lock had to create are removed
    again on release where the block left them empty (a command that failed before writing leaves no trace).
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    path = folder / LOCK_NAME
    started = time.monotonic()
    told = False
    while True:
        folder.mkdir(parents=True, exist_ok=True)  # again each try: a released holder may have removed it
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # removed between the two calls: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            waited = time.monotonic() - started
            if waited < (wait_s if _alive(holder) else max(wait_s, DEAD_HOLDER_WAIT_S)):
                if wait_s and not told:
                    print(f"{folder} is in use by usema process {holder}; waiting for it", file=sys.stderr, flush=True)
                    told = True
                time.sleep(0.2)
                continue
            raise UsemaError(
                f"{folder} is in use by another usema process (pid {holder}); wait for it to end or stop it"
            ) from None
        # The previous holder removes the file on release: if it did so between our open and our lock, the file
        # we locked is gone and the next writer would lock a new one. Lock the file that is there.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # still locked here: no other process can be holding this file
        os.close(fd)
        for made in created:  # innermost first; a folder something was written into stays
            try:
                made.rmdir()
            except OSError:
                break

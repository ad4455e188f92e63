"""Atomic file writes: a temporary file beside the target, then one rename, so nothing is ever half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from usema.errors import UsemaError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _suffix(name: str) -> str:
    # Keep the full suffix (".nii.gz") so that writers that pick the format from the name still do.
    lower = name.lower()
    for double in (".nii.gz", ".ome.tif", ".ome.tiff"):
        if lower.endswith(double):
            return name[-len(double) :]
    return Path(name).suffix


def full_disk_errno(err: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when `err` is, or was raised from or while handling, a write that found no space (torch.save
    wraps such an OSError in a RuntimeError, or raises it while handling its own "enforce fail"); else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err.errno
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def reporting_full_disk(path: str | Path) -> Iterator[None]:
    """Turn a write that fails for want of disk space or quota (ENOSPC, EDQUOT, also inside the RuntimeError that
    torch.save raises) into a UsemaError naming `path`: one line the user can act on, where a traceback would only
    repeat it."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        number = full_disk_errno(err)
        if number is None:
            raise
        raise UsemaError(
            f"{path}: cannot write it, {os.strerror(number).lower()}; free some space and run again "
            "(files written before are intact)"
        ) from err


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` with the same suffix; on success it replaces `path` in one rename,
    on failure it is removed and `path` is left as it was. A full disk is reported as `reporting_full_disk`
    does."""
    path = Path(path)
    with reporting_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{_suffix(path.name)}", dir=path.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(
            tmp, 0o666 & ~_UMASK
        )  # mkstemp makes 0600 files; give results the permissions of a plain open()
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def removed_if_left_empty(folder: str | Path) -> Iterator[Path]:
    """Run the block that writes into `folder`; if it fails, a folder that it created and left without a file
    (empty subfolders aside) is removed, so that a failed run leaves nothing behind."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir():
            for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):  # deepest first
                with contextlib.suppress(OSError):
                    os.rmdir(root)  # refuses a folder that holds anything
        raise

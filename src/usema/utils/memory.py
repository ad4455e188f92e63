"""This machine's memory, where the system says."""

from __future__ import annotations

import os


def physical_memory_bytes() -> int | None:
    """Total physical memory in bytes, or None where the system does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None

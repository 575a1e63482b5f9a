"""How much memory this machine has (the index budget's default, fit's refusal)."""

from __future__ import annotations

import os

FALLBACK = 8 << 30  # where the platform does not say


def physical_memory_bytes() -> int:
    """The machine's RAM in bytes (not what is free now: that changes by the second)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK

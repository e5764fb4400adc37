"""Memory a service used for one large task handed back to the operating system.

A full dataset version or a training allocates in proportion to the project (a frame per row,
the pool's features) and frees it all when done. The C library keeps freed memory for reuse:
many small blocks between a few live ones stay mapped, so a process's resident size steps up at
each large task and never comes down. :func:`trim` asks glibc to return every free page
(``malloc_trim``, which also releases free pages inside its heaps); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

__all__ = ["trim"]


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # absent from musl: AttributeError
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Return the C heap's free pages to the system; whether it could (glibc only)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True

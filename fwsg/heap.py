"""Giving a burst's freed heap back to the kernel.

A cold start of a million members allocates and frees tens of megabytes on the way (netlink
batches, libnftables buffers); the C allocator keeps that freed memory mapped, so the process
would stay that large although its state is a few bytes per element. :func:`release` asks
glibc to return it (``malloc_trim``); elsewhere it does nothing.
"""

import ctypes
import ctypes.util

BURST_ELEMENTS = 20000  # element changes in one transaction above which release() is worth it

_trim = None


def release():
    """Return the heap's free memory to the kernel (glibc's ``malloc_trim(0)``); True when
    asked, False where the C library has no such call. Costs a walk of the free lists."""
    global _trim
    if _trim is None:
        _trim = _find_trim()
    if not _trim:
        return False
    _trim(0)
    return True


def _find_trim():
    """``malloc_trim`` of the C library this process runs on, or False. Looked up among the
    symbols already loaded first (no search: ``find_library`` runs ``ldconfig``, milliseconds
    on a cold start's clock), then in the C library ``find_library`` names."""
    for where in (lambda: None, lambda: ctypes.util.find_library("c") or "libc.so.6"):
        try:
            trim = ctypes.CDLL(where()).malloc_trim
        except (OSError, AttributeError):
            continue
        trim.argtypes = [ctypes.c_size_t]
        return trim
    return False

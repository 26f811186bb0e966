"""glibc malloc tuning for a process that moves megabytes through short-lived buffers.

Bytes from the origin arrive as objects of 16 KiB to 256 KiB that live only until
their slice is on disk and sent. glibc's dynamic mmap threshold soon serves such
sizes from the heap, and freed heap memory stays resident: measured under 1,000
cold readers, 133 MiB of a 150 MiB heap was free yet counted in RSS. A fixed
threshold maps these buffers separately, so they go back to the system when freed.
The free top of the heap is kept up to TRIM_THRESHOLD: the 60 KiB pieces of a cold
read (below the mmap threshold, see proxy.cache.runs.FILL_PIECE) come and go by
megabytes as slices reach the disk, and with a 1 MiB trim threshold the heap shrank
and grew back all the time, each new page a fault and a zeroed page (measured: 12,000
faults per cold 256 MiB GET, a fifth of its socket-receive time; 1,800 with 16 MiB).
Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024  # buffers this large get their own mapping, unmapped on free
TRIM_THRESHOLD = 16 * 1024 * 1024  # free heap top beyond this goes back to the system (one fill_memory's worth)

log = logging.getLogger("rangeproxy")


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds")
    return ok

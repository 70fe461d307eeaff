"""Fresh buffers that are cheap to fill.

Fresh memory is faulted in one 4 KiB page at a time as it is first written; on many hosts
(virtual machines above all) that costs more than decoding into it. Buffers too large for
the C allocator to serve from memory it already holds (glibc maps anything above 32 MiB
afresh) are therefore taken from a private anonymous mapping advised to use 2 MiB
transparent huge pages, which turns 512 faults into one. Smaller ones come from numpy, whose
allocator can hand back memory that is already mapped. (Decoded tensors are ordinary torch /
numpy allocations: a shared huge-page arena for them was measured slower on repeated loads,
since it always takes fresh memory where the heap reuses it.)
"""

from __future__ import annotations

import mmap

import numpy as np

# Buffers below this size come from numpy (glibc's largest threshold for fresh mappings).
HUGE_MIN_BYTES = 32 << 20
_HUGE_PAGE = 2 << 20


def fresh(nbytes: int) -> np.ndarray:
    """A writable uint8 array of `nbytes` (contents undefined); from a huge-page mapping,
    starting on a 2 MiB boundary, when large enough and the platform has one."""
    if nbytes < HUGE_MIN_BYTES or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.empty(nbytes, dtype=np.uint8)
    mm = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mm.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(mm, dtype=np.uint8)
    start = -whole.ctypes.data % _HUGE_PAGE
    return whole[start : start + nbytes]

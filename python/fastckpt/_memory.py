"""Fresh buffers that are cheap to fill, from the core's buffer pool.

Fresh memory is faulted in one 4 KiB page at a time as it is first written; on many hosts
(virtual machines above all) that costs more than decoding into it. Large buffers (file
reads, decoded tensors) therefore come from `_core.Buffer`: a mapping of its own, on a
2 MiB boundary and advised to use transparent huge pages, which goes back to a pool when
the last array or tensor over it is freed, so the next load of about that size reuses it
without a single fault. `set_pool_limit` caps the unused memory the pool keeps.
"""

from __future__ import annotations

import numpy as np

from . import _core

# Smaller buffers come from numpy, whose allocator serves them from memory it holds.
POOL_MIN_BYTES: int = _core.POOL_MIN_BYTES


def pooled(nbytes: int) -> bool:
    """Whether a buffer of `nbytes` comes from the pool (large enough, pooling on)."""
    return nbytes >= POOL_MIN_BYTES and _core.pool_limit() > 0


def fresh(nbytes: int) -> np.ndarray:
    """A writable uint8 array of `nbytes` (contents undefined); a pooled, page-aligned
    buffer (2 MiB-aligned from 2 MiB up) when `pooled(nbytes)`."""
    if not pooled(nbytes):
        return np.empty(nbytes, dtype=np.uint8)
    return pooled_array(nbytes)


def pooled_array(nbytes: int) -> np.ndarray:
    """A writable uint8 array of `nbytes` over a buffer of the pool (the caller has
    checked `pooled(nbytes)`)."""
    return np.asarray(_core.Buffer(nbytes))


def set_pool_limit(nbytes: int) -> int:
    """Caps the bytes of freed buffers kept for reuse (default 1 GiB); returns the previous
    cap. 0 turns pooling off: what is kept is released and decoded tensors are ordinary
    numpy / torch allocations again."""
    return _core.set_pool_limit(nbytes)


def pooled_bytes() -> int:
    """Bytes of freed buffers the pool keeps for reuse now."""
    return _core.pooled_bytes()

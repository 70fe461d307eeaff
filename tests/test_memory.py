"""Fresh buffers (`fastckpt._memory.fresh`): huge-page mappings for large file reads."""

from __future__ import annotations

import mmap

import fastckpt
import numpy as np
import torch
from fastckpt import _memory

MIB = 1 << 20


def mapping_of(a: np.ndarray) -> mmap.mmap | None:
    """The mapping `a` views, if it was cut from one made by `_memory.fresh`."""
    base: object = a
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def test_small_buffers_come_from_numpy():
    for n in (0, 1, 4 * MIB, _memory.HUGE_MIN_BYTES - 1):
        a = _memory.fresh(n)
        assert len(a) == n and a.dtype == np.uint8 and mapping_of(a) is None


def test_large_buffers_are_writable_and_start_on_huge_page_boundaries():
    for n in (_memory.HUGE_MIN_BYTES, _memory.HUGE_MIN_BYTES + 3):
        a = _memory.fresh(n)
        assert len(a) == n and a.flags.writeable and mapping_of(a) is not None
        assert a.ctypes.data % (2 * MIB) == 0
        a[:] = 7
        a[-1] = 9
        assert int(a[:-1].sum()) == 7 * (n - 1) and a[-1] == 9


def test_large_files_are_read_into_huge_page_buffers(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(11 * MIB, generator=g), "b": torch.arange(5)}
    path = tmp_path / "w.fckpt"
    fastckpt.save(sd, path)
    assert path.stat().st_size >= _memory.HUGE_MIN_BYTES
    buf = fastckpt._read_file(path)
    assert mapping_of(buf) is not None
    assert bytes(buf) == path.read_bytes()
    back = fastckpt.load(path)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    back["w"] += 1  # an ordinary tensor of its own, outliving the read buffer
    assert torch.equal(back["w"], sd["w"] + 1)

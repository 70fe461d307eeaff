"""The buffer pool (`fastckpt._memory`, core `pool`): decoded tensors and file reads in
reusable page-aligned buffers, reused after they are freed, with a cap and an off switch."""

from __future__ import annotations

import gc

import fastckpt
import numpy as np
import pytest
import torch
from fastckpt import _core, _memory

MIB = 1 << 20


def pool_buffer(a: np.ndarray) -> _core.Buffer | None:
    """The pooled buffer array `a` lives in, if any."""
    base: object = a
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, _core.Buffer) else None


@pytest.fixture
def pool_on():
    """An empty pool (other tests leave buffers in it) with room for these tests."""
    old = fastckpt.set_pool_limit(0)
    fastckpt.set_pool_limit(256 * MIB)
    yield
    fastckpt.set_pool_limit(old)


def test_small_buffers_come_from_numpy(pool_on):
    for n in (0, 1, 4096, _memory.POOL_MIN_BYTES - 1):
        a = _memory.fresh(n)
        assert len(a) == n and a.dtype == np.uint8 and pool_buffer(a) is None


def test_large_buffers_are_aligned_writable_and_reused(pool_on):
    for n in (_memory.POOL_MIN_BYTES, 3 * MIB + 5):
        a = _memory.fresh(n)
        assert len(a) == n and a.flags.writeable and pool_buffer(a) is not None
        assert a.ctypes.data % (2 * MIB if n >= 2 * MIB else 4096) == 0
        a[:] = 7
        a[-1] = 9
        assert int(a[:-1].sum()) == 7 * (n - 1) and a[-1] == 9
        at = a.ctypes.data
        del a
        gc.collect()
        assert _core.pooled_bytes() >= n
        b = _memory.fresh(n)
        assert b.ctypes.data == at  # the freed buffer, reused


def test_decoded_tensors_are_pooled_exact_and_usable(pool_on):
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(300, 700, generator=g), "h": torch.randn(99_999, generator=g).half(),
          "b": torch.randn(5, generator=g), "m": torch.ones(200_000, dtype=torch.bool),
          "z": torch.randn(4, 40_000, generator=g, dtype=torch.complex64)[:, ::3]}
    out = fastckpt.decode(fastckpt.encode(sd))
    for k, t in sd.items():
        assert out[k].dtype == t.dtype and torch.equal(out[k], t.contiguous()), k
        assert out[k].is_contiguous()
    assert out["w"].data_ptr() % 4096 == 0
    out["w"] += 1  # writable, and the caller's tensor is untouched
    assert torch.equal(out["w"], sd["w"] + 1)
    before = _core.pooled_bytes()
    del out
    gc.collect()
    big = [t.contiguous().numel() * t.element_size() for t in sd.values()]
    assert _core.pooled_bytes() - before >= sum(n for n in big if n >= _memory.POOL_MIN_BYTES)
    arr = fastckpt.decode(fastckpt.encode({"a": np.arange(100_000.0).reshape(1000, 100)}))["a"]
    assert arr.shape == (1000, 100) and np.array_equal(arr.ravel(), np.arange(100_000.0))
    assert pool_buffer(arr) is not None


def test_a_second_decode_reuses_the_first_ones_memory(pool_on):
    sd = {"w": torch.randn(1 << 20)}
    blob = fastckpt.encode(sd)
    first = fastckpt.decode(blob)["w"]
    at = first.data_ptr()
    del first
    gc.collect()
    again = fastckpt.decode(blob)["w"]
    assert again.data_ptr() == at and torch.equal(again, sd["w"])


def test_limit_zero_turns_pooling_off():
    old = fastckpt.set_pool_limit(0)
    try:
        assert _core.pooled_bytes() == 0
        assert pool_buffer(_memory.fresh(4 * MIB)) is None
        sd = {"w": torch.randn(100_000)}
        t = fastckpt.decode(fastckpt.encode(sd))["w"]
        assert torch.equal(t, sd["w"])
        del t
        gc.collect()
        assert _core.pooled_bytes() == 0
    finally:
        fastckpt.set_pool_limit(old)


def test_large_files_are_read_into_pooled_buffers(tmp_path, pool_on):
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(3 * MIB, generator=g), "b": torch.arange(5)}
    path = tmp_path / "w.fckpt"
    fastckpt.save(sd, path)
    buf = fastckpt._read_file(path)
    assert pool_buffer(buf) is not None
    assert bytes(buf) == path.read_bytes()
    back = fastckpt.load(path)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    back["w"] += 1  # a tensor of its own, outliving the read buffer
    assert torch.equal(back["w"], sd["w"] + 1)


def test_cpu_copy_is_an_exact_private_copy():
    torch = pytest.importorskip("torch")
    from fastckpt import _tensors

    base = torch.arange(600_000, dtype=torch.float32).reshape(600, 1000)
    cases = [base, base.t(), base.to(torch.bfloat16), base > 3, torch.empty(0, 5),
             torch.tensor(2.5), torch.randn(300, 300, dtype=torch.complex64).conj()]
    for t in cases:
        c = _tensors.cpu_copy(t)
        assert c.dtype == t.dtype and c.shape == t.shape and c.is_contiguous()
        assert torch.equal(c, t.resolve_conj())
        if t.numel():
            assert c.data_ptr() != t.data_ptr()


STORAGE = {"bfloat16": np.int16, "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8}


def test_decode_arrays_makes_fresh_arrays_of_each_tensors_shape_and_storage(pool_on):
    """`Reader.decode_arrays`: one new C-contiguous writable array per index, in the
    tensor's shape and numpy storage dtype, holding its exact bytes; large ones pooled;
    no two arrays share memory; a bad index or reference count is an error."""
    g = torch.Generator().manual_seed(1)
    sd = {"f": torch.randn(700, 300, generator=g), "b": torch.randn(3, 5, generator=g).bfloat16(),
          "e": torch.randn(9, generator=g).to(torch.float8_e4m3fn), "s": torch.tensor(7.5),
          "z": torch.ones(2, 0, 3), "u": torch.arange(40_000, dtype=torch.int64).reshape(4, -1),
          "q": torch.ones(17, dtype=torch.bool), "c": torch.randn(2, 2, dtype=torch.complex64)}
    reader = _core.Reader(np.frombuffer(fastckpt.encode(sd), dtype=np.uint8))
    specs = reader.specs()
    order = list(range(len(specs)))[::-1]
    arrays = reader.decode_arrays(order, 2)
    for i, a in zip(order, arrays):
        name, dtype, shape = specs[i][:3]
        t = sd[name]
        assert a.shape == tuple(shape) == tuple(t.shape), name
        assert a.dtype == np.dtype(STORAGE.get(dtype, dtype)), name
        assert a.flags.c_contiguous and a.flags.writeable, name
        assert a.tobytes() == t.contiguous().view(-1).view(torch.uint8).numpy().tobytes(), name
        assert (pool_buffer(a) is not None) == (a.nbytes >= _memory.POOL_MIN_BYTES), name
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays if a.nbytes)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    with pytest.raises(KeyError):
        reader.decode_arrays([len(specs)])
    with pytest.raises(ValueError):
        reader.decode_arrays([0, 1], None, [None])

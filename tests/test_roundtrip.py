"""Bit-exact round trips: every dtype x many shapes x special values, torch and numpy."""

from __future__ import annotations

import math

import fastckpt
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from _helpers import (
    DATA_MODES,
    FLOAT_FORMATS,
    NUMPY_DTYPE_NAMES,
    TORCH_DTYPE_NAMES,
    assert_same_array,
    assert_same_tensor,
    assert_same_tree,
    examples,
    make_array,
    make_bits,
    make_tensor,
    need_torch,
    numpy_from_bits,
    requires_torch,
    torch_from_bits,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FIXED_SHAPES = [
    (),
    (0,),
    (1,),
    (3,),
    (31,),
    (33,),
    (1000,),
    (0, 3),
    (3, 0),
    (2, 0, 4),
    (1, 1),
    (7, 9),
    (2, 3, 5, 7),
    (1, 1, 1, 1, 1),
    (4097,),
    (65537,),
    (3, 1000),
]

shapes = st.one_of(
    st.sampled_from(FIXED_SHAPES),
    hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=7),
)


@st.composite
def raw_data(draw, dtype_names):
    """(dtype name, shape, element bits) with a random value distribution and specials."""
    name = draw(st.sampled_from(dtype_names))
    shape = draw(shapes)
    mode = draw(st.sampled_from(DATA_MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    n = math.prod(shape)
    n_specials = draw(st.integers(0, min(n, 64))) if n else 0
    return name, shape, make_bits(name, n, seed, mode, n_specials)


def roundtrip(obj, **kw):
    data = fastckpt.encode(obj, **kw)
    assert isinstance(data, bytes)
    return fastckpt.decode(data, **kw)


# --------------------------------------------------------------------------------------
# every dtype, every shape family, once (deterministic, cheap; failures are easy to read)
# --------------------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("name", TORCH_DTYPE_NAMES)
@pytest.mark.parametrize("shape", FIXED_SHAPES, ids=str)
def test_torch_every_dtype_every_shape(name, shape):
    need_torch()
    t = make_tensor(name, shape, seed=len(shape) * 31 + sum(shape), mode="mixed", n_specials=5)
    assert_same_tensor(t, roundtrip(t), f"{name}{shape}")


@pytest.mark.parametrize("name", NUMPY_DTYPE_NAMES)
@pytest.mark.parametrize("shape", FIXED_SHAPES, ids=str)
def test_numpy_every_dtype_every_shape(name, shape):
    a = make_array(name, shape, seed=len(shape) * 17 + sum(shape), mode="mixed", n_specials=5)
    assert_same_array(a, roundtrip(a), f"{name}{shape}")


@requires_torch
@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_torch_all_special_values_dense(name):
    """A tensor made *only* of special values (NaN payloads, inf, subnormals, -0, max...)."""
    need_torch()
    t = make_tensor(name, (5000,), seed=7, mode="specials")
    assert_same_tensor(t, roundtrip(t), name)


@requires_torch
@pytest.mark.parametrize("name", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_torch_every_bit_pattern(name):
    """All 2**16 (or 2**8) bit patterns of a small float format survive, in both orders."""
    need_torch()
    bits = FLOAT_FORMATS[name].bits
    utype = np.uint16 if bits == 16 else np.uint8
    allbits = np.arange(1 << bits, dtype=np.uint64).astype(utype)
    for arr in (allbits, allbits[::-1].copy()):
        t = torch_from_bits(name, (arr.size,), arr)
        assert_same_tensor(t, roundtrip(t), name)


def test_numpy_every_float16_bit_pattern():
    a = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    assert_same_array(a, roundtrip(a))


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_numpy_float_nan_payloads(name):
    """Signalling and quiet NaNs with many distinct payloads, both signs."""
    fmt = FLOAT_FORMATS[name]
    rng = np.random.default_rng(3)
    utype = np.uint32 if fmt.bits == 32 else np.uint64
    mant = rng.integers(1, fmt.mant_mask + 1, size=4096, dtype=np.uint64)
    sign = rng.integers(0, 2, size=4096, dtype=np.uint64) << np.uint64(fmt.bits - 1)
    bits = (sign | np.uint64(fmt.exp_all_ones) | mant).astype(utype)
    a = numpy_from_bits(name, (4096,), bits)
    assert np.isnan(a).all()
    assert_same_array(a, roundtrip(a))


# --------------------------------------------------------------------------------------
# hypothesis: random dtype x shape x value distribution x specials
# --------------------------------------------------------------------------------------


@requires_torch
@settings(max_examples=examples(150))
@given(raw_data(TORCH_DTYPE_NAMES))
def test_torch_roundtrip_hypothesis(case):
    need_torch()
    name, shape, bits = case
    t = torch_from_bits(name, shape, bits)
    assert_same_tensor(t, roundtrip(t), f"{name}{shape}")


@settings(max_examples=examples(150))
@given(raw_data(NUMPY_DTYPE_NAMES))
def test_numpy_roundtrip_hypothesis(case):
    name, shape, bits = case
    a = numpy_from_bits(name, shape, bits)
    assert_same_array(a, roundtrip(a), f"{name}{shape}")


@requires_torch
@settings(max_examples=examples(40))
@given(st.lists(raw_data(TORCH_DTYPE_NAMES), min_size=0, max_size=8), st.booleans())
def test_mixed_container_hypothesis(cases, as_list):
    """Many tensors and arrays of different dtypes in one checkpoint, dict or list."""
    need_torch()
    leaves = []
    for i, (name, shape, bits) in enumerate(cases):
        if i % 2 and name in NUMPY_DTYPE_NAMES:
            leaves.append(numpy_from_bits(name, shape, bits))
        else:
            leaves.append(torch_from_bits(name, shape, bits))
    obj = leaves if as_list else {f"layer{i}.weight": x for i, x in enumerate(leaves)}
    assert_same_tree(obj, roundtrip(obj))


@requires_torch
@settings(max_examples=examples(30))
@given(raw_data(TORCH_DTYPE_NAMES), st.sampled_from([1, 2]))
def test_threads_do_not_change_encoding(case, threads):
    need_torch()
    name, shape, bits = case
    t = torch_from_bits(name, shape, bits)
    data = fastckpt.encode({"t": t}, threads=threads)
    assert data == fastckpt.encode({"t": t}, threads=None)
    assert_same_tensor(t, fastckpt.decode(data, threads=threads)["t"])


# --------------------------------------------------------------------------------------
# big tensors: several internal chunks, multi-threaded coding
# --------------------------------------------------------------------------------------

BIG_N = 3_000_000


@pytest.fixture(scope="module")
def big_checkpoint():
    torch = need_torch()
    g = torch.Generator().manual_seed(1234)
    w32 = torch.randn(BIG_N, generator=g) * 0.02
    wbf = (torch.randn(1000, BIG_N // 1000, generator=g) * 0.02).to(torch.bfloat16)
    return {"w32": w32, "wbf16": wbf}


@requires_torch
@pytest.mark.parametrize("key", ["w32", "wbf16"])
def test_big_tensor_roundtrip_and_threads(big_checkpoint, key):
    t = big_checkpoint[key]
    obj = {key: t}
    data1 = fastckpt.encode(obj, threads=1)
    data2 = fastckpt.encode(obj, threads=2)
    assert data1 == data2, "encode must be deterministic regardless of the thread count"
    assert data1 == fastckpt.encode(obj), "encode must be deterministic (threads=None)"
    raw = t.numel() * t.element_size()
    # realistic weights (N(0, 0.02)) must actually compress
    assert len(data1) < raw, f"{key}: {len(data1)} bytes encoded >= {raw} raw bytes"
    info = fastckpt.inspect(data1)
    (tinfo,) = info["tensors"]
    assert tinfo["chunks"] > 1, f"{key}: a {raw}-byte tensor should span several chunks"
    for threads in (1, 2, None):
        assert_same_tensor(t, fastckpt.decode(data1, threads=threads)[key], f"{key}/{threads}")


@requires_torch
def test_big_tensor_with_specials_and_odd_size():
    """Multi-chunk float32 whose values include NaN payloads etc. and an odd length."""
    torch = need_torch()
    n = BIG_N + 13
    bits = make_bits("float32", n, seed=99, mode="realistic", n_specials=20_000)
    t = torch_from_bits("float32", (n,), bits)
    data = fastckpt.encode(t, threads=2)
    assert data == fastckpt.encode(t, threads=1)
    out = fastckpt.decode(data, threads=2)
    assert_same_tensor(t, out)
    assert torch.isnan(out).any()


@requires_torch
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("n_specials", [0, 1, 700, 40_000])
def test_big_half_floats_pair_coded_exponents(name, n_specials):
    """bf16/fp16 exponent planes are coded two bytes per symbol (pair mode, escaped bytes for
    the rare values outside its window): exact for odd sizes and special values, identical
    for any thread count, and still compressing."""
    need_torch()
    n = BIG_N + 7
    bits = make_bits(name, n, seed=17 + n_specials, mode="realistic", n_specials=n_specials)
    t = torch_from_bits(name, (n,), bits)
    data = fastckpt.encode(t, threads=2)
    assert data == fastckpt.encode(t, threads=1)
    assert_same_tensor(t, fastckpt.decode(data, threads=2))
    assert_same_tensor(t, fastckpt.decode(data, threads=1))
    assert len(data) < (0.8 if name == "bfloat16" else 0.9) * n * 2


@settings(max_examples=examples(25), deadline=None)
@given(
    n=st.integers(4096, 40_000),
    top=st.integers(0, 255),
    spread=st.integers(1, 24),
    special_every=st.integers(2, 5000),
    half=st.sampled_from(["float16", "bfloat16", "uint16"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_half_float_exponent_windows_hypothesis(n, top, spread, special_every, half, seed):
    """2-byte words whose top bytes (for floats: after the sign rotation) sit in a window of
    any width and place, with every k-th word a zero, Inf, NaN payload or subnormal: the
    plane coder picks pairs, escapes or one byte per symbol, and the round trip is exact."""
    rng = np.random.default_rng(seed)
    tops = (top + rng.integers(0, spread, n)) % 256
    words = (tops.astype(np.uint16) << 7) | (rng.integers(0, 1 << 16, n).astype(np.uint16) & 0x807F)
    specials = np.array([0x0000, 0x8000, 0x7F80, 0xFFC1, 0x7C00, 0x7E01, 0x0001, 0x8003], np.uint16)
    words[::special_every] = specials[rng.integers(0, len(specials), len(words[::special_every]))]
    if half == "bfloat16":
        torch = need_torch()
        t = torch.from_numpy(words.view(np.int16).copy()).view(torch.bfloat16)
        out = fastckpt.decode(fastckpt.encode({"w": t}))["w"]
        assert out.dtype == torch.bfloat16
        assert np.array_equal(out.view(torch.int16).numpy().view(np.uint16), words)
        return
    arr = words.view(np.float16) if half == "float16" else words
    out = fastckpt.decode(fastckpt.encode({"w": arr}))["w"]
    assert out.dtype == arr.dtype
    assert np.array_equal(out.view(np.uint16), words)


def test_big_numpy_arrays_multichunk():
    rng = np.random.default_rng(5)
    obj = {
        "f64": rng.standard_normal(700_001) * 1e-3,
        "f16": (rng.standard_normal((1001, 1003)) * 0.05).astype(np.float16),
        "i64": rng.integers(-(2**40), 2**40, size=400_003),
    }
    data = fastckpt.encode(obj, threads=2)
    assert data == fastckpt.encode(obj, threads=1)
    assert_same_tree(obj, fastckpt.decode(data, threads=1))
    assert_same_tree(obj, fastckpt.decode(data, threads=2))


@requires_torch
def test_float8_and_uint_big():
    torch = need_torch()
    g = torch.Generator().manual_seed(3)
    obj = {
        "e4m3": (torch.randn(1_500_001, generator=g) * 8).to(torch.float8_e4m3fn),
        "e5m2": (torch.randn(1_500_001, generator=g) * 8).to(torch.float8_e5m2),
        "u64": torch_from_bits("uint64", (300_007,), make_bits("uint64", 300_007, 1, "mixed")),
        "bool": torch.rand(2_000_003, generator=g) < 0.3,
    }
    data = fastckpt.encode(obj, threads=2)
    assert data == fastckpt.encode(obj, threads=1)
    assert_same_tree(obj, fastckpt.decode(data))


# --------------------------------------------------------------------------------------
# torch vs numpy stay distinct, dtype/shape preserved inside structures
# --------------------------------------------------------------------------------------


@requires_torch
def test_torch_and_numpy_kept_apart():
    torch = need_torch()
    obj = {
        "t": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "t0": torch.tensor(2.5, dtype=torch.float64),
        "a0": np.array(2.5, dtype=np.float64),
        "te": torch.empty(0, 4, dtype=torch.int16),
        "ae": np.empty((0, 4), dtype=np.int16),
    }
    out = roundtrip(obj)
    assert isinstance(out["t"], torch.Tensor) and not isinstance(out["t"], np.ndarray)
    assert type(out["a"]) is np.ndarray
    assert out["t0"].shape == () and out["a0"].shape == ()
    assert_same_tree(obj, out)


@requires_torch
def test_shared_and_aliased_tensors():
    """The same tensor twice, overlapping views and tied weights all decode by value."""
    torch = need_torch()
    base = torch.randn(8, 8)
    obj = {
        "a": base,
        "b": base,  # same object
        "row": base[2],  # view with storage offset
        "col": base[:, 3],  # strided view
        "tied": [base, base.T],
    }
    snapshot = base.clone()
    out = roundtrip(obj)
    assert_same_tree(obj, out)
    assert_same_tensor(snapshot, base)


@requires_torch
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float16", "int8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_tensors_through_bytes_and_files(tmp_path, dtype_name, threads):
    """Tensors of several MiB take the paths small ones skip: sampled plane decisions, raw
    planes written straight into an uninitialized `bytes` or a file, huge-page advice, and
    block-wise hashed decoding into fresh tensors. Inputs stay untouched."""
    torch = need_torch()
    gen = torch.Generator().manual_seed(7)
    big = (torch.randn(1536, 1537, generator=gen) * 0.02).to(getattr(torch, dtype_name))
    if dtype_name == "int8":
        big = torch.randint(-128, 128, (3000, 2001), generator=gen, dtype=torch.int8)
    obj = {"big": big, "small": big.flatten()[:777].clone(), "zeros": torch.zeros(3 << 20)}
    snapshot = {k: v.clone() for k, v in obj.items()}
    blob = fastckpt.encode(obj, threads=threads)
    assert isinstance(blob, bytes)
    assert_same_tree(obj, fastckpt.decode(blob, threads=threads))
    path = tmp_path / "big.fckpt"
    fastckpt.save(obj, path, threads=threads)
    assert path.read_bytes() == blob
    assert_same_tree(obj, fastckpt.load(path, threads=threads))
    assert_same_tree(snapshot, obj)

"""Damaged input must always raise a FastckptError: never return data, never crash."""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import subprocess
import sys
import textwrap

import fastckpt
import numpy as np
import pytest
from _helpers import (
    assert_same_tree,
    examples,
    make_array,
    make_tensor,
    need_torch,
    requires_torch,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ERRORS = (fastckpt.CorruptCheckpoint, fastckpt.FormatError)


class Sample(tuple):
    """(object, encoded bytes) with a short repr (hypothesis prints fixtures on failure)."""

    def __repr__(self):
        return f"Sample(keys={sorted(self[0])}, {len(self[1])} encoded bytes)"


def small_checkpoint():
    """A few tensors of several dtypes, a few KB in total (numpy only: no torch needed)."""
    return {
        "w": make_array("float32", (16, 16), seed=1, mode="realistic"),
        "b": make_array("float16", (33,), seed=2, mode="realistic", n_specials=4),
        "idx": make_array("int64", (20,), seed=3, mode="mixed"),
        "mask": make_array("bool", (50,), seed=4, mode="realistic"),
        "u16": make_array("uint16", (3, 7), seed=5, mode="random_bits"),
        "c": make_array("complex64", (5,), seed=6, mode="realistic"),
        "meta": {"step": 7, "name": "x", "lr": 1e-3},
    }


@pytest.fixture(scope="module")
def small():
    obj = small_checkpoint()
    data = fastckpt.encode(obj)
    assert_same_tree(obj, fastckpt.decode(data))  # sanity: the undamaged file is fine
    assert 500 < len(data) < 20_000, len(data)
    return Sample((obj, data))


@pytest.fixture(scope="module")
def largeish():
    """One ~400 KB float32 tensor (data region dominates the file) plus a small one."""
    rng = np.random.default_rng(11)
    obj = {
        "big": (rng.standard_normal(100_003) * 0.02).astype(np.float32),
        "small": np.arange(10, dtype=np.int32),
    }
    data = fastckpt.encode(obj)
    assert_same_tree(obj, fastckpt.decode(data))
    return Sample((obj, data))


def assert_rejected(data: bytes, **kw) -> None:
    try:
        out = fastckpt.decode(data, **kw)
    except ERRORS:
        return
    raise AssertionError(
        f"decode accepted damaged input ({len(data)} bytes), returned {out!r:.200}"
    )


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --------------------------------------------------------------------------------------
# error classes
# --------------------------------------------------------------------------------------


def test_error_hierarchy():
    assert issubclass(fastckpt.FastckptError, ValueError)
    for cls in (fastckpt.FormatError, fastckpt.CorruptCheckpoint, fastckpt.UnsupportedError):
        assert issubclass(cls, fastckpt.FastckptError)
    assert issubclass(fastckpt.UnsupportedError, TypeError)


# --------------------------------------------------------------------------------------
# truncation
# --------------------------------------------------------------------------------------


def test_truncation_at_every_offset_decode(small):
    _, data = small
    accepted = []
    for cut in range(len(data)):
        try:
            fastckpt.decode(data[:cut])
        except ERRORS:
            continue
        accepted.append(cut)
    assert not accepted, f"decode accepted truncations at offsets {accepted[:20]} of {len(data)}"


def test_truncation_at_every_offset_read_tensor(small):
    """read_tensor must not return a tensor out of a truncated file either."""
    _, data = small
    accepted = []
    for cut in range(len(data)):
        for name in ("w", "c"):
            try:
                fastckpt.read_tensor(data[:cut], name)
            except ERRORS:
                continue
            accepted.append((cut, name))
    assert not accepted, f"read_tensor accepted truncations {accepted[:20]} of {len(data)}"


def test_truncation_inspect_never_crashes(small):
    """inspect on a truncated file raises a FastckptError or returns a dict; nothing else."""
    _, data = small
    for cut in range(len(data)):
        try:
            info = fastckpt.inspect(data[:cut])
        except ERRORS:
            continue
        assert isinstance(info, dict)


def test_truncation_large_tensor_threads(largeish):
    _, data = largeish
    rng = random.Random(0)
    cuts = sorted({rng.randrange(len(data)) for _ in range(examples(150))} | {len(data) - 1})
    for cut in cuts:
        assert_rejected(data[:cut], threads=2)


# --------------------------------------------------------------------------------------
# bit flips and other damage
# --------------------------------------------------------------------------------------


def test_one_bit_flip_in_every_byte(small):
    """Flip one bit (rotating bit index) in every single byte of the small file."""
    _, data = small
    accepted = []
    for pos in range(len(data)):
        bit = pos * 8 + (pos * 5 + 3) % 8
        try:
            fastckpt.decode(_flip(data, bit))
        except ERRORS:
            continue
        accepted.append(pos)
    assert not accepted, f"decode accepted a flipped bit in bytes {accepted[:20]} of {len(data)}"


def test_every_bit_of_header_region(small):
    """All bits of the first 128 bytes (magic, version, header length, header, checksums)."""
    _, data = small
    accepted = []
    for bit in range(8 * min(128, len(data))):
        try:
            fastckpt.decode(_flip(data, bit))
        except ERRORS:
            continue
        accepted.append(bit)
    assert not accepted, f"decode accepted header bit flips {accepted[:20]}"


@settings(max_examples=examples(300))
@given(st.data())
def test_random_bit_flips_hypothesis(small, data):
    _, encoded = small
    n_flips = data.draw(st.integers(1, 4), label="n_flips")
    bits = data.draw(
        st.lists(
            st.integers(0, 8 * len(encoded) - 1),
            min_size=n_flips,
            max_size=n_flips,
            unique=True,
        ),
        label="bits",
    )
    damaged = encoded
    for bit in bits:
        damaged = _flip(damaged, bit)
    assert_rejected(damaged)


def test_random_bit_flips_in_data_region(largeish):
    """Seeded flips inside the bulk of a multi-hundred-KB file: the tensor data region."""
    _, data = largeish
    rng = random.Random(1234)
    lo, hi = len(data) // 10, len(data) * 9 // 10
    for trial in range(examples(300)):
        bit = rng.randrange(8 * lo, 8 * hi)
        assert_rejected(_flip(data, bit), threads=1 + trial % 2)


def test_read_tensor_never_returns_wrong_data(largeish):
    """After a flip, read_tensor either raises or returns the *correct* tensor."""
    obj, data = largeish
    rng = random.Random(99)
    for _ in range(examples(200)):
        damaged = _flip(data, rng.randrange(8 * len(data)))
        for name in ("big", "small"):
            try:
                t = fastckpt.read_tensor(damaged, name)
            except ERRORS:
                continue
            assert_same_tree(obj[name], t, f"read_tensor({name!r}) of a damaged file")


@pytest.mark.parametrize(
    "damage",
    ["zero_block", "ff_block", "random_byte", "swap_blocks", "duplicate_block", "delete_byte"],
)
def test_other_damage(small, largeish, damage):
    rng = random.Random(damage)
    for _, data in (small, largeish):
        for _ in range(examples(40)):
            b = bytearray(data)
            i = rng.randrange(len(b) - 16)
            if damage == "zero_block":
                if b[i : i + 16] == bytes(16):
                    continue
                b[i : i + 16] = bytes(16)
            elif damage == "ff_block":
                if b[i : i + 16] == b"\xff" * 16:
                    continue
                b[i : i + 16] = b"\xff" * 16
            elif damage == "random_byte":
                new = rng.randrange(256)
                if new == b[i]:
                    continue
                b[i] = new
            elif damage == "swap_blocks":
                j = rng.randrange(len(b) - 16)
                if b[i : i + 16] == b[j : j + 16]:
                    continue
                b[i : i + 16], b[j : j + 16] = b[j : j + 16], b[i : i + 16]
            elif damage == "duplicate_block":
                b[i:i] = b[i : i + 16]
            elif damage == "delete_byte":
                del b[i]
            assert_rejected(bytes(b))


# --------------------------------------------------------------------------------------
# not a (complete) fastckpt file
# --------------------------------------------------------------------------------------


def _npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(10))
    return buf.getvalue()


GARBAGE = {
    "zeros": bytes(1000),
    "ones": b"\xff" * 1000,
    "random_64": random.Random(1).randbytes(64),
    "random_100k": random.Random(2).randbytes(100_000),
    "pickle": pickle.dumps({"a": [1, 2, 3]}),
    "npz": _npz_bytes(),
    "json": json.dumps({"tensors": []}).encode(),
    "text": b"hello world, definitely not a checkpoint\n" * 10,
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_is_format_error(kind):
    blob = GARBAGE[kind]
    with pytest.raises(fastckpt.FormatError):
        fastckpt.decode(blob)
    with pytest.raises(fastckpt.FormatError):
        fastckpt.inspect(blob)
    with pytest.raises(ERRORS):
        fastckpt.read_tensor(blob, "a")


@pytest.mark.parametrize("blob", [b"", b"\x00", b"F", b"FCK"], ids=repr)
def test_tiny_inputs_raise(blob):
    with pytest.raises(ERRORS):
        fastckpt.decode(blob)
    with pytest.raises(ERRORS):
        fastckpt.inspect(blob)


def test_valid_magic_then_garbage(small):
    _, data = small
    rng = random.Random(3)
    for prefix in (4, 8, 12, 16):
        for size in (0, 10, 1000):
            assert_rejected(data[:prefix] + rng.randbytes(size))


@pytest.mark.parametrize(
    "tail",
    [b"\x00", b"\x00" * 7, b"garbage", b"\xff" * 4096, "self"],
    ids=["nul", "7nul", "text", "4k_ff", "second_copy"],
)
def test_trailing_bytes_rejected(small, tail):
    _, data = small
    extra = data if tail == "self" else tail
    assert_rejected(data + extra)
    with pytest.raises(ERRORS):
        fastckpt.read_tensor(data + extra, "w")


def test_corrupt_file_on_disk(small, tmp_path):
    _, data = small
    p = tmp_path / "damaged.fckpt"
    p.write_bytes(_flip(data, 8 * (len(data) // 2)))
    with pytest.raises(ERRORS):
        fastckpt.load(p)
    q = tmp_path / "truncated.fckpt"
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(ERRORS):
        fastckpt.load(str(q))
    with pytest.raises(ERRORS):
        fastckpt.read_tensor(q, "w")
    e = tmp_path / "empty.fckpt"
    e.write_bytes(b"")
    with pytest.raises(ERRORS):
        fastckpt.load(e)


@requires_torch
def test_torch_checkpoint_truncation_and_flips():
    torch = need_torch()
    g = torch.Generator().manual_seed(0)
    obj = {
        "bf16": (torch.randn(40, 24, generator=g) * 0.02).to(torch.bfloat16),
        "e4m3": torch.randn(64, generator=g).to(torch.float8_e4m3fn),
        "step": torch.tensor(3.0),
        "u64": make_tensor("uint64", (10,), seed=1, mode="mixed"),
    }
    data = fastckpt.encode(obj)
    assert_same_tree(obj, fastckpt.decode(data))
    for cut in range(0, len(data), 3):
        assert_rejected(data[:cut])
    rng = random.Random(5)
    for _ in range(examples(200)):
        assert_rejected(_flip(data, rng.randrange(8 * len(data))))


# --------------------------------------------------------------------------------------
# a header that claims a huge shape / size / offset: raise, do not allocate
# --------------------------------------------------------------------------------------

_HUGE_CHILD = textwrap.dedent(
    r"""
    import resource, sys
    import numpy as np
    import fastckpt

    def vm_size():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmSize")

    blobs = [bytes.fromhex(h) for h in sys.stdin.read().split()]
    # everything is imported; now allow at most 2 GiB more address space
    limit = vm_size() + (2 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    bad = []
    for i, blob in enumerate(blobs):
        for fn in (fastckpt.decode, lambda b: fastckpt.read_tensor(b, "x")):
            try:
                fn(blob)
            except (fastckpt.CorruptCheckpoint, fastckpt.FormatError):
                continue
            except BaseException as e:  # MemoryError etc. count as failures
                bad.append((i, repr(e)[:200]))
                continue
            bad.append((i, "accepted"))
    print("BAD", bad)
    sys.exit(1 if bad else 0)
    """
)


def _huge_variants(data: bytes, values: dict[str, int]) -> list[bytes]:
    """Replace every fixed-width little-endian occurrence of the given values by huge ones."""
    out = []
    for value in values.values():
        for fmt, huges in (
            ("<Q", [2**40, 2**62, 2**63 - 1, 2**64 - 1]),
            ("<I", [2**31 - 1, 2**32 - 1]),
        ):
            if value >= 2 ** (8 * struct.calcsize(fmt)):
                continue
            needle = struct.pack(fmt, value)
            start = data.find(needle)
            while start != -1:
                for huge in huges:
                    b = bytearray(data)
                    b[start : start + len(needle)] = struct.pack(fmt, huge)
                    out.append(bytes(b))
                start = data.find(needle, start + 1)
    return out


def test_huge_claims_raise_without_allocating():
    """Patch the shape / sizes (wherever they appear as u32/u64) to absurd values, and flip
    every bit of the header region; decoding under an address-space limit of +2 GiB must
    raise a FastckptError (a checksum or bounds check), not MemoryError or abort."""
    obj = {"x": np.zeros((12345, 3), dtype=np.float32)}
    data = fastckpt.encode(obj)
    (tinfo,) = fastckpt.inspect(data)["tensors"]
    values = {"dim0": 12345, "raw": tinfo["raw_bytes"], "numel": 12345 * 3}
    if tinfo["compressed_bytes"] > 8:
        values["compressed"] = tinfo["compressed_bytes"]
    blobs = _huge_variants(data, values)
    blobs += [_flip(data, bit) for bit in range(8 * min(256, len(data)))]
    proc = subprocess.run(
        [sys.executable, "-c", _HUGE_CHILD],
        input="\n".join(b.hex() for b in blobs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\nstdout={proc.stdout[-3000:]}\nstderr={proc.stderr[-3000:]}"
    )

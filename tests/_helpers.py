"""Helpers shared by the fastckpt test-suite (not a test module).

Everything here is about *building* interesting inputs (raw bit patterns, special
floating-point values) and *comparing* decoded outputs bit-exactly (NaN != NaN, so
values are always compared through their raw bytes).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import settings

try:  # torch is optional for the numpy-only parts of the suite
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

HAVE_TORCH = torch is not None
requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")


def need_torch():
    """Return the torch module or skip the calling test."""
    return pytest.importorskip("torch")


def examples(n: int) -> int:
    """Scale a per-test example count with the active hypothesis profile.

    The ``dev`` profile has 60 examples by default; ``ci`` has 20, so a test asking for
    ``examples(90)`` runs 90 examples locally and 30 on CI.
    """
    scale = settings().max_examples / 60.0
    return max(3, int(round(n * scale)))


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------

#: every torch dtype name the contract (docs/API.md) lists
TORCH_DTYPE_NAMES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
]

#: the same list restricted to what numpy has natively
NUMPY_DTYPE_NAMES = [
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
]

ITEMSIZE = {
    "float32": 4,
    "float64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "bool": 1,
    "complex64": 8,
    "complex128": 16,
}

_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def torch_dtype(name: str):
    return getattr(torch, name)


def dtype_name(dt) -> str:
    """'float32' for torch.float32, np.float32, np.dtype('float32') or 'torch.float32'."""
    s = str(dt)
    if s.startswith("torch."):
        s = s[len("torch.") :]
    if s == "bool_":
        s = "bool"
    return s


@dataclass(frozen=True)
class FloatFormat:
    bits: int
    exp_bits: int
    mant_bits: int
    ieee_specials: bool = True  # False for float8_e4m3fn (no inf, single NaN mantissa)

    @property
    def sign_mask(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def exp_all_ones(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.mant_bits

    @property
    def mant_mask(self) -> int:
        return (1 << self.mant_bits) - 1

    def pattern(self, sign: int, exp: int, mant: int) -> int:
        return (sign << (self.bits - 1)) | (exp << self.mant_bits) | (mant & self.mant_mask)

    def max_finite(self) -> int:
        if not self.ieee_specials:  # e4m3fn: S.1111.110 = 448
            return self.pattern(0, (1 << self.exp_bits) - 1, self.mant_mask - 1)
        return self.pattern(0, (1 << self.exp_bits) - 2, self.mant_mask)

    def special_patterns(self, rng: np.random.Generator, count: int) -> list[int]:
        """``count`` raw bit patterns of special values (NaN payloads, inf, subnormals...)."""
        top = (1 << self.exp_bits) - 1
        out = []
        for _ in range(count):
            sign = int(rng.integers(0, 2))
            kind = int(rng.integers(0, 10))
            if kind == 0:  # NaN with a random non-zero payload (quiet or signalling)
                mant = int(rng.integers(1, self.mant_mask + 1))
                if not self.ieee_specials:
                    mant = self.mant_mask
                out.append(self.pattern(sign, top, mant))
            elif kind == 1:  # +-inf (for e4m3fn: the pattern is a plain normal number)
                out.append(self.pattern(sign, top, 0))
            elif kind == 2:  # random subnormal
                out.append(self.pattern(sign, 0, int(rng.integers(1, self.mant_mask + 1))))
            elif kind == 3:  # smallest / largest subnormal
                out.append(self.pattern(sign, 0, 1 if rng.integers(0, 2) else self.mant_mask))
            elif kind == 4:  # +-0.0
                out.append(self.pattern(sign, 0, 0))
            elif kind == 5:  # max / lowest finite
                out.append(self.max_finite() | (sign << (self.bits - 1)))
            elif kind == 6:  # smallest normal
                out.append(self.pattern(sign, 1, 0))
            elif kind == 7:  # canonical NaN
                out.append(self.pattern(sign, top, 1 << (self.mant_bits - 1)))
            elif kind == 8:  # +-1.0
                out.append(self.pattern(sign, (1 << (self.exp_bits - 1)) - 1, 0))
            else:  # completely arbitrary bits
                out.append(int(rng.integers(0, 1 << self.bits, dtype=np.uint64)))
        return out


FLOAT_FORMATS = {
    "float64": FloatFormat(64, 11, 52),
    "float32": FloatFormat(32, 8, 23),
    "float16": FloatFormat(16, 5, 10),
    "bfloat16": FloatFormat(16, 8, 7),
    "float8_e5m2": FloatFormat(8, 5, 2),
    "float8_e4m3fn": FloatFormat(8, 4, 3, ieee_specials=False),
}
#: complex dtypes are pairs of these
COMPLEX_COMPONENT = {"complex64": "float32", "complex128": "float64"}

DATA_MODES = ["realistic", "random_bits", "constant", "specials", "sparse", "mixed"]


def _realistic_component_bits(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bits of realistic weight-like values (N(0, scale)) for a float format ``name``."""
    scale = float(10.0 ** rng.uniform(-4, 2))
    vals = (rng.standard_normal(n) * scale).astype(np.float64)
    if name == "float64":
        return vals.view(np.uint64).copy()
    if name == "float32":
        return vals.astype(np.float32).view(np.uint32).copy()
    if name == "float16":
        with np.errstate(over="ignore"):
            return vals.astype(np.float16).view(np.uint16).copy()
    if name == "bfloat16":  # round-to-nearest-even of the float32 bits
        f32 = vals.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = (f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16
        return rounded.astype(np.uint16)
    if name in ("float8_e4m3fn", "float8_e5m2"):
        t = torch.from_numpy(vals.astype(np.float32)).to(torch_dtype(name))
        return t.view(torch.uint8).numpy().copy()
    raise AssertionError(name)


def make_bits(name: str, n: int, seed: int, mode: str, n_specials: int = 0) -> np.ndarray:
    """Raw element bits (1-d unsigned array, or uint8 0/1 for bool) for dtype ``name``.

    ``mode`` chooses the value distribution; ``n_specials`` special values (NaN payloads,
    +-inf, subnormals, -0.0, max/min...) are then written at random positions.
    """
    rng = np.random.default_rng(seed)
    isz = ITEMSIZE[name]
    if name == "bool":
        if mode == "constant":
            return np.full(n, rng.integers(0, 2), dtype=np.uint8)
        p = 0.02 if mode == "sparse" else 0.5
        return (rng.random(n) < p).astype(np.uint8)

    if name in COMPLEX_COMPONENT:
        comp = make_bits(COMPLEX_COMPONENT[name], 2 * n, seed, mode, n_specials)
        return comp.view(_UINT_OF_SIZE[isz // 2])

    utype = _UINT_OF_SIZE[isz]
    is_float = name in FLOAT_FORMATS
    if mode == "random_bits":
        out = rng.integers(0, 256, size=n * isz, dtype=np.uint8).view(utype).copy()
    elif mode == "constant":
        out = np.full(n, rng.integers(0, 1 << (8 * isz), dtype=np.uint64), dtype=utype)
    elif mode == "specials" and is_float:
        fmt = FLOAT_FORMATS[name]
        out = np.array(fmt.special_patterns(rng, n), dtype=utype) if n else np.zeros(0, utype)
    elif is_float and mode in ("realistic", "sparse", "mixed"):
        out = _realistic_component_bits(name, n, rng).astype(utype)
        if mode == "sparse":
            out[rng.random(n) < 0.9] = 0
        elif mode == "mixed" and n:
            k = int(rng.integers(0, n + 1))
            out[:k] = rng.integers(0, 256, size=k * isz, dtype=np.uint8).view(utype)
    else:  # integers: small values around zero (typical of indices / counters), or sparse
        sdt = np.dtype(f"i{isz}")
        small = rng.integers(-3, 4, size=n) if mode != "sparse" else (rng.random(n) < 0.1)
        out = small.astype(np.int64).astype(sdt).view(utype).copy()
        if mode == "mixed" and n:
            k = int(rng.integers(0, n + 1))
            out[:k] = rng.integers(0, 256, size=k * isz, dtype=np.uint8).view(utype)

    if n and n_specials:
        pos = rng.integers(0, n, size=n_specials)
        if is_float:
            pats = FLOAT_FORMATS[name].special_patterns(rng, n_specials)
        else:
            bits = 8 * isz
            cands = [0, 1, (1 << bits) - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1]
            pats = [cands[int(i)] for i in rng.integers(0, len(cands), size=n_specials)]
        out[pos] = np.array(pats, dtype=np.uint64).astype(utype)
    return out


def numpy_from_bits(name: str, shape: tuple, bits: np.ndarray) -> np.ndarray:
    dt = np.dtype(name)
    return bits.view(np.uint8).copy().view(dt).reshape(shape)


def torch_from_bits(name: str, shape: tuple, bits: np.ndarray):
    if bits.size == 0:  # from_numpy of an empty array has stride 0 and cannot be .view()ed
        return torch.empty(shape, dtype=torch_dtype(name))
    raw = torch.from_numpy(bits.view(np.uint8).copy())
    return raw.view(torch_dtype(name)).reshape(shape)


def make_tensor(name: str, shape: tuple, seed: int = 0, mode: str = "realistic", n_specials=0):
    n = math.prod(shape)
    return torch_from_bits(name, shape, make_bits(name, n, seed, mode, n_specials))


def make_array(name: str, shape: tuple, seed: int = 0, mode: str = "realistic", n_specials=0):
    n = math.prod(shape)
    return numpy_from_bits(name, shape, make_bits(name, n, seed, mode, n_specials))


# --------------------------------------------------------------------------------------
# bit-exact comparison
# --------------------------------------------------------------------------------------


def tensor_bytes(t) -> bytes:
    """Raw bytes of a torch tensor in C order (works for bf16/fp8/bool/complex/0-d)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def array_bytes(a: np.ndarray) -> bytes:
    return a.tobytes(order="C")


def digest(x) -> str:
    if HAVE_TORCH and isinstance(x, torch.Tensor):
        b = tensor_bytes(x)
    else:
        b = array_bytes(x)
    return hashlib.sha256(b).hexdigest()


def assert_same_tensor(expected, actual, where: str = "<root>") -> None:
    """``actual`` is a contiguous CPU torch tensor bit-identical to ``expected``."""
    assert isinstance(actual, torch.Tensor), f"{where}: expected torch.Tensor, got {type(actual)}"
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{where}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    assert actual.device.type == "cpu", f"{where}: device {actual.device}"
    assert actual.is_contiguous(), f"{where}: decoded tensor is not contiguous"
    eb, ab = tensor_bytes(expected), tensor_bytes(actual)
    if eb != ab:
        raise AssertionError(f"{where}: tensor bytes differ ({first_diff(eb, ab)})")


def assert_same_array(expected: np.ndarray, actual, where: str = "<root>") -> None:
    """``actual`` is a C-contiguous numpy array bit-identical to ``expected``."""
    assert type(actual) is np.ndarray, f"{where}: expected np.ndarray, got {type(actual)}"
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    assert actual.flags.c_contiguous, f"{where}: decoded array is not C-contiguous"
    eb, ab = array_bytes(expected), array_bytes(actual)
    if eb != ab:
        raise AssertionError(f"{where}: array bytes differ ({first_diff(eb, ab)})")


def first_diff(a: bytes, b: bytes) -> str:
    if len(a) != len(b):
        return f"lengths {len(a)} != {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at byte {i}: {x:#04x} != {y:#04x}"
    return "equal"


def float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _set_key(x):
    return (type(x).__name__, repr(x))


def assert_same_tree(expected, actual, where: str = "<root>") -> None:
    """Structural, type-exact and bit-exact comparison of two decoded objects.

    * tensors / arrays: see ``assert_same_tensor`` / ``assert_same_array``
    * dicts: any ``dict`` (an ``OrderedDict`` state_dict may come back as a plain dict),
      same keys *in the same order* with exactly the same key types; values recursively
    * list vs tuple vs torch.Size, int vs bool, set vs frozenset are all distinguished
    * floats compared through their IEEE-754 bits (NaN payloads, -0.0)
    """
    if HAVE_TORCH and isinstance(expected, torch.Tensor):
        assert_same_tensor(expected, actual, where)
        return
    if isinstance(expected, np.ndarray):
        assert_same_array(expected, actual, where)
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {type(actual)}"
        ek, ak = list(expected.keys()), list(actual.keys())
        assert len(ek) == len(ak), f"{where}: keys {ek!r} != {ak!r}"
        for e, a in zip(ek, ak):
            assert_same_tree(e, a, f"{where}.<key {e!r}>")
        for (e_key, e_val), a_val in zip(expected.items(), actual.values()):
            assert_same_tree(e_val, a_val, f"{where}[{e_key!r}]")
        return
    exp_type = type(expected)
    assert type(actual) is exp_type, (
        f"{where}: type {type(actual).__name__} != {exp_type.__name__} ({actual!r} vs {expected!r})"
    )
    if isinstance(expected, (list, tuple)):  # includes torch.Size
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same_tree(e, a, f"{where}[{i}]")
    elif isinstance(expected, (set, frozenset)):
        assert sorted(map(_set_key, actual)) == sorted(map(_set_key, expected)), (
            f"{where}: {actual!r} != {expected!r}"
        )
    elif isinstance(expected, float):
        assert float_bits(actual) == float_bits(expected), f"{where}: {actual!r} != {expected!r}"
    else:  # None, bool, int, str, bytes, torch.dtype, torch.device
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"

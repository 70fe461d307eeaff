"""Tensor <-> raw byte conversions for torch and numpy, zero-copy where the layout allows.

Inputs are never modified: non-contiguous or non-CPU tensors are copied first; the bytes
handed to the core are a read-only view. Outputs are allocated here and filled in place.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _memory
from .errors import UnsupportedError

_NUMPY_NAMES = {
    "bool": "bool", "uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16",
    "uint32": "uint32", "int32": "int32", "uint64": "uint64", "int64": "int64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "complex64": "complex64", "complex128": "complex128",
    # ml_dtypes extension types, if the caller uses them
    "bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2",
}


def _torch():
    """The torch module if the caller has imported it (we never import it ourselves first)."""
    return sys.modules.get("torch")


def is_tensor(obj: Any) -> bool:
    """Whether `obj` is a torch tensor or a numpy array."""
    if isinstance(obj, np.ndarray):
        return True
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Tensor)


def to_raw(obj: Any) -> tuple[str, tuple[int, ...], str, np.ndarray, Any]:
    """Returns (dtype name, shape, tag, read-only uint8 view, owner keeping it alive)."""
    if isinstance(obj, np.ndarray):
        return _numpy_raw(obj)
    return _torch_raw(obj)


def _numpy_raw(a: np.ndarray):
    name = _NUMPY_NAMES.get(a.dtype.name)
    if name is None or a.dtype.hasobject:
        raise UnsupportedError(f"numpy dtype {a.dtype} is not supported")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.require(a, requirements="C")  # keeps 0-d shapes, copies only if needed
    raw = a.reshape(-1).view(np.uint8)
    raw.flags.writeable = False
    return name, tuple(a.shape), "numpy", raw, a


# torch dtype -> our name (None: unsupported), filled as dtypes are met.
_TORCH_NAMES: dict[Any, str | None] = {}


def _torch_dtype_name(t) -> str | None:
    """The dtype name of a dense, non-quantized tensor of a supported dtype; else None."""
    if t.layout != _torch().strided or t.is_quantized:
        return None
    return _torch_name(t.dtype)


def _torch_name(dtype) -> str | None:
    """Our name of a torch dtype, or None if unsupported."""
    try:
        return _TORCH_NAMES[dtype]
    except KeyError:
        name = str(dtype).removeprefix("torch.")
        return _TORCH_NAMES.setdefault(dtype, name if name in _NUMPY_NAMES else None)


def _torch_raw(t):
    if t.layout != _torch().strided or t.is_quantized or t.is_meta:
        raise UnsupportedError(f"tensor with layout {t.layout} on {t.device} is not supported")
    name = _torch_name(t.dtype)
    if name is None:
        raise UnsupportedError(f"torch dtype {t.dtype} is not supported")
    # The bytes are read in place (no detached view needed); a copy is made detached.
    if not t.is_cpu:
        t = t.detach().cpu()
    if not t.is_contiguous() or t.is_conj() or t.is_neg():
        t = t.detach().resolve_conj().resolve_neg().contiguous()
    return name, tuple(t.shape), "torch", _bytes_of(t), t


class _TensorBytes:
    """A tensor's bytes as numpy sees them (`__array_interface__`), owning the tensor.

    `Tensor.numpy()` would mark the tensor's storage as never resizable again, for good: a
    side effect on the caller's tensors (FSDP, for one, resizes storages to free them)."""

    __slots__ = ("__array_interface__", "tensor")

    def __init__(self, t: Any, nbytes: int, readonly: bool) -> None:
        self.tensor = t
        self.__array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "version": 3,
                                    "data": (t.data_ptr(), readonly)}


def _bytes_of(t: Any, readonly: bool = True) -> np.ndarray:
    """The uint8 numpy view of a contiguous CPU tensor, leaving the tensor as it was."""
    nbytes = t.nbytes
    if nbytes == 0:
        return np.empty(0, dtype=np.uint8)
    return np.asarray(_TensorBytes(t, nbytes, readonly))


def empty(dtype: str, shape: tuple[int, ...], tag: str, device: str):
    """Allocates an output tensor of the saved kind and returns (tensor, uint8 buffer view).

    Large outputs live in buffers of the core's pool (`_memory.fresh`): huge pages on
    first use, and memory of tensors already freed on the next load."""
    if tag == "torch":
        tdtype = _TORCH_DTYPES.get(dtype) or _torch_dtype(dtype)
        nbytes = math.prod(shape) * tdtype.itemsize
        if not _memory.pooled(nbytes):
            t = _torch().empty(shape, dtype=tdtype)
            return t, _bytes_of(t, readonly=False)
        raw = _memory.pooled_array(nbytes)
        torch = _torch()
        safe = _NUMPY_TORCH_SAFE.get(dtype)
        if safe is not None:
            return torch.from_numpy(raw.view(safe).reshape(shape)), raw
        # numpy has no such dtype: an integer view of its width, reinterpreted by torch
        # (cheaper than reinterpreting the bytes, then reshaping, in torch).
        same_width = _SAME_WIDTH_INTS.get(tdtype.itemsize)
        if same_width is not None:
            return torch.from_numpy(raw.view(same_width).reshape(shape)).view(tdtype), raw
        return torch.from_numpy(raw).view(tdtype).reshape(shape), raw
    np_dtype = _numpy_dtype(dtype)
    nbytes = math.prod(shape) * np_dtype.itemsize
    if not _memory.pooled(nbytes):
        a = np.empty(shape, dtype=np_dtype)
        return a, a.reshape(-1).view(np.uint8)
    raw = _memory.pooled_array(nbytes)
    return raw.view(np_dtype).reshape(shape), raw


def wrapper(dtype: str, tag: str) -> Callable[[np.ndarray], Any]:
    """The function that makes the tensor of the saved kind over an array that
    `Reader.decode_arrays` made (numpy's dtype of the same name, or a same-width integer
    where numpy lacks it), without copying. Cached per (dtype, tag)."""
    try:
        return _WRAPPERS[dtype, tag]
    except KeyError:
        return _WRAPPERS.setdefault((dtype, tag), _make_wrapper(dtype, tag))


_WRAPPERS: dict[tuple[str, str], Callable[[np.ndarray], Any]] = {}


def _make_wrapper(dtype: str, tag: str) -> Callable[[np.ndarray], Any]:
    if tag != "torch":
        np_dtype = _numpy_dtype(dtype)
        return lambda a: a if a.dtype == np_dtype else a.view(np_dtype)
    torch = _torch() or _import_torch()
    tdtype = _TORCH_DTYPES.get(dtype) or _torch_dtype(dtype)
    from_numpy, empty = torch.from_numpy, torch.empty
    # Empty arrays become torch.empty: numpy gives them zero strides, which torch cannot
    # view as another dtype.
    if dtype in _NUMPY_TORCH_SAFE:
        return lambda a: from_numpy(a) if a.size else empty(a.shape, dtype=tdtype)
    # bfloat16, the 8-bit floats and unsigned ints: the array (viewed first as the integer
    # of its width that torch takes, unless it is one already) reinterpreted by torch.
    signed = _TORCH_SAFE_INTS[tdtype.itemsize]
    return lambda a: (from_numpy(a if a.dtype == signed else a.view(signed)).view(tdtype)
                      if a.size else empty(a.shape, dtype=tdtype))


# Torch dtypes by name, filled as they are met.
_TORCH_DTYPES: dict[str, Any] = {}

# numpy integer dtypes by width in bytes, for dtypes numpy lacks (bfloat16, float8).
_SAME_WIDTH_INTS = {1: np.dtype(np.uint8), 2: np.dtype(np.int16)}

# Integer dtypes by width that torch.from_numpy takes.
_TORCH_SAFE_INTS = {1: np.dtype(np.uint8), 2: np.dtype(np.int16), 4: np.dtype(np.int32),
                    8: np.dtype(np.int64)}


def _torch_dtype(name: str) -> Any:
    """The torch dtype called `name` (torch imported on first need), cached."""
    torch = _torch() or _import_torch()
    return _TORCH_DTYPES.setdefault(name, getattr(torch, name))


def cpu_copy(t: Any) -> Any:
    """A contiguous CPU copy of torch tensor `t`, in pooled memory when large (copies kept
    for a while, like a store's cached references, then reuse freed memory). Contiguous CPU
    tensors are copied by numpy on this thread: torch's intra-op threads would compete with
    the core's Rayon workers for the cores (on 2 cores a store's loads ran 5x slower)."""
    name = _torch_dtype_name(t)
    if name is None:
        return t.detach().to("cpu", copy=True)
    out, raw = empty(name, tuple(t.shape), "torch", "cpu")
    src = t.detach()
    if src.device.type == "cpu" and src.is_contiguous() and not src.is_conj() and not src.is_neg():
        np.copyto(raw, _bytes_of(src))
    else:
        out.copy_(src)
    return out


# Dtypes whose numpy arrays torch.from_numpy takes as the same torch dtype.
_NUMPY_TORCH_SAFE = {name: np.dtype(name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
    "complex64", "complex128")}


def finish(obj: Any, tag: str, device: str):
    """Moves a decoded CPU tensor to `device` (torch only)."""
    if tag == "torch" and device not in ("cpu", None):
        return obj.to(device)
    return obj


def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError("this checkpoint holds torch tensors: install torch") from e
    return torch


def _numpy_dtype(name: str) -> np.dtype:
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        try:
            import ml_dtypes
        except ImportError as e:
            raise UnsupportedError(f"numpy has no {name}: install ml_dtypes") from e
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)

"""Checkpoint structure <-> the core's value tree, without pickle.

`pack` walks a nested object (dicts, lists, tuples, scalars, tensors), replaces each tensor
by a `TensorRef` and each host-specific value (torch.dtype, OrderedDict, set, ...) by an
`Ext`; `unpack` reverses it. Tensor names are the '/'-joined key paths. `leaves` finds
the tensors and their names alone (how a decode finds its reference's tensors).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from . import _core
from ._tensors import _torch, is_tensor
from .errors import UnsupportedError

_PLAIN = (type(None), bool, int, float, str, bytes)
# Exactly these types (not subclasses, which may be host-specific) skip every other check.
_PLAIN_TYPES = frozenset(_PLAIN)


class Packer:
    """Collects tensors (with unique names) while converting a structure."""

    def __init__(self) -> None:
        self.tensors: list[tuple[str, Any]] = []
        self._names: set[str] = set()
        # Looked up once per call, not once per value (a state dict has hundreds).
        self._tensor_types = _tensor_types()

    def pack(self, obj: Any, path: tuple = ()) -> Any:
        """Converts `obj` (found at `path`) into the core's representation."""
        if type(obj) in _PLAIN_TYPES:
            return obj
        if isinstance(obj, self._tensor_types):
            return self._tensor(obj, path)
        if isinstance(obj, dict):
            items = {self._key(k, path): self.pack(v, (*path, k)) for k, v in obj.items()}
            if isinstance(obj, OrderedDict):
                meta = getattr(obj, "_metadata", None)
                return _core.Ext("OrderedDict", (items, self.pack(meta, (*path, "_metadata"))))
            return items
        if isinstance(obj, list):
            return [self.pack(v, (*path, i)) for i, v in enumerate(obj)]
        ext = _ext(obj, lambda v, p=path: self.pack(v, p))
        if ext is not None:
            return ext
        if isinstance(obj, tuple):
            return tuple(self.pack(v, (*path, i)) for i, v in enumerate(obj))
        if isinstance(obj, _PLAIN):
            return obj
        where = "/".join(map(str, path)) or "<root>"
        raise UnsupportedError(f"{where}: cannot store a value of type {type(obj).__name__}")

    def _key(self, key: Any, path: tuple) -> Any:
        if type(key) is str:
            return key
        _refuse_tensor_key(key, path)
        return self.pack(key, path)

    def _tensor(self, obj: Any, path: tuple) -> Any:
        self.tensors.append((_unique_name(path, self._names), obj))
        return _core.TensorRef(len(self.tensors) - 1)


def _refuse_tensor_key(key: Any, path: tuple) -> None:
    """Raises `UnsupportedError` if the dict key `key` (of the dict at `path`) is a tensor."""
    if is_tensor(key):
        raise UnsupportedError(f"{'/'.join(map(str, path))}: tensors cannot be dict keys")


def _tensor_types() -> tuple[type, ...]:
    """The types stored as tensors: numpy arrays, and torch tensors where torch is loaded."""
    torch = _torch()
    return (np.ndarray,) if torch is None else (np.ndarray, torch.Tensor)


def _unique_name(path: tuple, names: set[str]) -> str:
    """A tensor's name: its '/'-joined key path ("tensor" at the root), with "~2", "~3",
    ... appended while that is taken; the name is added to `names`."""
    name = "/".join(map(str, path)) or "tensor"
    unique, k = name, 1
    while unique in names:
        k += 1
        unique = f"{name}~{k}"
    names.add(unique)
    return unique


class Leaves:
    """The tensors of a structure under the names `Packer` gives them, in the same order,
    found without converting anything: what a decode needs of its reference object (a
    reference's tensors are looked up by name), at a fraction of a `Packer` walk's cost.
    Raises `UnsupportedError` where `Packer` does."""

    def __init__(self) -> None:
        self.tensors: list[tuple[str, Any]] = []
        self._names: set[str] = set()
        self._tensor_types = _tensor_types()
        self._packer = Packer()

    def walk(self, obj: Any, path: tuple = ()) -> None:
        """Visits `obj` (found at `path`) as `Packer.pack` does."""
        if isinstance(obj, self._tensor_types):
            self.tensors.append((_unique_name(path, self._names), obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if type(k) not in _PLAIN_TYPES:
                    self._key(k, path)
                self._child(v, (*path, k))
            if isinstance(obj, OrderedDict):
                self._child(getattr(obj, "_metadata", None), (*path, "_metadata"))
        elif isinstance(obj, (list, tuple)) and not _is_ext(obj):
            for i, v in enumerate(obj):
                self._child(v, (*path, i))
        elif isinstance(obj, (set, frozenset)):
            for v in obj:
                self._child(v, path)
        elif type(obj) not in _PLAIN_TYPES:
            # Leaves with no tensors inside: checked (and refused) as `Packer` does.
            self._packer.pack(obj, path)

    def _child(self, v: Any, path: tuple) -> None:
        """`walk` of a container's value, skipping plain values (most of them) cheaply."""
        if type(v) in _PLAIN_TYPES:
            return
        if isinstance(v, self._tensor_types):
            self.tensors.append((_unique_name(path, self._names), v))
        else:
            self.walk(v, path)

    def _key(self, key: Any, path: tuple) -> None:
        _refuse_tensor_key(key, path)
        self.walk(key, path)


def leaves(obj: Any) -> list[tuple[str, Any]]:
    """`(name, tensor)` of every tensor of `obj`, as `Packer` names them (see `Leaves`)."""
    walker = Leaves()
    walker.walk(obj)
    return walker.tensors


def _is_ext(obj: Any) -> bool:
    """Whether a list or tuple is a leaf `Packer` stores as an `Ext` (a torch.Size)."""
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Size)


def _ext(obj: Any, pack: Callable[[Any], Any]) -> Any:
    """Host-specific leaves and containers as `Ext`, or None if `obj` is not one."""
    torch = _torch()
    if torch is not None:
        if isinstance(obj, torch.dtype):
            return _core.Ext("torch.dtype", str(obj).removeprefix("torch."))
        if isinstance(obj, torch.device):
            return _core.Ext("torch.device", str(obj))
        if isinstance(obj, torch.Size):
            return _core.Ext("torch.Size", tuple(obj))
    if isinstance(obj, (set, frozenset)):
        return _core.Ext(type(obj).__name__, [pack(v) for v in obj])
    if isinstance(obj, np.generic):
        return _core.Ext("numpy.scalar", (obj.dtype.str, obj.tobytes()))
    if isinstance(obj, np.dtype):
        return _core.Ext("numpy.dtype", obj.str)
    return None


def unpack(obj: Any, tensors: list[Any]) -> Any:
    """Rebuilds the Python structure, substituting decoded `tensors` for placeholders."""
    if isinstance(obj, _core.TensorRef):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return {unpack(k, tensors): unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unpack(v, tensors) for v in obj)
    if isinstance(obj, _core.Ext):
        return _rebuild(obj.kind, obj.value, tensors)
    return obj


def _rebuild(kind: str, value: Any, tensors: list[Any]) -> Any:
    if kind == "OrderedDict":
        items, meta = value
        out = OrderedDict((unpack(k, tensors), unpack(v, tensors)) for k, v in items.items())
        if meta is not None:
            out._metadata = unpack(meta, tensors)  # type: ignore[attr-defined]
        return out
    if kind in ("set", "frozenset"):
        items = [unpack(v, tensors) for v in value]
        return set(items) if kind == "set" else frozenset(items)
    if kind == "safetensors":  # made by fastckpt.safetensors: the tensors, header dropped
        return unpack(value[0], tensors)
    if kind == "numpy.scalar":
        dtype, raw = value
        return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
    if kind == "numpy.dtype":
        return np.dtype(value)
    if kind.startswith("torch."):
        from ._tensors import _import_torch

        torch = _import_torch()
        if kind == "torch.dtype":
            return getattr(torch, value)
        if kind == "torch.device":
            return torch.device(value)
        if kind == "torch.Size":
            return torch.Size(value)
    raise UnsupportedError(f"unknown stored value kind {kind!r} (newer fastckpt?)")

"""fastckpt: small, fast, bit-exact compression of neural-network checkpoints.

    import fastckpt
    data = fastckpt.encode({"model": model.state_dict(), "optim": opt.state_dict()})
    state = fastckpt.decode(data)
    fastckpt.save(state, "step_1000.fckpt"); state = fastckpt.load("step_1000.fckpt")

Tensors (torch or numpy) are split into float fields and entropy coded by a Rust core
(32-lane rANS, Rayon-parallel, GIL released); the structure around them (dicts, lists,
scalars, optimizer param_groups) is stored without pickle. Every chunk is checksummed:
a corrupt or truncated file raises, it never decodes into wrong data.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Union

import numpy as np

from . import _adam, _core, _memory, _tensors, _tree, lossy
from ._memory import set_pool_limit
from .errors import (
    CorruptCheckpoint,
    FastckptError,
    FormatError,
    LossyCheckpointWarning,
    ReferenceMismatch,
    UnsupportedError,
)
from .lossy import PRESETS

__version__ = "0.1.0"
__all__ = [
    "safetensors", "encode", "decode", "save", "load", "inspect", "read_tensor",
    "FastckptError", "FormatError", "CorruptCheckpoint", "ReferenceMismatch", "UnsupportedError",
    "LossyCheckpointWarning", "PRESETS", "Store", "set_pool_limit",
]

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[bytes, bytearray, memoryview, np.ndarray, PathLike]


def _prepare(obj: Any):
    packer = _tree.Packer()
    structure = packer.pack(obj)
    specs, owners = [], []
    for name, leaf in packer.tensors:
        dtype, shape, tag, raw, owner = _tensors.to_raw(leaf)
        specs.append((name, dtype, list(shape), tag, raw))
        owners.append(owner)
    return specs, structure, owners


def _leaves_by_name(reference: Any) -> dict[str, Any]:
    """The tensors of a reference object by the names `encode` gives the tensors of an
    object of the same structure (not converted: see `_raw_by_name`)."""
    if reference is None:
        return {}
    return dict(_tree.leaves(reference))


def _raw_by_name(leaves: dict[str, Any]) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """Converts a reference's tensors by name (`_leaves_by_name`) into {tensor name:
    (dtype, shape, raw bytes)}. Each raw view keeps its tensor alive through its numpy
    base."""
    out = {}
    for name, leaf in leaves.items():
        dtype, shape, _tag, raw, _owner = _tensors.to_raw(leaf)
        out[name] = (dtype, list(shape), raw)
    return out


def _coding_references(specs, reference: Any, reference_id: str, tensor_references,
                       lossy_specs, threads):
    """The core's `references` and `directions` arguments: each tensor paired with the
    same-named tensor of `reference` (same dtype and shape), or its Adam-direction
    prediction where that fits much better (`_adam`), or with its entry in
    `tensor_references`; None without a reference."""
    if tensor_references:
        return _explicit_references(specs, tensor_references), None
    leaves = _leaves_by_name(reference)
    raws = _raw_by_name(leaves)
    refs = _references(specs, raws, reference_id)
    return refs, _adam.directed(specs, refs, leaves, raws, lossy_specs, threads)


def _references(specs, refs: dict[str, tuple[str, list[int], np.ndarray]], reference_id: str):
    """Pairs each tensor with the same-named tensor of the reference (`refs`, from
    `_raw_by_name`; same dtype and shape); None without a reference."""
    if not refs:
        return None
    paired = []
    for name, dtype, shape, _tag, _raw in specs:
        r = refs.get(name)
        ok = r is not None and r[0] == dtype and list(r[1]) == list(shape)
        paired.append((reference_id, name, r[2]) if ok else None)
    return paired


def _explicit_references(specs, tensor_references: dict):
    """`tensor_references` maps a tensor name to `(checkpoint_id, tensor_name, tensor)` of
    any checkpoint: the core's per-tensor references (same dtype and shape required; a 1-D
    uint8 array of the tensor's raw size is taken as its raw bytes)."""
    paired = []
    for name, dtype, shape, _tag, mine in specs:
        r = tensor_references.get(name)
        if r is None:
            paired.append(None)
            continue
        checkpoint, tensor, value = r
        if _is_raw(value, mine.nbytes):
            paired.append((str(checkpoint), str(tensor), value))
            continue
        rdtype, rshape, _rtag, raw, _owner = _tensors.to_raw(value)
        if rdtype != dtype or list(rshape) != list(shape):
            raise ValueError(f"reference of {name!r} is {rdtype}{list(rshape)}, "
                             f"not {dtype}{list(shape)}")
        paired.append((str(checkpoint), str(tensor), raw))
    return paired


_FLOATS = {"float16", "bfloat16", "float32", "float64"}


def _sides(specs, refs):
    """The core's `sides` argument: a predicted Adam second moment (`.../exp_avg_sq`)
    takes its contexts from its first moment (`.../exp_avg` beside it, same dtype and
    shape), which says where fresh gradients landed; None when no tensor has one."""
    if not refs:
        return None
    index = {spec[0]: k for k, spec in enumerate(specs)}
    sides = []
    for (name, dtype, shape, _tag, _raw), ref in zip(specs, refs):
        k = index.get(name[: -len("_sq")]) if name.endswith("/exp_avg_sq") else None
        ok = (ref is not None and k is not None and dtype in _FLOATS
              and specs[k][1] == dtype and list(specs[k][2]) == list(shape))
        sides.append(k if ok else None)
    return sides if any(s is not None for s in sides) else None


def _is_raw(value: Any, nbytes: int) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1
            and value.nbytes == nbytes and value.flags.c_contiguous)


def encode(obj: Any, *, reference: Any = None, reference_id: str = "reference",
           mode: str = "lossless", error_bound: float | None = None, policy: Any = None,
           tensor_references: dict | None = None,
           threads: int | None = None, chunk_bytes: int | None = None) -> bytes:
    """Compresses `obj` (a tensor, array or nested dict/list/tuple of them).

    With `reference` (e.g. the previous checkpoint of the same run), each tensor that has a
    same-named tensor of the same dtype and shape there is coded as a residual against it,
    where that is smaller (tensors of fewer than `_core.MIN_PREDICTED_WORDS` elements,
    such as biases, stay standalone); decoding then needs the same reference. When the
    reference holds an optimizer state, a float32 weight whose change follows Adam's
    direction is coded against `w + step * m / (sqrt(v) + eps)` from its moments there
    (`inspect()`'s "direction"; see `fastckpt._adam`). `reference_id` is
    stored to say which checkpoint that was. `tensor_references` instead names a reference
    per tensor, from any checkpoints: `{name: (checkpoint_id, tensor_name, tensor)}`; a
    tensor equal to its reference is stored as just the reference (codec "same").
    `threads` caps the worker threads (default:
    all cores); `chunk_bytes` sets the raw size of the independently coded chunks
    (default 1 MiB). The caller's data is never modified. Returns the file's bytes.

    `mode="near_lossless"` quantizes float tensors under a bound: `error_bound=e` puts
    every element of every lossy tensor within `e * rms(tensor)` of its value; `policy`
    sets it per tensor class instead (a `PRESETS` name or a dict, see `fastckpt.lossy`).
    The reference must then be the *decoded* previous checkpoint (what a reader gets), so
    errors never accumulate along a chain; `Store` does that for you.
    """
    specs, structure, _owners = _prepare(obj)
    lossy_specs = lossy.specs(specs, lossy.resolve(mode, error_bound, policy))
    refs, directions = _coding_references(specs, reference, reference_id, tensor_references,
                                          lossy_specs, threads)
    return _core.encode(specs, structure, threads, chunk_bytes, None, refs, lossy_specs,
                        sides=_sides(specs, refs), directions=directions)


def _as_array(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError("a checkpoint array must be one-dimensional uint8")
        return np.require(data, requirements="C")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    raise TypeError(f"expected bytes-like checkpoint data, got {type(data).__name__}")


def _open(source: Source) -> _core.Reader:
    if isinstance(source, (str, os.PathLike)):
        return _core.Reader(_map_file(source))
    return _core.Reader(_as_array(source))


def _map_file(path: PathLike) -> np.ndarray:
    """Memory-maps a file read-only, so reading one tensor touches only its chunks."""
    if os.path.getsize(path) == 0:
        raise FormatError(f"not a fastckpt file: {os.fspath(path)!r} is empty")
    return np.memmap(path, dtype=np.uint8, mode="r")


def _read_file(path: PathLike) -> np.ndarray:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = _memory.fresh(size)
        got = f.readinto(memoryview(buf))
    if got != size:
        raise CorruptCheckpoint(f"{path}: read {got} of {size} bytes")
    return buf


class _RefLookup:
    """Raw reference tensors by (checkpoint id, tensor name): from one `reference` object
    (any checkpoint id) or from `references` = {checkpoint id: object}. Each object is
    walked once for its tensors' names, and a tensor is turned into raw bytes only when a
    decoded tensor asks for it (tensors stored standalone need no reference)."""

    def __init__(self, reference: Any, references: dict | None) -> None:
        self.one = _leaves_by_name(reference)
        self.objects = references or {}
        self.flat: dict[str, dict] = {}
        self.raw: dict[tuple[str | None, str], Any] = {}

    def get(self, ref: tuple[str, str] | None, direction: tuple | None = None):
        """The raw bytes of reference `(checkpoint id, tensor name)`, or None; with an
        Adam `direction` `(m, v, step)`, the tuple `(raw, raw m, raw v)` of it and its
        moments, which the decoder makes the prediction from (and checks)."""
        if not ref:
            return None
        cid, tensor = ref
        w0 = self._raw(cid, tensor)
        if direction is None or w0 is None:
            return w0
        m, v = (self._raw(cid, name) for name in direction[:2])
        missing = [name for name, raw in zip(direction[:2], (m, v)) if raw is None]
        if missing:
            raise ReferenceMismatch(
                f"{tensor!r} of checkpoint {cid!r} is predicted along its Adam direction, which "
                f"needs the optimizer state {missing[0]!r} of that checkpoint: pass the whole "
                "checkpoint (model and optimizer) as the reference")
        return w0, m, v

    def _raw(self, cid: str, tensor: str):
        key = (cid if cid in self.objects else None, tensor)
        if key in self.raw:
            return self.raw[key]
        if key[0] is not None:
            if cid not in self.flat:
                self.flat[cid] = _leaves_by_name(self.objects[cid])
            leaf = self.flat[cid].get(tensor)
        else:
            leaf = self.one.get(tensor)
        raw = None if leaf is None else _tensors.to_raw(leaf)[3]
        self.raw[key] = raw
        return raw


# Fields of `_core.Reader.specs()` tuples.
_NAME, _DTYPE, _SHAPE, _TAG, _REFERENCE, _SIDE, _LOSSY, _DIRECTION = range(8)


def _decode_tensors(reader: _core.Reader, specs: list[tuple], indices: list[int], device: str,
                    threads, reference: Any = None, references: dict | None = None,
                    copies: list | None = None, trusted: bool = False):
    """Decodes tensors `indices` of `reader` (whose `specs()` are `specs`), and with them
    the side tensors they take their contexts from (decoded, not returned). With a list
    `copies` (CPU only), a second, independent copy of each returned tensor is appended
    to it, written by the decoder while each chunk is in cache. `trusted`: the references
    are known to be right (a store's own decodes), so they are not hashed first."""
    refs = _RefLookup(reference, references)
    wanted = len(indices)
    sides = {specs[i][_SIDE] for i in indices} - {None}
    if sides:
        names = {t[_NAME]: k for k, t in enumerate(specs)}
        indices = list(indices) + sorted({names[s] for s in sides} - set(indices))
    if copies is None:
        arrays = reader.decode_arrays(indices, threads,
                                      [refs.get(specs[i][_REFERENCE], specs[i][_DIRECTION])
                                       for i in indices], trusted)
        wrapper, finish = _tensors.wrapper, _tensors.finish
        tensors = [wrapper(specs[i][_DTYPE], specs[i][_TAG])(a)
                   for a, i in zip(arrays[:wanted], indices[:wanted])]
        if device in ("cpu", None):
            return tensors
        return [finish(t, specs[i][_TAG], device) for t, i in zip(tensors, indices)]
    outs, bufs, ref_bufs, twins, twin_bufs = [], [], [], [], []
    empty = _tensors.empty
    for k, i in enumerate(indices):
        t = specs[i]
        obj, buf = empty(t[_DTYPE], t[_SHAPE], t[_TAG], device)
        outs.append(obj)
        bufs.append(buf)
        ref_bufs.append(refs.get(t[_REFERENCE], t[_DIRECTION]))
        if copies is not None and k < wanted:
            twin, twin_buf = empty(t[_DTYPE], t[_SHAPE], t[_TAG], "cpu")
            twins.append(twin)
            twin_bufs.append(twin_buf)
    reader.decode_into(indices, bufs, threads, ref_bufs,
                       twin_bufs + [None] * (len(indices) - len(twin_bufs)) if twins else None,
                       trusted)
    if copies is not None:
        copies.extend(_tensors.finish(o, specs[i][_TAG], "cpu") for o, i in zip(twins, indices))
    return [_tensors.finish(o, specs[i][_TAG], device)
            for o, i in zip(outs[:wanted], indices[:wanted])]


def decode(data: Any, *, reference: Any = None, references: dict | None = None,
           device: str = "cpu", threads: int | None = None, lossy_ok: bool = False) -> Any:
    """Decompresses checkpoint bytes into the structure that was encoded, bit-exactly.

    Torch tensors come back as torch tensors on `device`, numpy arrays as numpy arrays.
    A checkpoint encoded with a `reference` needs that same reference here
    (`ReferenceMismatch` otherwise: every decoded chunk is checked against its stored
    hash, and only when one fails are the references hashed to name a wrong one). A
    checkpoint whose tensors reference several checkpoints takes
    `references={checkpoint_id: object}`. Raises `CorruptCheckpoint` or `FormatError` on
    damaged input; never returns bad data. A near-lossless checkpoint
    decodes to the values it stored (not the originals) and warns
    `LossyCheckpointWarning` unless `lossy_ok`.
    """
    reader = _core.Reader(_as_array(data))
    return _materialize(reader, device, threads, reference, references, lossy_ok)


def _materialize(reader: _core.Reader, device: str, threads, reference: Any = None,
                 references: dict | None = None, lossy_ok: bool = False,
                 twin: list | None = None, trusted: bool = False) -> Any:
    """The decoded object; with a list `twin` (CPU only), also appends to it a second,
    independent copy of the object (the decoder writes both). `trusted`: see
    `_decode_tensors`."""
    specs = reader.specs()
    n_lossy = sum(t[_LOSSY] for t in specs)
    if n_lossy and not lossy_ok:
        warnings.warn(f"near-lossless checkpoint: {n_lossy} of {len(specs)} tensors decode "
                      "within their stated error bounds, not bit-exactly (fastckpt.inspect "
                      "shows each bound)", LossyCheckpointWarning, stacklevel=3)
    n = len(specs)
    copies = None if twin is None else []
    tensors = _decode_tensors(reader, specs, list(range(n)), device, threads, reference,
                              references, copies, trusted)
    structure = reader.structure()
    if twin is not None:
        # `unpack` builds new containers each time: the twin shares only immutable leaves.
        twin.append(_tree.unpack(structure, copies))
    return _tree.unpack(structure, tensors)


def save(obj: Any, path: PathLike, *, reference: Any = None, reference_id: str = "reference",
         mode: str = "lossless", error_bound: float | None = None, policy: Any = None,
         tensor_references: dict | None = None,
         threads: int | None = None, chunk_bytes: int | None = None) -> None:
    """Encodes `obj` into `path` atomically (temp file, fsync, rename): a crash leaves
    either the old file or the new one, never a partial file. See `encode`."""
    _save(obj, path, None, reference=reference, reference_id=reference_id, mode=mode,
          error_bound=error_bound, policy=policy, tensor_references=tensor_references,
          threads=threads, chunk_bytes=chunk_bytes)


def _save(obj: Any, path: PathLike, twin: list | None, *, reference: Any = None,
          reference_id: str = "reference", mode: str = "lossless",
          error_bound: float | None = None, policy: Any = None,
          tensor_references: dict | None = None, threads: int | None = None,
          chunk_bytes: int | None = None) -> None:
    """`save`; with a list `twin`, also appends to it a private copy of `obj` (tensors on
    the CPU, containers as a decode rebuilds them) whose bytes the encoder writes as it
    reads each chunk: what a store keeps as the next save's reference."""
    specs, structure, _owners = _prepare(obj)
    lossy_specs = lossy.specs(specs, lossy.resolve(mode, error_bound, policy))
    refs, directions = _coding_references(specs, reference, reference_id, tensor_references,
                                          lossy_specs, threads)
    made = None if twin is None else [_tensors.empty(dtype, tuple(shape), tag, "cpu")
                                      for _name, dtype, shape, tag, _raw in specs]
    copies = None if made is None else [buf for _t, buf in made]
    _atomic_encode(specs, structure, path, threads, chunk_bytes, refs, lossy_specs, copies,
                   directions)
    if twin is not None:
        twin.append(_tree.unpack(structure, [t for t, _buf in made]))


def _atomic_encode(specs, structure, path: PathLike, threads, chunk_bytes, refs=None,
                   lossy_specs=None, copies=None, directions=None) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastckpt-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        _core.encode(specs, structure, threads, chunk_bytes, tmp, refs, lossy_specs,
                     sides=_sides(specs, refs), copies=copies, directions=directions)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: PathLike, *, reference: Any = None, references: dict | None = None,
         device: str = "cpu", threads: int | None = None, lossy_ok: bool = False) -> Any:
    """Reads a checkpoint file written by `save` (see `decode`)."""
    return _materialize(_core.Reader(_read_file(path)), device, threads, reference, references,
                        lossy_ok)


def inspect(source: Source) -> dict:
    """The checkpoint's index without decoding any tensor: format version, and per tensor
    its name, dtype, shape, raw and compressed sizes, chunk count, codec ("planes",
    "predicted" or "same") and reference (checkpoint id and tensor name, or None)."""
    reader = _open(source)
    tensors = reader.tensors()
    raw = sum(t["raw_bytes"] for t in tensors)
    comp = sum(t["compressed_bytes"] for t in tensors)
    return {
        "version": _core.FORMAT_VERSION,
        "lossy": any(t["lossy"] for t in tensors),
        "tensors": tensors,
        "raw_bytes": raw,
        "compressed_bytes": comp,
    }


def read_tensor(source: Source, name: str, *, reference: Any = None,
                references: dict | None = None, device: str = "cpu",
                threads: int | None = None, lossy_ok: bool = False) -> Any:
    """Decodes the one tensor called `name` (see `inspect` for names) and nothing else
    (warns `LossyCheckpointWarning` for a near-lossless tensor unless `lossy_ok`)."""
    reader = _open(source)
    specs = reader.specs()
    names = [t[_NAME] for t in specs]
    try:
        i = names.index(name)
    except ValueError:
        raise KeyError(f"no tensor named {name!r} in this checkpoint") from None
    if specs[i][_LOSSY] and not lossy_ok:
        warnings.warn(f"tensor {name!r} is near-lossless: within its stated error bound "
                      "(fastckpt.inspect shows it), not bit-exact", LossyCheckpointWarning,
                      stacklevel=2)
    return _decode_tensors(reader, specs, [i], device, threads, reference, references)[0]


from . import safetensors  # noqa: E402  (module uses the API above)
from .store import Store  # noqa: E402  (module uses the API above)

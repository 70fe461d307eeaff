"""Conversion between .safetensors files and fastckpt files, without torch.

`compress_file` keeps the original safetensors header verbatim, so `decompress_file`
rebuilds the original file byte for byte. `fastckpt.load` of a converted file returns the
plain `{name: tensor}` dict (as torch tensors).
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from . import _core
from .errors import FormatError

_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
    "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "C64": "complex64",
}


def _entries(header: bytes) -> tuple[list[tuple[str, str, list[int], int, int]], int]:
    """Parses a safetensors JSON header: (name, dtype, shape, begin, end) in data order,
    checked to tile the data section from 0 without gaps; and the data length."""
    try:
        meta = json.loads(header)
        entries = [
            (name, info["dtype"], list(info["shape"]), *info["data_offsets"])
            for name, info in meta.items()
            if name != "__metadata__"
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"bad safetensors header: {e!r}") from None
    out = []
    for name, dtype, shape, begin, end in entries:
        if dtype not in _DTYPES:
            raise FormatError(f"{name}: unsupported safetensors dtype {dtype}")
        out.append((name, _DTYPES[dtype], shape, begin, end))
    out.sort(key=lambda e: e[3])
    at = 0
    for name, _, _, begin, end in out:
        if begin != at or end < begin:
            raise FormatError(f"{name}: data offsets [{begin}, {end}) are not contiguous")
        at = end
    return out, at


def _parse(buf: np.ndarray) -> tuple[bytes, list[tuple[str, str, list[int], int, int]]]:
    """Splits a whole safetensors file into its raw JSON header and its entries."""
    if buf.size < 8:
        raise FormatError("safetensors file shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8].tobytes())
    if n > buf.size - 8:
        raise FormatError(f"safetensors header of {n} bytes exceeds the file")
    header = buf[8 : 8 + n].tobytes()
    entries, data_len = _entries(header)
    if data_len != buf.size - 8 - n:
        raise FormatError("safetensors data section length does not match its header")
    return header, entries


def compress_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                  threads: int | None = None) -> None:
    """Compresses the .safetensors file `src` into the fastckpt file `dst` (atomically)."""
    buf = np.fromfile(src, dtype=np.uint8)
    header, entries = _parse(buf)
    base = 8 + len(header)
    specs, refs = [], {}
    for i, (name, dtype, shape, begin, end) in enumerate(entries):
        raw = buf[base + begin : base + end]
        specs.append((name, dtype, shape, "torch", raw))
        refs[name] = _core.TensorRef(i)
    structure = _core.Ext("safetensors", (refs, header))
    from . import _atomic_encode

    _atomic_encode(specs, structure, dst, threads, None)


def decompress_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                    threads: int | None = None) -> None:
    """Writes the original .safetensors file back from a file made by `compress_file`."""
    from . import _read_file

    reader = _core.Reader(_read_file(src))
    structure = reader.structure()
    if not (isinstance(structure, _core.Ext) and structure.kind == "safetensors"):
        raise FormatError(f"{os.fspath(src)!r} was not made from a safetensors file")
    _, header = structure.value
    entries, data_len = _entries(header)
    index = {t["name"]: i for i, t in enumerate(reader.tensors())}
    total = 8 + len(header) + data_len
    out = np.empty(total, dtype=np.uint8)
    out[:8] = np.frombuffer(struct.pack("<Q", len(header)), dtype=np.uint8)
    out[8 : 8 + len(header)] = np.frombuffer(header, dtype=np.uint8)
    base = 8 + len(header)
    names = [name for name, *_ in entries]
    views = [out[base + b : base + e] for _, _, _, b, e in entries]
    reader.decode_into([index[n] for n in names], views, threads)
    tmp = f"{os.fspath(dst)}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(out))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

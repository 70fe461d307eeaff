"""Type stubs for the Rust extension `fastckpt._core` (bindings to fastckpt-core)."""

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION: int
FORMAT_MINOR: int
DTYPES: list[str]

class TensorRef:
    """Placeholder for tensor `index` inside a checkpoint structure."""

    index: int
    def __init__(self, index: int) -> None: ...

class Ext:
    """A host-specific value (kind, value) that the Python layer rebuilds."""

    kind: str
    value: Any
    def __init__(self, kind: str, value: Any) -> None: ...

POOL_MIN_BYTES: int
# Tensors of fewer elements are coded standalone even when a reference is given.
MIN_PREDICTED_WORDS: int

class Buffer:
    """A page-aligned byte buffer from the core's pool; `numpy.asarray(buffer)` views it,
    and its memory returns to the pool once no array or tensor over it is left."""

    def __init__(self, len: int) -> None: ...
    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...

def set_pool_limit(nbytes: int) -> int:
    """Sets the cap on unused pooled bytes (0: pooling off); returns the previous cap."""

def pool_limit() -> int:
    """The cap on unused pooled bytes."""

def pooled_bytes() -> int:
    """Bytes of unused buffers the pool keeps now."""

TensorSpec = tuple[str, str, Sequence[int], str, npt.NDArray[np.uint8]]
Raw = npt.NDArray[np.uint8]
#: A decoder's reference: raw bytes, or (raw bytes, raw m, raw v) for a tensor with an
#: Adam-direction reference.
DecodeRef = Raw | tuple[Raw, Raw, Raw]

def encode(
    tensors: Sequence[TensorSpec],
    structure: Any,
    threads: int | None = None,
    chunk_bytes: int | None = None,
    path: str | PathLike[str] | None = None,
    references: Sequence[tuple[str, str, npt.NDArray[np.uint8]] | None] | None = None,
    lossy: Sequence[tuple[str, float, float, bool] | None] | None = None,
    sparse_block: int | None = None,
    sides: Sequence[int | None] | None = None,
    copies: Sequence[npt.NDArray[np.uint8] | None] | None = None,
    directions: Sequence[tuple[str, str, float, Raw, Raw] | None] | None = None,
) -> bytes | None:
    """Encodes (name, dtype, shape, tag, uint8 array) tensors and a structure; returns the
    file bytes, or writes and fsyncs `path` and returns None. `references[k]` is
    (checkpoint id, tensor name, raw bytes) to predict tensor k from; `lossy[k]` is
    (class, error bound, prune fraction, non-negative) to code it near-losslessly;
    `sparse_block` is the block size of near-lossless block-sparse packing; `sides[k]` is
    the index of a sibling tensor whose words give predicted tensor k its contexts;
    `copies[k]`, a writable uint8 array of tensor k's size, receives a copy of its bytes
    (written chunk by chunk as each is encoded); `directions[k]` = (m name, v name, step,
    raw m, raw v) codes tensor k against the Adam-direction prediction
    (`direction_predict`) of `references[k]`'s bytes and those moments, made chunk by
    chunk as each is coded, and records the names and step."""

class Reader:
    """A parsed checkpoint over a uint8 array."""

    def __init__(self, data: npt.NDArray[np.uint8]) -> None: ...
    def structure(self) -> Any:
        """The structure with TensorRef / Ext placeholders."""
    def specs(
        self,
    ) -> list[tuple[str, str, tuple[int, ...], str, tuple[str, str] | None, str | None, bool,
                    tuple[str, str, float] | None]]:
        """What decoding needs, one tuple per tensor: (name, dtype, shape, tag, reference
        as (checkpoint, tensor) or None, side tensor's name or None, lossy, Adam direction
        as (m name, v name, step) or None)."""
    def tensors(self) -> list[dict[str, Any]]:
        """Per tensor: name, dtype, shape, tag, codec ("planes", "predicted", "quantized"),
        lossy, params (the near-lossless plan and what the encoder measured, else None),
        reference ({checkpoint, tensor} or None), raw_bytes, compressed_bytes, chunks,
        raw_hash."""
    def decode_into(
        self,
        indices: Sequence[int],
        outputs: Sequence[npt.NDArray[np.uint8]],
        threads: int | None = None,
        references: Sequence[DecodeRef | None] | None = None,
        copies: Sequence[npt.NDArray[np.uint8] | None] | None = None,
        trusted: bool = False,
    ) -> None:
        """Decodes tensors `indices[k]` into the writable uint8 arrays `outputs[k]`;
        `references[k]` is the reference's raw bytes for a tensor that has one (with an
        Adam direction: (raw bytes, raw m, raw v), the moments the file names);
        `copies[k]`, when given, receives a second copy of the decoded bytes (written
        chunk by chunk while each is in cache); references are hashed only
        when a chunk fails its output check, to raise `ReferenceMismatch` for a wrong one;
        `trusted` skips even that (a wrong one then raises as corrupt data)."""
    def decode_arrays(
        self,
        indices: Sequence[int],
        threads: int | None = None,
        references: Sequence[DecodeRef | None] | None = None,
        trusted: bool = False,
    ) -> list[npt.NDArray[Any]]:
        """Decodes tensors `indices[k]` into new arrays, returned in that order: of each
        tensor's shape and numpy dtype (int16 for bfloat16, uint8 for the 8-bit floats),
        C-contiguous and writable, large ones in pooled buffers. `references` and
        `trusted` as in `decode_into`."""

def signature(dtype_name: str, data: npt.NDArray[np.uint8]) -> int:
    """128-bit SimHash of raw tensor bytes (a deterministic sample of <= 4096 elements)."""

def content_hash(dtype_name: str, data: npt.NDArray[np.uint8],
                 chunk_bytes: int | None = None) -> str:
    """The `raw_hash` (32 hex digits) a file would store for these bytes."""

def estimate_standalone(dtype_name: str, data: npt.NDArray[np.uint8]) -> int:
    """Estimated coded bytes of `data` alone (sampled blocks, real coder)."""

def estimate_predicted(dtype_name: str, data: npt.NDArray[np.uint8],
                       reference: npt.NDArray[np.uint8]) -> int:
    """Estimated coded bytes of `data` predicted from `reference` (0: an exact copy)."""

DIRECTION_EPS: float
DIRECTION_STEPS: tuple[float, float]

def direction_fit(w0: npt.NDArray[np.uint8], w1: npt.NDArray[np.uint8],
                  m: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8],
                  sample_words: int | None = None,
                  threads: int | None = None) -> tuple[float, float]:
    """(step, r2): the least-squares step of `w1 - w0` on `m / (sqrt(v) + eps)` and the
    share of the change it explains (raw float32 bytes, equal lengths), over about
    `sample_words` words in evenly spaced blocks, or all."""

def direction_predict(w0: npt.NDArray[np.uint8], m: npt.NDArray[np.uint8],
                      v: npt.NDArray[np.uint8], step: float, out: npt.NDArray[np.uint8],
                      threads: int | None = None) -> None:
    """Writes the Adam-direction prediction `w0 + step * m / (sqrt(v) + eps)` into `out`
    (raw float32 bytes, equal lengths), bit-identical on every machine."""

IndexEntry = tuple[str, str, str, int, str, int]

class LshIndex:
    """Banded LSH index of tensor signatures (Bloom filter + sorted map per band)."""

    def __init__(self, bands: int | None = None, rows: int | None = None) -> None: ...
    @staticmethod
    def from_bytes(data: bytes) -> LshIndex:
        """Parses a serialized index; damage raises FormatError / CorruptCheckpoint."""
    def to_bytes(self) -> bytes: ...
    def params(self) -> tuple[int, int]: ...
    def collision(self, cos: float) -> float:
        """Probability that a pair of cosine `cos` shares a band (the S-curve)."""
    def __len__(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def extend(self, entries: Sequence[IndexEntry]) -> None:
        """Adds (checkpoint, tensor, dtype, numel, raw_hash, signature) entries."""
    def remove_checkpoint(self, checkpoint: str) -> int: ...
    def exact(self, dtype_name: str, numel: int, raw_hash: str) -> list[tuple[str, str]]: ...
    def query(self, dtype_name: str, numel: int, signature: int,
              limit: int) -> list[tuple[str, str, int]]:
        """Up to `limit` (checkpoint, tensor, hamming distance), nearest first."""

"""Type stubs for the Rust extension `fastckpt._core` (bindings to fastckpt-core)."""

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION: int
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

TensorSpec = tuple[str, str, Sequence[int], str, npt.NDArray[np.uint8]]

def encode(
    tensors: Sequence[TensorSpec],
    structure: Any,
    threads: int | None = None,
    chunk_bytes: int | None = None,
    path: str | PathLike[str] | None = None,
    references: Sequence[tuple[str, str, npt.NDArray[np.uint8]] | None] | None = None,
    lossy: Sequence[tuple[str, float, float, bool] | None] | None = None,
    sparse_block: int | None = None,
) -> bytes | None:
    """Encodes (name, dtype, shape, tag, uint8 array) tensors and a structure; returns the
    file bytes, or writes and fsyncs `path` and returns None. `references[k]` is
    (checkpoint id, tensor name, raw bytes) to predict tensor k from; `lossy[k]` is
    (class, error bound, prune fraction, non-negative) to code it near-losslessly;
    `sparse_block` is the block size of near-lossless block-sparse packing."""

class Reader:
    """A parsed checkpoint over a uint8 array."""

    def __init__(self, data: npt.NDArray[np.uint8]) -> None: ...
    def structure(self) -> Any:
        """The structure with TensorRef / Ext placeholders."""
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
        references: Sequence[npt.NDArray[np.uint8] | None] | None = None,
    ) -> None:
        """Decodes tensors `indices[k]` into the writable uint8 arrays `outputs[k]`;
        `references[k]` is the reference's raw bytes for a tensor that has one."""

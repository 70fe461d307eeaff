"""Exceptions raised by fastckpt. The Rust core's one error enum maps onto these."""


class FastckptError(ValueError):
    """Base class of every fastckpt error."""


class FormatError(FastckptError):
    """Not a fastckpt file, an unknown format version, or a malformed header."""


class CorruptCheckpoint(FastckptError):
    """Checksum mismatch, truncated data, or an inconsistent coded stream."""


class ReferenceMismatch(FastckptError):
    """A predicted checkpoint was decoded without its reference, or with another one."""


class UnsupportedError(FastckptError, TypeError):
    """A dtype, tensor kind or Python value type that fastckpt cannot store."""


__all__ = [
    "FastckptError", "FormatError", "CorruptCheckpoint", "ReferenceMismatch", "UnsupportedError",
]


class LossyCheckpointWarning(UserWarning):
    """A near-lossless checkpoint was decoded: values are within their stated bounds of the
    originals, not bit-exact (pass `lossy_ok=True` to say you know)."""

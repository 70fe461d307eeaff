//! The one error type of the core. Bindings map each variant to a host-language exception
//! in one place; nothing in the core panics on bad input.

/// Everything that can go wrong while encoding or decoding a checkpoint.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a fastckpt file at all (bad magic).
    #[error("not a fastckpt file: {0}")]
    NotFastckpt(String),
    /// A fastckpt file of a format version this build cannot read.
    #[error("unsupported fastckpt format version {major}.{minor} (this build reads {supported})")]
    Version {
        /// Major version found in the file.
        major: u16,
        /// Minor version found in the file.
        minor: u16,
        /// The major version this build reads.
        supported: u16,
    },
    /// The header is syntactically or semantically invalid.
    #[error("malformed header: {0}")]
    Format(String),
    /// The file ends before the data it declares.
    #[error("truncated file: {0}")]
    Truncated(String),
    /// A stored checksum does not match the bytes.
    #[error("checksum mismatch: {0}")]
    Checksum(String),
    /// A coded stream is inconsistent (bad table, stream over-read, wrong final state).
    #[error("corrupt coded data: {0}")]
    Corrupt(String),
    /// A dtype, codec or value kind this build does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller passed inconsistent arguments (e.g. a buffer of the wrong length).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A predicted tensor's reference is missing or is not the one it was encoded against.
    #[error("reference: {0}")]
    Reference(String),
    /// A tensor name that is not in the checkpoint.
    #[error("no tensor named {0:?} in this checkpoint")]
    NotFound(String),
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

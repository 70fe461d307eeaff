//! fastckpt-core: small, fast, bit-exact compression of neural-network checkpoints.
//!
//! Pipeline: [`fields`] splits float words into byte planes, [`entropy`] models and codes
//! each plane with a 32-lane rANS coder, [`codec`] stores a chunk of planes, [`container`]
//! lays chunks, checksums and the checkpoint's structure into one file. Chunks are
//! independent, so [`parallel`] spreads them over Rayon workers. No Python in here: the
//! bindings crate converts buffers and maps [`Error`] to exceptions.
#![warn(missing_docs)]
// Coders index several parallel arrays (lanes, states, tables) by one counter; index loops
// read clearer there than zipped iterators.
#![allow(clippy::needless_range_loop)]

pub mod codec;
pub mod container;
pub mod dedup;
pub mod dtype;
pub mod entropy;
pub mod error;
pub mod fields;
pub mod hash;
pub mod lossy;
pub mod memory;
pub mod parallel;
pub mod pool;
pub mod predict;
pub mod quant;
pub mod relquant;
pub mod scratch;
pub mod sparse;
#[cfg(test)]
mod testing;

pub use container::format::{Header, TensorEntry};
pub use container::refs::{AdamIn, RefBytes};
pub use container::value::Value;
pub use container::{
    encode, encode_copied, Checkpoint, DecodeJob, EncodeOptions, Encoded, LossySpec, RefIn,
    TensorIn,
};
pub use dtype::DType;
pub use error::{Error, Result};

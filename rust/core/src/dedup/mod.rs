//! Dedup across checkpoints: exact duplicates by content hash, near duplicates by
//! locality-sensitive hashing.
//!
//! [`signature`] computes a 128-bit SimHash per tensor from a deterministic sample of its
//! elements; [`index`] bands signatures into an LSH index with one Bloom filter per band
//! ([`bloom`], as in LSHBloom) and a compact sorted map per band; [`estimate`] ranks the
//! candidates by the coded size the real coders give on a sample, so the reference chosen
//! is the one that codes smallest, not merely the nearest signature.

pub mod bloom;
pub mod estimate;
pub mod index;
pub mod signature;

pub use index::{Candidate, Entry, Index, LshParams};
pub use signature::{signature, Signature};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Checks that `data` is a whole number of `dtype` coder words.
fn check_words(data: &[u8], dtype: DType) -> Result<()> {
    if !data.len().is_multiple_of(dtype.word_size()) {
        return Err(Error::InvalidArgument(format!(
            "{} bytes are not whole {} words",
            data.len(),
            dtype.name()
        )));
    }
    Ok(())
}

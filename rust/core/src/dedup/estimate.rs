//! Cheap estimates of a tensor's coded size, standalone or predicted from a candidate
//! reference, by coding a few sampled blocks with the real coders ([`crate::codec`],
//! [`crate::predict`]) and scaling to the whole tensor.

use std::ops::Range;

use super::check_words;
use crate::codec;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::predict;

/// Sampled blocks per tensor.
pub const SAMPLE_BLOCKS: usize = 4;
/// Words per sampled block.
pub const BLOCK_WORDS: usize = 16_384;

/// The sampled byte ranges of a tensor of `len` bytes of `dtype`: `SAMPLE_BLOCKS` blocks
/// of `BLOCK_WORDS` words spread evenly, or the whole tensor when it is that small.
pub fn sample_ranges(len: usize, dtype: DType) -> Vec<Range<usize>> {
    let word = dtype.word_size();
    let words = len / word;
    if words <= SAMPLE_BLOCKS * BLOCK_WORDS {
        return std::iter::once(0..len).collect();
    }
    let gap = (words - BLOCK_WORDS) / (SAMPLE_BLOCKS - 1);
    (0..SAMPLE_BLOCKS)
        .map(|k| k * gap * word..(k * gap + BLOCK_WORDS) * word)
        .collect()
}

fn scaled(coded: usize, sampled: usize, len: usize) -> u64 {
    if sampled == 0 {
        return 0;
    }
    (coded as f64 * len as f64 / sampled as f64).round() as u64
}

/// Estimated coded bytes of `data` on its own.
pub fn standalone(data: &[u8], dtype: DType) -> Result<u64> {
    check_words(data, dtype)?;
    let ranges = sample_ranges(data.len(), dtype);
    let sampled: usize = ranges.iter().map(|r| r.len()).sum();
    let coded: usize = ranges
        .into_iter()
        .map(|r| codec::encode_chunk(&data[r], dtype).len())
        .sum();
    Ok(scaled(coded, sampled, data.len()))
}

/// Estimated coded bytes of `data` predicted from `reference` (same dtype and length);
/// never more than the standalone estimate plus one byte per block, as the predicted
/// coder falls back per chunk. Exact duplicates estimate at 0 (stored as a reference).
pub fn predicted(data: &[u8], reference: &[u8], dtype: DType) -> Result<u64> {
    check_words(data, dtype)?;
    if reference.len() != data.len() {
        return Err(Error::InvalidArgument(format!(
            "reference of {} bytes for {} bytes",
            reference.len(),
            data.len()
        )));
    }
    if data == reference {
        return Ok(0);
    }
    let ranges = sample_ranges(data.len(), dtype);
    let sampled: usize = ranges.iter().map(|r| r.len()).sum();
    let coded: usize = ranges
        .into_iter()
        .map(|r| predict::encode_chunk(&data[r.clone()], &reference[r], dtype).len())
        .sum();
    Ok(scaled(coded, sampled, data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(n: usize, f: impl Fn(usize) -> f32) -> Vec<u8> {
        (0..n).flat_map(|i| f(i).to_le_bytes()).collect()
    }

    #[test]
    fn close_reference_is_cheaper_than_far_one() {
        let n = 200_000;
        let base = floats(n, |i| ((i * 7919 % 10007) as f32 - 5000.0) * 1e-4);
        let near = floats(n, |i| ((i * 7919 % 10007) as f32 - 5000.0) * 1e-4 * 1.0001);
        let far = floats(n, |i| ((i * 104_729 % 10009) as f32 - 5000.0) * 1e-4);
        let alone = standalone(&near, DType::F32).unwrap();
        let good = predicted(&near, &base, DType::F32).unwrap();
        let bad = predicted(&near, &far, DType::F32).unwrap();
        assert!(good * 4 < alone * 3, "{good} vs {alone}");
        assert!(bad > good);
        assert_eq!(predicted(&near, &near, DType::F32).unwrap(), 0);
        assert!(predicted(&near, &base[4..], DType::F32).is_err());
        assert_eq!(sample_ranges(n * 4, DType::F32).len(), SAMPLE_BLOCKS);
    }
}

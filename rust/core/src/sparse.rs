//! Block-sparse packing of quantized codes: after quantization and pruning most residual
//! codes are zero, usually in runs. A chunk's codes are cut into blocks of `block` codes;
//! a bitmap says which blocks hold any non-zero code, and only those blocks are kept,
//! back to back ("dense"). The entropy coder then sees one bit per all-zero block
//! instead of `block` zero symbols.
//!
//! Bitmap bit `k` (LSB-first within each byte) is block `k`; the last block may be short.

use crate::error::{Error, Result};

/// Bytes of bitmap for `n` codes in blocks of `block`.
pub fn bitmap_len(n: usize, block: usize) -> usize {
    n.div_ceil(block).div_ceil(8)
}

/// Packs `codes` into `bitmap` (cleared first, [`bitmap_len`] bytes) and `dense` (cleared
/// first, the codes of every non-zero block in order).
pub fn pack(codes: &[u32], block: usize, bitmap: &mut Vec<u8>, dense: &mut Vec<u32>) {
    assert!(block > 0, "block size must be positive");
    bitmap.clear();
    bitmap.resize(bitmap_len(codes.len(), block), 0);
    dense.clear();
    for (k, blk) in codes.chunks(block).enumerate() {
        if blk.iter().fold(0, |a, &c| a | c) != 0 {
            bitmap[k >> 3] |= 1 << (k & 7);
            dense.extend_from_slice(blk);
        }
    }
}

/// Number of codes [`unpack`] will read from `dense` for `n` codes: the sizes of the
/// blocks marked in `bitmap`. Errors if the bitmap has the wrong length or marks blocks
/// past the end.
pub fn dense_len(bitmap: &[u8], n: usize, block: usize) -> Result<usize> {
    if block == 0 || bitmap.len() != bitmap_len(n, block) {
        return Err(Error::Corrupt("sparse bitmap of the wrong size".into()));
    }
    let blocks = n.div_ceil(block);
    let marked: usize = bitmap.iter().map(|b| b.count_ones() as usize).sum();
    let last_set = blocks > 0 && bitmap[(blocks - 1) >> 3] & (1 << ((blocks - 1) & 7)) != 0;
    let spare_bits = bitmap.len() * 8 - blocks;
    if spare_bits > 0 && bitmap.last().is_some_and(|&b| b >> (8 - spare_bits) != 0) {
        return Err(Error::Corrupt(
            "sparse bitmap marks blocks past the end".into(),
        ));
    }
    let short = n - (blocks.saturating_sub(1)) * block; // size of the last block
    Ok(if last_set {
        (marked - 1) * block + short
    } else {
        marked * block
    })
}

/// Inverse of [`pack`]: writes all `out.len()` codes. `dense` must hold exactly
/// [`dense_len`] codes.
pub fn unpack(bitmap: &[u8], dense: &[u32], block: usize, out: &mut [u32]) -> Result<()> {
    if dense_len(bitmap, out.len(), block)? != dense.len() {
        return Err(Error::Corrupt(
            "sparse dense codes do not match the bitmap".into(),
        ));
    }
    let mut at = 0;
    for (k, blk) in out.chunks_mut(block).enumerate() {
        if bitmap[k >> 3] & (1 << (k & 7)) != 0 {
            blk.copy_from_slice(&dense[at..at + blk.len()]);
            at += blk.len();
        } else {
            blk.fill(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sparse_codes() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec(prop_oneof![8 => Just(0u32), 1 => any::<u32>()], 0..2000)
    }

    proptest! {
        #[test]
        fn roundtrip(codes in sparse_codes(), block in 1usize..100) {
            let (mut bitmap, mut dense) = (Vec::new(), Vec::new());
            pack(&codes, block, &mut bitmap, &mut dense);
            prop_assert_eq!(dense_len(&bitmap, codes.len(), block).unwrap(), dense.len());
            let mut out = vec![7u32; codes.len()];
            unpack(&bitmap, &dense, block, &mut out).unwrap();
            prop_assert_eq!(out, codes);
        }

        #[test]
        fn bad_inputs_are_errors(bitmap in proptest::collection::vec(any::<u8>(), 0..40),
                                 dense in proptest::collection::vec(any::<u32>(), 0..400),
                                 n in 0usize..300, block in 1usize..40) {
            let mut out = vec![0u32; n];
            if unpack(&bitmap, &dense, block, &mut out).is_ok() {
                // Accepted input must be exactly what pack produces for the output.
                let (mut b2, mut d2) = (Vec::new(), Vec::new());
                pack(&out, block, &mut b2, &mut d2);
                prop_assert_eq!(dense.iter().filter(|&&c| c != 0).count(),
                                d2.iter().filter(|&&c| c != 0).count());
            }
        }
    }
}

//! Unsigned integers as a byte token plus raw extra bits, so that a byte-alphabet coder
//! can model codes of any size: values below [`DIRECT`] are their own token; a larger
//! value is coded by its bit length and the bit below its leading 1 (the token), followed
//! by its remaining low bits, stored raw (close to uniform at that scale).

use super::bits::{BitReader, BitWriter};
use crate::error::{Error, Result};

/// Values below this are tokens of their own.
pub const DIRECT: u32 = 16;
/// Largest token [`token`] produces (32-bit values).
pub const MAX_TOKEN: u8 = (DIRECT + (32 - 5) * 2 + 1) as u8;

/// The token of `z` and its extra bits `(value, count)`.
#[inline(always)]
pub fn token(z: u32) -> (u8, u32, u32) {
    if z < DIRECT {
        return (z as u8, 0, 0);
    }
    let nb = 32 - z.leading_zeros(); // >= 5
    let extra = nb - 2;
    let tok = DIRECT + (nb - 5) * 2 + ((z >> extra) & 1);
    (tok as u8, z & ((1u32 << extra) - 1), extra)
}

/// Writes the extra bits of `z` (the token is coded elsewhere).
#[inline(always)]
pub fn put_extra(z: u32, bits: &mut BitWriter) {
    let (_, v, n) = token(z);
    if n > 0 {
        bits.put(v as u64, n);
    }
}

/// The value of token `tok`, reading its extra bits.
#[inline(always)]
pub fn value(tok: u8, bits: &mut BitReader) -> Result<u32> {
    let t = tok as u32;
    if t < DIRECT {
        return Ok(t);
    }
    if tok > MAX_TOKEN {
        return Err(Error::Corrupt(format!("integer token {tok} out of range")));
    }
    let nb = (t - DIRECT) / 2 + 5;
    let extra = nb - 2;
    let high = (1u32 << (nb - 1)) | (((t - DIRECT) & 1) << extra);
    Ok(high | bits.get(extra) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn token_roundtrip(vals in proptest::collection::vec(
            prop_oneof![0u32..40, any::<u32>(), Just(u32::MAX)], 0..500)) {
            let mut w = BitWriter::with_capacity(64);
            let toks: Vec<u8> = vals.iter().map(|&z| { put_extra(z, &mut w); token(z).0 }).collect();
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for (&t, &z) in toks.iter().zip(&vals) {
                prop_assert!(t <= MAX_TOKEN);
                prop_assert_eq!(value(t, &mut r).unwrap(), z);
            }
        }
    }
}

//! SimHash signatures (sign random projections) of tensors, over a deterministic sample of
//! elements so that the cost does not grow with the tensor's size.
//!
//! The sampled positions depend only on `(dtype, numel)`: two tensors of the same dtype and
//! length sample the same elements, so their signatures agree bit by bit with probability
//! `1 - angle / pi`, where `angle` is the angle between the two sampled vectors (Charikar's
//! SimHash). A fine-tune and its base (cosine > 0.99) agree on > 95% of the bits; unrelated
//! tensors on about half.

use crate::dtype::DType;
use crate::error::Result;
use crate::hash;

/// Bits per signature.
pub const SIG_BITS: usize = 128;
/// Elements sampled from a tensor (all of them when it has fewer).
pub const MAX_SAMPLES: usize = 4096;

/// A tensor's 128-bit SimHash.
pub type Signature = u128;

/// The compatibility class of a tensor: only tensors of the same dtype and element count
/// can reference one another, so only they are compared.
pub fn class_key(dtype: DType, numel: u64) -> u64 {
    let mut b = [0u8; 9];
    b[0] = dtype as u8;
    b[1..].copy_from_slice(&numel.to_le_bytes());
    hash::h64(&b)
}

/// SplitMix64: the deterministic stream behind sample positions and projections.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word positions sampled from a tensor of `words` coder words of `dtype`: one position
/// drawn in each of `min(words, MAX_SAMPLES)` equal strata, in increasing order.
pub fn sample_positions(dtype: DType, words: u64) -> Vec<u64> {
    let n = words.min(MAX_SAMPLES as u64);
    if n == words {
        return (0..words).collect();
    }
    let seed = class_key(dtype, words);
    (0..n)
        .map(|i| {
            let lo = (i as u128 * words as u128 / n as u128) as u64;
            let hi = ((i + 1) as u128 * words as u128 / n as u128) as u64;
            lo + splitmix(seed ^ i) % (hi - lo)
        })
        .collect()
}

/// The value of one coder word as f64 (non-finite values count as 0).
fn word_value(dtype: DType, b: &[u8]) -> f64 {
    use DType::*;
    let v = match dtype {
        Bool | U8 => b[0] as f64,
        I8 => b[0] as i8 as f64,
        U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
        I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
        U32 => u32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as f64,
        I32 => i32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as f64,
        U64 => u64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as f64,
        I64 => i64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as f64,
        F16 => f16_value(u16::from_le_bytes([b[0], b[1]])),
        BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64,
        F32 | C64 => f32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as f64,
        F64 | C128 => f64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
        F8E4M3 => e4m3_value(b[0]),
        F8E5M2 => f16_value((b[0] as u16) << 8),
    };
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// IEEE half precision to f64 (inf and NaN come out non-finite).
fn f16_value(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let (e, m) = ((h >> 10) & 0x1f, (h & 0x3ff) as f64);
    match e {
        0 => sign * m * 2f64.powi(-24),
        31 => f64::NAN,
        _ => sign * (1.0 + m / 1024.0) * 2f64.powi(e as i32 - 15),
    }
}

/// float8 e4m3fn to f64 (bias 7, no infinities, S.1111.111 is NaN).
fn e4m3_value(x: u8) -> f64 {
    let sign = if x >> 7 == 1 { -1.0 } else { 1.0 };
    let (e, m) = ((x >> 3) & 0xf, (x & 7) as f64);
    match (e, x & 0x7f) {
        (_, 0x7f) => f64::NAN,
        (0, _) => sign * m * 2f64.powi(-9),
        _ => sign * (1.0 + m / 8.0) * 2f64.powi(e as i32 - 7),
    }
}

/// The SimHash of a tensor's raw little-endian bytes: bit `k` is the sign of the dot
/// product of the sampled values with a pseudo-random +-1 vector (the same for every
/// tensor). Errors if `data` is not a whole number of words.
pub fn signature(data: &[u8], dtype: DType) -> Result<Signature> {
    super::check_words(data, dtype)?;
    let word = dtype.word_size();
    let mut acc = [0f32; SIG_BITS];
    for (j, p) in sample_positions(dtype, (data.len() / word) as u64)
        .into_iter()
        .enumerate()
    {
        let at = p as usize * word;
        let v = word_value(dtype, &data[at..at + word]) as f32;
        let signs = (splitmix(j as u64) as u128) << 64 | splitmix(!(j as u64)) as u128;
        for (k, a) in acc.iter_mut().enumerate() {
            *a += if (signs >> k) & 1 == 1 { v } else { -v };
        }
    }
    Ok(acc
        .iter()
        .enumerate()
        .fold(0u128, |s, (k, &a)| s | ((a > 0.0) as u128) << k))
}

/// Estimated cosine similarity of the sampled vectors behind two signatures.
pub fn estimated_cosine(a: Signature, b: Signature) -> f64 {
    let agree = 1.0 - (a ^ b).count_ones() as f64 / SIG_BITS as f64;
    (std::f64::consts::PI * (1.0 - agree)).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn positions_are_sorted_strata() {
        let p = sample_positions(DType::F32, 1_000_003);
        assert_eq!(p.len(), MAX_SAMPLES);
        assert!(p.windows(2).all(|w| w[0] < w[1]) && *p.last().unwrap() < 1_000_003);
        assert_eq!(
            sample_positions(DType::F32, 10),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn near_vectors_agree_far_vectors_do_not() {
        let n = 50_000;
        let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect();
        let near: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + (i % 3) as f32)
            .collect();
        let far: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 997) as f32 - 498.0)
            .collect();
        let (sa, sn, sf) = (
            signature(&floats(&a), DType::F32).unwrap(),
            signature(&floats(&near), DType::F32).unwrap(),
            signature(&floats(&far), DType::F32).unwrap(),
        );
        assert!(estimated_cosine(sa, sn) > 0.95);
        assert!(estimated_cosine(sa, sf) < 0.6);
    }

    #[test]
    fn bad_length_is_an_error() {
        assert!(signature(&[0u8; 7], DType::F32).is_err());
    }

    #[test]
    fn small_float_formats_decode() {
        assert_eq!(f16_value(0x3c00), 1.0);
        assert_eq!(f16_value(0xc000), -2.0);
        assert_eq!(e4m3_value(0x38), 1.0);
        assert!(e4m3_value(0x7f).is_nan());
    }

    proptest! {
        #[test]
        fn signature_is_deterministic_and_scale_free(v in proptest::collection::vec(-1e3f32..1e3, 1..6000), s in 0.5f32..4.0) {
            let a = signature(&floats(&v), DType::F32).unwrap();
            prop_assert_eq!(a, signature(&floats(&v), DType::F32).unwrap());
            let scaled: Vec<f32> = v.iter().map(|x| x * s).collect();
            let b = signature(&floats(&scaled), DType::F32).unwrap();
            prop_assert!((a ^ b).count_ones() <= 2);
        }
    }
}

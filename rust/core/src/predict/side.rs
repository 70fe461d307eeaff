//! Side contexts: a word's context taken from a sibling tensor of the same checkpoint
//! instead of the reference's exponent. Made for Adam's second moment `v`, whose change
//! between checkpoints is the fresh squared gradients: where the current first moment `m`
//! is small next to `sqrt(v_ref)` (e.g. embedding rows no batch touched), `v` only decays
//! and its residual is a few units; where `m^2` is large, `v` grew. On MiniLM fine-tune
//! pairs this context saves ~0.6 bit per word over the exponent context.
//!
//! Key of word i: `k = 2 L(side_i) - L(ref_i)` with `L(x)` = |x|'s exponent and two
//! mantissa bits (log2 |x| in quarters), so `k` tracks `log2(m^2 / v)` in quarters.
//! Context: `min(max(base - k, 0) >> shift, CONTEXTS - 1)`, `base` and `shift` stored in
//! the chunk (the encoder puts `base` at a high percentile of the keys).

use super::word::{by_width, load};
use super::CONTEXTS;
use crate::dtype::DType;

/// Fewest words for which the encoder uses side contexts: they spread a chunk's words
/// over more contexts, whose tables small chunks do not repay; chunks this large are
/// sampled, and the sample decides between side and exponent contexts.
pub(super) const MIN_WORDS: usize = super::choice::MIN_WORDS;

/// Largest `shift` a chunk may store.
pub(super) const MAX_SHIFT: u8 = 4;

/// Shift the encoder writes: half-octave steps of `m^2 / v`.
const SHIFT: u8 = 1;

/// Fraction of keys at or below the encoder's base (the rest share context 0).
const BASE_QUANTILE: f64 = 0.97;

/// Words sampled for the base (every word of smaller chunks).
const SAMPLE: usize = 8192;

/// Bits to drop from |x| to keep its exponent and two mantissa bits, for the float
/// dtypes side contexts apply to (`None`: integers and 8-bit floats).
pub(super) fn log_shift(dtype: DType) -> Option<u32> {
    use DType::*;
    match dtype {
        F16 => Some(8),
        BF16 => Some(5),
        F32 | C64 => Some(21),
        F64 | C128 => Some(50),
        _ => None,
    }
}

/// The key of one word pair (see the module doc).
#[inline(always)]
pub(super) fn key<const W: usize>(side: &[u8], reference: &[u8], sh: u32) -> i32 {
    let bits = 8 * W as u32;
    let abs = |w: u64| (w << (65 - bits) >> (65 - bits)) >> sh;
    2 * abs(load::<W>(side)) as i32 - abs(load::<W>(reference)) as i32
}

/// The context of key `k`.
#[inline(always)]
pub(super) fn context(k: i32, base: i16, shift: u8) -> u8 {
    ((base as i32 - k).max(0) >> shift).min(CONTEXTS as i32 - 1) as u8
}

/// The encoder's `(base, shift)` for a chunk: `base` at [`BASE_QUANTILE`] of a sample of
/// the keys.
pub(super) fn choose(side: &[u8], reference: &[u8], dtype: DType) -> (i16, u8) {
    let sh = log_shift(dtype).expect("side contexts on a float dtype");
    let width = dtype.word_size();
    let n = side.len().min(reference.len()) / width;
    let step = (n / SAMPLE).max(1);
    let mut keys: Vec<i32> = (0..n)
        .step_by(step)
        .map(|i| {
            let at = i * width;
            by_width!(width, key(&side[at..], &reference[at..], sh))
        })
        .collect();
    if keys.is_empty() {
        return (0, SHIFT);
    }
    let at = ((keys.len() - 1) as f64 * BASE_QUANTILE) as usize;
    let (_, base, _) = keys.select_nth_unstable(at);
    (*base as i16, SHIFT)
}

/// Writes `lut[context]` of every word into `out` (one byte per word): for the two-pass
/// decoder of 16- and 64-bit words (the fused 32-bit decoder and the analysis pass compute
/// each word's context where they use it).
pub(super) fn map(
    side: &[u8],
    reference: &[u8],
    dtype: DType,
    (base, shift): (i16, u8),
    lut: &[u8; CONTEXTS],
    out: &mut [u8],
) {
    let sh = log_shift(dtype).expect("side contexts on a float dtype");
    by_width!(
        dtype.word_size(),
        map_w(side, reference, sh, (base, shift), lut, out)
    );
}

fn map_w<const W: usize>(
    side: &[u8],
    reference: &[u8],
    sh: u32,
    (base, shift): (i16, u8),
    lut: &[u8; CONTEXTS],
    out: &mut [u8],
) {
    let words = side.chunks_exact(W).zip(reference.chunks_exact(W));
    for (o, (s, r)) in out.iter_mut().zip(words) {
        *o = lut[context(key::<W>(s, r, sh), base, shift) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_log_ratio() {
        let f = |x: f32| x.to_le_bytes();
        // m^2 / v = 1: k = 2 L(m) - L(v) = L(1.0) when m = v = 1.0.
        let one = key::<4>(&f(1.0), &f(1.0), 21);
        assert_eq!(one, 127 * 4);
        // m halved: L(m) drops one octave (4 quarters), k twice that.
        assert_eq!(key::<4>(&f(0.5), &f(1.0), 21), one - 8);
        // Signs are ignored.
        assert_eq!(key::<4>(&f(-0.5), &f(1.0), 21), one - 8);
        assert_eq!(context(one, one as i16, 1), 0);
        assert_eq!(context(one - 8, one as i16, 1), 4);
        assert_eq!(context(i32::MIN / 2, 0, 0), CONTEXTS as u8 - 1);
    }

    #[test]
    fn base_is_a_high_percentile() {
        let side: Vec<u8> = (0..1000u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let reference: Vec<u8> = (0..1000).flat_map(|_| 1f32.to_le_bytes()).collect();
        let (base, shift) = choose(&side, &reference, DType::F32);
        assert_eq!(shift, SHIFT);
        let k970 = key::<4>(&970f32.to_le_bytes(), &1f32.to_le_bytes(), 21);
        assert_eq!(base as i32, k970);
    }
}

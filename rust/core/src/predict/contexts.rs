//! Contexts: each reference word's exponent distance below the chunk's largest exponent,
//! capped at `CONTEXTS - 1` (integers: context 0 for every word).

use super::word::{by_width, load, mask};
use super::CONTEXTS;

/// The chunk's base exponent: the largest top byte (sign rotated out) of the reference's
/// float words; 0 for integers.
pub(super) fn base(reference: &[u8], width: usize, float: bool) -> u8 {
    if !float {
        return 0;
    }
    let done = if width == 4 {
        simd_base32(reference)
    } else {
        None
    };
    match done {
        Some((at, top)) => top.max(base_w::<4>(&reference[at..])),
        None => by_width!(width, base_w(reference)),
    }
}

/// The base exponent of a prefix of 32-bit float words with AVX2 when the CPU has it:
/// (bytes done, their largest top byte).
fn simd_base32(reference: &[u8]) -> Option<(usize, u8)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let at = reference.len() / 128 * 128;
        // SAFETY: AVX2 is present; the kernel reads whole 128-byte blocks of the slice.
        return Some((at, unsafe { super::simd::max_top32(&reference[..at]) }));
    }
    let _ = reference;
    None
}

fn base_w<const W: usize>(reference: &[u8]) -> u8 {
    reference.chunks_exact(W).map(top::<W>).fold(0, u8::max)
}

/// Top byte of a float word after rotating the sign to bit 0: its exponent (or the
/// exponent's top bits).
#[inline(always)]
pub(super) fn top<const W: usize>(w: &[u8]) -> u8 {
    let bits = 8 * W as u32;
    let v = load::<W>(w);
    (((v << 1 | v >> (bits - 1)) & mask(bits)) >> (bits - 8)) as u8
}

/// The context of one reference word (`W` bytes) under base exponent `e_max`.
#[inline(always)]
pub(super) fn context_of<const W: usize>(w: &[u8], e_max: u8) -> u8 {
    e_max.saturating_sub(top::<W>(w)).min(CONTEXTS as u8 - 1)
}

/// Writes `lut[c]` for each reference word's context `c` into `out` (one byte per word)
/// and returns the largest top byte it saw (0 for integers), so that a decoder can check
/// the base exponent stored in a chunk against its reference without a pass of its own.
pub(super) fn map(
    reference: &[u8],
    (width, float): (usize, bool),
    e_max: u8,
    lut: &[u8; CONTEXTS],
    out: &mut [u8],
) -> u8 {
    if !float {
        out.fill(lut[0]);
        return 0;
    }
    let (done, top) = if width == 4 {
        simd_map32(reference, e_max, lut, out)
    } else {
        (0, 0)
    };
    let rest = by_width!(
        width,
        map_w(&reference[done * width..], e_max, lut, &mut out[done..])
    );
    top.max(rest)
}

fn map_w<const W: usize>(reference: &[u8], e_max: u8, lut: &[u8; CONTEXTS], out: &mut [u8]) -> u8 {
    let mut most = 0;
    for (o, w) in out.iter_mut().zip(reference.chunks_exact(W)) {
        let t = top::<W>(w);
        most = most.max(t);
        *o = lut[e_max.saturating_sub(t).min(CONTEXTS as u8 - 1) as usize];
    }
    most
}

/// Maps a prefix of 32-bit words with AVX2 when the CPU has it; returns the words done
/// and their largest top byte.
fn simd_map32(reference: &[u8], e_max: u8, lut: &[u8; CONTEXTS], out: &mut [u8]) -> (usize, u8) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let n = (reference.len() / 4).min(out.len()) / 32 * 32;
        // SAFETY: AVX2 is present; the kernel reads `4 * n` reference bytes and writes
        // `n` output bytes, both in bounds.
        let top =
            unsafe { super::simd::contexts32(&reference[..4 * n], e_max, lut, &mut out[..n]) };
        return (n, top);
    }
    let _ = (reference, e_max, lut, out);
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The AVX2 prefix and the scalar loop give every word the same code.
        #[test]
        fn simd_map_matches_scalar(words in proptest::collection::vec(any::<u32>(), 0..300),
                                   lut in any::<[u8; CONTEXTS]>()) {
            let reference: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let e_max = base(&reference, 4, true);
            let n = words.len();
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            let ta = map(&reference, (4, true), e_max, &lut, &mut a);
            let tb = map_w::<4>(&reference, e_max, &lut, &mut b);
            prop_assert_eq!(a, b);
            prop_assert_eq!(ta, e_max);
            prop_assert_eq!(tb, e_max);
            prop_assert_eq!(e_max, base_w::<4>(&reference));
        }
    }
}

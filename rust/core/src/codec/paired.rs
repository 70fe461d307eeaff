//! The encoder's choice of pair coding ([`pairs`], plane modes 3 and 4) for exponent planes.
//!
//! Pairs are tried first, and decided without modelling the plane one byte at a time: the
//! window comes from a thin sample, and the one-byte-per-symbol size the pairs are held
//! against is estimated from the pair symbols' own counts (each symbol counts for both of
//! its bytes) and the escaped bytes. Only when pairs do not pay is the plane modelled byte
//! by byte ([`super::code_plane`]): exponent planes of bf16 and fp16 weights then pass over
//! the plane once instead of twice.

use super::*;
use crate::entropy::freq::{histogram, sampled_counts};

/// Planes shorter than this keep one symbol per byte: a pair table costs more bytes.
const PAIR_MIN_BYTES: usize = 1 << 12;
/// Pairs are written only when at most 1 in this many bytes falls outside the window:
/// escaped bytes are stored raw.
const PAIR_MAX_ESCAPES: usize = 64;
/// The window is chosen on the bytes at indices `i` with `i % WINDOW_STRIDE < WINDOW_RUN`.
const WINDOW_STRIDE: usize = 4096;
/// See [`WINDOW_STRIDE`].
const WINDOW_RUN: usize = 64;

/// Writes `plane` pair coded when that is estimated to cost at most the fraction
/// `pairing.slack` more than one symbol per byte (and beats raw); returns whether it did
/// (nothing is written otherwise).
pub(super) fn code(plane: &[u8], pairing: Pairing, w: &mut Writer) -> bool {
    let n = plane.len();
    if !long_enough(n) {
        return false;
    }
    let (sample, _) = sampled_counts(plane, WINDOW_STRIDE, WINDOW_RUN);
    let (lo, _) = pairs::window(&sample);
    pairs::with_symbols(pairs::symbol_count(n), |symbols| {
        let mut escapes = Vec::new();
        pairs::pair_up(plane, lo, symbols, &mut escapes);
        code_pairs(n, lo, symbols, &escapes, pairing, w)
    })
}

/// Whether a plane of `n` bytes is long enough to try pairs on.
pub(super) fn long_enough(n: usize) -> bool {
    n >= PAIR_MIN_BYTES
}

/// [`code`] of plane 0 of `raw`'s 2- or 4-byte words, paired as it is cut out of the
/// words (`cut` hands them over block by block with their first word, as
/// [`super::in_blocks`] does) instead of from a plane cut out first; the same bytes.
/// Returns whether it wrote the plane.
pub(super) fn code_words(
    raw: &[u8],
    (width, float): (usize, bool),
    pairing: Pairing,
    cut: impl FnOnce(&mut dyn FnMut(&[u8], usize)),
    w: &mut Writer,
) -> bool {
    let n = raw.len() / width;
    let lo = window_of_words(raw, (width, float));
    pairs::with_symbols(pairs::symbol_count(n), |symbols| {
        let mut escapes = Vec::new();
        cut(&mut |block, at| {
            // Blocks start on an even word: on a symbol.
            let m = block.len() / width;
            let syms = &mut symbols[at / 2..(at + m).div_ceil(2)];
            pairs::pair_up_words(block, (width, float), lo, syms, &mut escapes);
        });
        code_pairs(n, lo, symbols, &escapes, pairing, w)
    })
}

/// The pair window of plane 0 of `raw`'s words, from the same sample [`code`] takes of
/// the plane.
fn window_of_words(raw: &[u8], (width, float): (usize, bool)) -> u8 {
    let n = raw.len() / width;
    let mut sample = Vec::with_capacity(n.div_ceil(WINDOW_STRIDE) * WINDOW_RUN);
    for start in (0..n).step_by(WINDOW_STRIDE) {
        let run = &raw[start * width..(start + WINDOW_RUN).min(n) * width];
        let at = sample.len();
        sample.resize(at + run.len() / width, 0);
        crate::fields::extract(run, width, float, 0, &mut sample[at..]);
    }
    pairs::window(&histogram(&sample)).0
}

/// Writes a plane of `n` bytes paired up into `symbols` (window `lo`, `escapes`) when
/// that pays, as [`code`] decides; returns whether it did.
fn code_pairs(
    n: usize,
    lo: u8,
    symbols: &[u8],
    escapes: &[u8],
    pairing: Pairing,
    w: &mut Writer,
) -> bool {
    if escapes.len() * PAIR_MAX_ESCAPES > n {
        return false;
    }
    // Wide tables give rare pairs the precision their exact counts are worth.
    let counted = if pairing.bits > crate::entropy::SCALE_BITS {
        (histogram(symbols), 1.0)
    } else {
        model_counts(symbols)
    };
    let bytes = byte_counts(&counted, lo, escapes);
    let Some(table) = FreqTable::normalize(&bytes) else {
        return false;
    };
    let single = estimate(&table, &bytes, 1.0);
    let bound = single * (1.0 + pairing.slack);
    pays(single, n) && write(lo, symbols, escapes, &counted, (bound, pairing.bits), w)
}

/// Estimated counts of the plane's byte values, from the pair symbols' model counts and
/// scale (`counted`: each symbol counts for both of its ranks' values) and the escaped
/// bytes (counted exactly). Every value seen counts at least one.
fn byte_counts(counted: &([u32; 256], f64), lo: u8, escapes: &[u8]) -> [u32; 256] {
    let (symbols, scale) = counted;
    let mut scaled = [0f64; 256];
    for (s, &c) in symbols.iter().enumerate().filter(|(_, &c)| c > 0) {
        for rank in [s >> 4, s & 15] {
            if rank < pairs::WINDOW {
                scaled[lo as usize + rank] += c as f64 * scale;
            }
        }
    }
    let mut counts = [0u32; 256];
    for (c, &x) in counts.iter_mut().zip(&scaled) {
        *c = if x > 0.0 {
            (x.round() as u32).max(1)
        } else {
            0
        };
    }
    for &b in escapes {
        counts[b as usize] += 1;
    }
    counts
}

/// Writes a plane's pair `symbols` (window `lo`, `escapes`, model counts and scale
/// `counted`) under a table of total `2^bits` (`2^12` when a pair would get more than a
/// decode entry holds) when the estimate is at most `bound` bytes; returns whether it did
/// (nothing is written otherwise).
fn write(
    lo: u8,
    symbols: &[u8],
    escapes: &[u8],
    counted: &([u32; 256], f64),
    (bound, bits): (f64, u32),
    w: &mut Writer,
) -> bool {
    let (counts, scale) = counted;
    let Some(table) =
        FreqTable::normalize_scaled(counts, bits).or_else(|| FreqTable::normalize(counts))
    else {
        return false;
    };
    let bits = table.scale_bits();
    let header = if bits == crate::entropy::SCALE_BITS {
        5
    } else {
        6
    };
    if estimate(&table, counts, *scale) + (header + escapes.len()) as f64 > bound {
        return false;
    }
    if bits == crate::entropy::SCALE_BITS {
        w.u8(MODE_PAIRS);
        w.u8(lo);
    } else {
        w.u8(MODE_PAIRS_WIDE);
        w.u8(lo);
        w.u8(bits as u8);
    }
    w.u32(escapes.len() as u32);
    w.bytes(escapes);
    table.write(w);
    rans::encode(symbols, &table, w);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::freq::histogram;

    #[test]
    fn byte_counts_of_exact_pair_counts_are_the_plane_histogram() {
        let plane: Vec<u8> = (0..5000u32)
            .map(|i| match i % 97 {
                0 => 3,
                k => 100 + (k * k % 7) as u8,
            })
            .collect();
        let mut symbols = vec![0; pairs::symbol_count(plane.len())];
        let mut escapes = Vec::new();
        pairs::pair_up(&plane, 100, &mut symbols, &mut escapes);
        let counted = (histogram(&symbols), 1.0);
        assert_eq!(byte_counts(&counted, 100, &escapes), histogram(&plane));
    }

    #[test]
    fn short_or_scattered_planes_are_left_alone() {
        let mut w = Writer::default();
        for bits in [12, 13] {
            let loose = Pairing { slack: 0.5, bits };
            assert!(!code(&[7u8; 4000], loose, &mut w));
            let scattered: Vec<u8> = (0..20_000u32).map(|i| (i * 37 % 251) as u8).collect();
            assert!(!code(&scattered, loose, &mut w));
        }
        assert_eq!(w.len(), 0);
    }
}

//! Encoding a chunk: one pass computes every word's context and residual token (packed
//! in one u16 code), their per-context histogram and the raw bits; the estimates decide
//! between residual and standalone coding; the context rANS coder codes the tokens.

use super::contexts::{context_of, top};
use super::side;
use super::word::{by_width, load, residual, token};
use super::{CONTEXTS, TABLE_BITS};
use crate::entropy::bits::BitWriter;
use crate::entropy::freq::FreqTable;
use crate::hash::Hasher128;
use crate::pool::Buffer;
use crate::scratch::{self, Scratch};

/// Bits of the residual token in a code: `code = context << SYM_BITS | token`.
pub(super) const SYM_BITS: u32 = 8;
const SYMS: usize = 1 << SYM_BITS;

/// One chunk's residuals against its reference, analysed.
pub(super) struct Analysis {
    /// `context << SYM_BITS | token` of every word.
    pub codes: Scratch<u16>,
    /// Count of each code.
    pub hist: Vec<u32>,
    /// The raw bits of each residual's token, packed (when asked for).
    pub bits: Option<BitWriter<Buffer>>,
    /// Total raw bits.
    pub raw_bits: u64,
    /// [`crate::hash::h128`] of the raw words (when asked for).
    pub raw_hash: Option<u128>,
    /// [`crate::hash::h128`] of the reference words (when asked for).
    pub ref_hash: Option<u128>,
    /// The largest top byte of the reference's float words ([`super::contexts::top`]) when
    /// the contexts are exponents (0 otherwise): the true base exponent, which the chunk
    /// records when it codes under a sampled one below it.
    pub most: u8,
}

/// A side tensor's words (as many as the raw words) and what maps each word pair to its
/// context ([`side`]): the dtype's `log_shift` and the chunk's `(base, shift)`.
#[derive(Clone, Copy)]
pub(super) struct Side<'a> {
    pub words: &'a [u8],
    pub sh: u32,
    pub at: (i16, u8),
}

/// Bytes of raw words hashed at a time: blocks the analysis has just read.
const HASH_BLOCK: usize = 4 * crate::codec::HASH_BLOCK_WORDS;

/// The hashes of a chunk's raw and reference words, fed by the analysis pass block by
/// block while each block is in cache, instead of passes of their own over the chunk.
#[derive(Default)]
pub(super) struct BlockHashes {
    raw: Hasher128,
    reference: Hasher128,
    upto: usize,
}

impl BlockHashes {
    /// Feeds the bytes of `raw` and `reference` not fed yet, up to `end`, once they make
    /// a whole block (a call per group of words costs a comparison until then).
    #[inline(always)]
    pub(super) fn feed_blocks(&mut self, raw: &[u8], reference: &[u8], end: usize) {
        if end - self.upto >= HASH_BLOCK {
            self.raw.update(&raw[self.upto..end]);
            self.reference.update(&reference[self.upto..end]);
            self.upto = end;
        }
    }

    /// The hashes of all of `raw` and `reference` (the rest fed now).
    fn finish(mut self, raw: &[u8], reference: &[u8]) -> (u128, u128) {
        self.raw.update(&raw[self.upto..]);
        self.reference.update(&reference[self.upto..]);
        (self.raw.digest(), self.reference.digest())
    }
}

impl Analysis {
    /// The histogram of context `c` as byte counts.
    pub fn counts(&self, c: usize) -> [u32; 256] {
        let mut h = [0u32; 256];
        h.copy_from_slice(&self.hist[c * SYMS..(c + 1) * SYMS]);
        h
    }

    /// Estimated coded size in bytes of a residual chunk (payload, tables, raw bits) of
    /// `scale` times the analysed words, and the table of each context (`None` for unused
    /// or constant contexts).
    pub fn estimate(&self, scale: f64) -> (f64, Vec<Option<FreqTable>>) {
        let hists: Vec<[u32; 256]> = (0..CONTEXTS).map(|c| self.counts(c)).collect();
        let tables: Vec<Option<FreqTable>> = hists
            .iter()
            .map(|h| FreqTable::normalize_scaled(h, TABLE_BITS))
            .collect();
        let (payload, fixed) = tables
            .iter()
            .zip(&hists)
            .map(|(t, h)| t.as_ref().map_or((0.0, 2.0), |t| (t.coded_bytes(h), 40.0)))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (
            (self.raw_bits as f64 / 8.0 + payload) * scale + fixed,
            tables,
        )
    }
}

/// A buffer for the packed raw bits of `len` bytes of words: room for all of them (a
/// token keeps at least one bit of each word) and for the bit writer's runs past the
/// end, so it does not grow.
fn bits_buffer(len: usize) -> Buffer {
    Buffer::new(len + 4096).expect("memory for a chunk's raw bits")
}

/// Analyses the words of `raw` against `reference` (same length) with tokens of `tb`
/// top bits; packs the raw bits when `pack` is set and hashes `raw` and `reference` when
/// `hash` is. Contexts come from the reference's exponents under `e_max` (a reference
/// word above it takes context 0), or from `side` when given.
pub(super) fn analyze(
    raw: &[u8],
    reference: &[u8],
    (width, float): (usize, bool),
    (e_max, off, tb): (u8, u64, u32),
    (pack, hash): (bool, bool),
    side: Option<Side>,
) -> Analysis {
    let n = raw.len() / width;
    let mut a = Analysis {
        codes: scratch::words_dirty(n),
        hist: vec![0u32; CONTEXTS * SYMS],
        bits: pack.then(|| BitWriter::reusing(bits_buffer(raw.len()))),
        raw_bits: 0,
        raw_hash: None,
        ref_hash: None,
        most: 0,
    };
    let mut rh = hash.then(BlockHashes::default);
    let done = if width == 4 {
        let params = (float, e_max, off as u32, tb);
        simd_analyze32(raw, reference, side, params, &mut a, rh.as_mut())
    } else {
        0
    };
    let at = done * width;
    by_width!(
        width,
        analyze_w(
            &raw[at..],
            &reference[at..],
            (float, e_max, off, tb),
            (done, side),
            &mut a
        )
    );
    if let Some((raw_hash, ref_hash)) = rh.map(|h| h.finish(raw, reference)) {
        (a.raw_hash, a.ref_hash) = (Some(raw_hash), Some(ref_hash));
    }
    a
}

/// The scalar analysis of the words from `first` on (`raw` and `reference` start there;
/// the side words at word 0).
fn analyze_w<const W: usize>(
    raw: &[u8],
    reference: &[u8],
    (float, e_max, off, tb): (bool, u8, u64, u32),
    (first, side): (usize, Option<Side>),
    a: &mut Analysis,
) {
    let bits = 8 * W as u32;
    let words = raw.chunks_exact(W).zip(reference.chunks_exact(W));
    for (i, ((x, r), code)) in words.zip(a.codes[first..].iter_mut()).enumerate() {
        let z = residual(load::<W>(x), load::<W>(r), off, bits, float);
        let (t, low, k) = token(z, tb);
        let c = match side {
            Some(sd) => {
                let k = side::key::<W>(&sd.words[(first + i) * W..], r, sd.sh);
                side::context(k, sd.at.0, sd.at.1)
            }
            None if float => {
                a.most = a.most.max(top::<W>(r));
                context_of::<W>(r, e_max)
            }
            None => 0,
        };
        *code = (c as u16) << SYM_BITS | t as u16;
        a.hist[*code as usize] += 1;
        a.raw_bits += k as u64;
        if let Some(bw) = a.bits.as_mut() {
            bw.put(low, k);
        }
    }
}

/// Analyses a prefix of 32-bit words with AVX2 when the CPU has it (side contexts: of
/// 32-bit floats); returns the words done.
fn simd_analyze32(
    raw: &[u8],
    reference: &[u8],
    side: Option<Side>,
    params: (bool, u8, u32, u32),
    a: &mut Analysis,
    hash: Option<&mut BlockHashes>,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::entropy::{avx2_bmi2_popcnt, avx512_cd};
        type Kernel = unsafe fn(
            &[u8],
            &[u8],
            Option<(&[u8], (i16, u8))>,
            (bool, u8, u32, u32),
            &mut [u16],
            &mut [u32],
            (Option<&mut BitWriter<Buffer>>, Option<&mut BlockHashes>),
        ) -> (u64, u8);
        let pick: Option<(usize, Kernel)> = if avx2_bmi2_popcnt() && avx512_cd() && WIDE.get() {
            Some((16, super::simd::analyze32_512))
        } else if avx2_bmi2_popcnt() {
            Some((8, super::simd::analyze32))
        } else {
            None
        };
        let pick = pick.filter(|_| side.is_none_or(|sd| sd.sh == 21));
        if let Some((lanes, kernel)) = pick {
            let n = (raw.len().min(reference.len()) / 4).min(a.codes.len());
            let n = side.map_or(n, |s| n.min(s.words.len() / 4)) / lanes * lanes;
            // SAFETY: the CPU has the kernel's features (picked above); it reads `4 * n`
            // bytes of `raw`, `reference` and the side words, and writes `n` codes.
            let (raw_bits, most) = unsafe {
                kernel(
                    &raw[..4 * n],
                    &reference[..4 * n],
                    side.map(|s| (&s.words[..4 * n], s.at)),
                    params,
                    &mut a.codes[..n],
                    &mut a.hist,
                    (a.bits.as_mut(), hash),
                )
            };
            a.raw_bits += raw_bits;
            a.most = a.most.max(most);
            return n;
        }
    }
    let _ = (raw, reference, side, params, a, hash);
    0
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Whether the AVX-512 analysis may run (tests turn it off to check the AVX2 one).
    static WIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The analysis hashes chunks of several hash blocks and a partial one, with every
    /// kernel, into [`crate::hash::h128`] of the raw bytes.
    #[test]
    fn analysis_hashes_the_raw_words() {
        let n = 3 * crate::codec::HASH_BLOCK_WORDS + 1234;
        let reference: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let raw: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 1.001).to_le_bytes())
            .collect();
        for wide in [true, false] {
            #[cfg(target_arch = "x86_64")]
            WIDE.set(wide);
            let a = analyze(&raw, &reference, (4, true), (150, 0, 1), (true, true), None);
            #[cfg(target_arch = "x86_64")]
            WIDE.set(true);
            assert_eq!(a.raw_hash, Some(crate::hash::h128(&raw)), "wide {wide}");
            assert_eq!(
                a.ref_hash,
                Some(crate::hash::h128(&reference)),
                "wide {wide}"
            );
        }
    }

    /// Chunks of over `u16::MAX` words, every word with the same code (the fastest any
    /// count grows, over what a u16 count holds): the counts of the scalar loop, with
    /// every kernel.
    #[test]
    fn long_runs_of_one_code_are_counted() {
        let n = 4 * u16::MAX as usize + 1000;
        let reference: Vec<u8> = (0..n).flat_map(|_| 1.5f32.to_le_bytes()).collect();
        let raw: Vec<u8> = (0..n).flat_map(|_| 1.25f32.to_le_bytes()).collect();
        let params = (127, 0, 1);
        let mut b = Analysis {
            codes: scratch::words(n),
            hist: vec![0u32; CONTEXTS * SYMS],
            bits: None,
            raw_bits: 0,
            raw_hash: None,
            ref_hash: None,
            most: 0,
        };
        analyze_w::<4>(&raw, &reference, (true, 127, 0, 1), (0, None), &mut b);
        assert_eq!(b.hist.iter().max(), Some(&(n as u32)));
        for wide in [true, false] {
            #[cfg(target_arch = "x86_64")]
            WIDE.set(wide);
            let a = analyze(&raw, &reference, (4, true), params, (false, false), None);
            #[cfg(target_arch = "x86_64")]
            WIDE.set(true);
            assert!(a.hist == b.hist, "wide {wide}");
        }
    }

    /// The packed bytes of a bit writer.
    fn packed(bits: BitWriter<Buffer>) -> Vec<u8> {
        let (buf, len) = bits.into_packed();
        buf.as_slice()[..len].to_vec()
    }

    proptest! {
        /// The AVX2 prefix and the scalar loop give the same codes, counts and raw bits,
        /// with contexts from the reference's exponents or from side words.
        #[test]
        fn simd_analysis_matches_scalar(words in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), 0u32..32), 0..300),
                                        off in any::<u32>(), float in any::<bool>(), e in any::<u8>(),
                                        tb in 0u32..3, given in any::<bool>(), near in any::<bool>(),
                                        base in -3000i16..3000, shift in 0u8..=side::MAX_SHIFT) {
            // Unrelated words, or words near their reference (residuals of every length,
            // many of them short: several to a packed 64-bit word).
            let (raw, off): (Vec<u8>, u32) = if near {
                let r = words.iter().map(|w| w.1.wrapping_add(w.0 >> w.3));
                (r.flat_map(u32::to_le_bytes).collect(), off % 4)
            } else {
                (words.iter().flat_map(|w| w.0.to_le_bytes()).collect(), off)
            };
            let reference: Vec<u8> = words.iter().flat_map(|w| w.1.to_le_bytes()).collect();
            let side_words: Vec<u8> = words.iter().flat_map(|w| w.2.to_le_bytes()).collect();
            let side = given.then_some(Side { words: &side_words, sh: 21, at: (base, shift) });
            // Any base, below the reference's largest exponent too (a sampled base).
            let e_max = e * float as u8;
            let mut b = Analysis {
                codes: scratch::words(words.len()),
                hist: vec![0u32; CONTEXTS * SYMS],
                bits: Some(BitWriter::reusing(bits_buffer(16))),
                raw_bits: 0,
                raw_hash: None,
                ref_hash: None,
                most: 0,
            };
            analyze_w::<4>(&raw, &reference, (float, e_max, off as u64, tb), (0, side), &mut b);
            let scalar_bits = packed(b.bits.unwrap());
            // The widest kernel the CPU has, then the AVX2 one.
            for wide in [true, false] {
                #[cfg(target_arch = "x86_64")]
                WIDE.set(wide);
                let params = (e_max, off as u64, tb);
                let a = analyze(&raw, &reference, (4, float), params, (true, true), side);
                #[cfg(target_arch = "x86_64")]
                WIDE.set(true);
                prop_assert_eq!(&a.codes[..], &b.codes[..]);
                prop_assert_eq!(&a.hist, &b.hist);
                prop_assert_eq!(a.raw_bits, b.raw_bits);
                prop_assert_eq!(packed(a.bits.unwrap()), scalar_bits.clone());
                prop_assert_eq!(a.raw_hash, Some(crate::hash::h128(&raw)));
                prop_assert_eq!(a.ref_hash, Some(crate::hash::h128(&reference)));
                prop_assert_eq!(a.most, b.most);
            }
        }
    }
}

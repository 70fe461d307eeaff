//! The chunk codec: one chunk of a tensor's words is split into byte planes
//! ([`crate::fields`]) and each plane is stored the cheapest of four ways.
//!
//! Chunk layout, plane after plane (plane 0 = exponent byte first):
//! `u8 mode` then, for mode 0 (raw) the plane's bytes, for mode 1 (constant) the one byte
//! value, for mode 2 (rANS) a [`FreqTable`] and a [`rans`] stream, for mode 3 (pairs,
//! [`pairs`]) `u8 lo | u32 k | k escaped bytes |` a table and a stream of pair symbols,
//! for mode 4 (pairs, wide table) `u8 lo | u8 bits | u32 k | k escaped bytes |` a table
//! of total `2^bits` and a stream of pair symbols.
//!
//! Encoding is two steps ([`PlaneChunk`]): code the planes that pay for it, then, when the
//! file is written, cut the raw planes out of the input straight into the file.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::entropy::freq::{count_into, model_counts, sum_sub, FreqTable};
use crate::entropy::{pairs, rans, LANES};
use crate::error::{Error, Result};
use crate::fields::{self, MAX_PLANES};
use crate::hash::Hasher128;
use crate::pool::Held;

mod decode;
mod paired;

pub(crate) use decode::decode_plane;
pub use decode::{decode_chunk, decode_chunk_hashed, decode_two_hashed};

/// A plane is entropy coded only when that saves at least this fraction of its bytes:
/// near-uniform mantissa planes stay raw, which keeps decode fast at no real cost.
pub const MIN_SAVING: f64 = 0.01;

const MODE_RAW: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_RANS: u8 = 2;
const MODE_PAIRS: u8 = 3;
const MODE_PAIRS_WIDE: u8 = 4;

/// When a plane is pair coded ([`pairs`]): at most `slack` more than one symbol per byte,
/// with a table of total `2^bits` (above [`crate::entropy::SCALE_BITS`]: counted exactly
/// and written as mode 4).
#[derive(Clone, Copy)]
pub(crate) struct Pairing {
    slack: f64,
    bits: u32,
}

/// Planes of 2-byte words (bf16, fp16): there the exponent plane's rANS steps are most of
/// the work, and halving them speeds decode up by about 40% for about 0.5% of the plane's
/// size (0.1% of the chunk).
const PAIRS_2BYTE: Pairing = Pairing {
    slack: 0.015,
    bits: 12,
};

/// Planes of 4-byte words (fp32): halving the exponent plane's steps speeds decode up by
/// about 20%. A pair table at `2^12` costs about 0.6% of the plane (its rare pairs take
/// more probability than they are worth); counted exactly at `2^13`, about 0.3%, which
/// leaves the chunk within 0.03% of one symbol per byte.
const PAIRS_4BYTE: Pairing = Pairing {
    slack: 0.006,
    bits: 13,
};

/// Fixed bytes of a rANS plane besides the payload: mode, bitmap, lane counts and states.
const RANS_OVERHEAD: usize = 1 + 32 + 8 * LANES;

/// Planes of chunks with at least this many words are first judged on a sample.
const SAMPLE_MIN_WORDS: usize = 1 << 17;
/// The sample: this many runs of [`SAMPLE_RUN`] consecutive words, evenly spread.
const SAMPLE_RUNS: usize = 64;
const SAMPLE_RUN: usize = 256;

thread_local! {
    /// Per-thread plane scratch, reused across chunks to avoid page-faulting fresh memory.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffer the coded planes are written into before they are kept (as a
    /// [`Held`] copy of exactly their size).
    static CODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0);
        }
        f(&mut s[..len])
    })
}

/// Hands `raw` (words of `width` bytes) to `cut(block, first word of the block)`: whole,
/// or, when there is a `hasher`, in blocks of [`HASH_BLOCK_WORDS`] each hashed first, so
/// that `cut` reads it from L1 instead of memory; the next block is prefetched meanwhile
/// (MiniLM bf16 encode after a cache-clearing write: 24.1-24.5 -> 22.4-23.2 ms).
fn in_blocks(
    raw: &[u8],
    width: usize,
    hasher: Option<&mut Hasher128>,
    mut cut: impl FnMut(&[u8], usize),
) {
    match hasher {
        None => cut(raw, 0),
        Some(h) => {
            let size = HASH_BLOCK_WORDS * width;
            for (k, block) in raw.chunks(size).enumerate() {
                // The next block is asked for while this one is hashed and cut.
                let next = (k + 1) * size;
                crate::memory::prefetch(&raw[next.min(raw.len())..(next + size).min(raw.len())]);
                h.update(block);
                cut(block, k * HASH_BLOCK_WORDS);
            }
        }
    }
}

/// Whether the planes of `width`-byte words are cut out one at a time
/// ([`fields::extract`]) rather than split all at once: for the SIMD widths, extracting
/// only the planes a chunk needs, or even all of them, beats the split (AVX-512, 4-byte
/// words from L1: 37 GB/s of input for two planes, 18 for four, against 15 for the split).
fn plane_by_plane(width: usize) -> bool {
    matches!(width, 2 | 4)
}

/// Cuts `scratch` into `width` planes of `n` bytes each.
fn plane_slices(scratch: &mut [u8], n: usize, width: usize) -> Vec<&mut [u8]> {
    let mut planes = Vec::with_capacity(width);
    let mut rest = scratch;
    for _ in 0..width {
        let (plane, tail) = rest.split_at_mut(n);
        planes.push(plane);
        rest = tail;
    }
    planes
}

/// A chunk with its coded planes done and its raw planes left in the input: they are cut
/// out only when the chunk is written, straight into the output, so the near-incompressible
/// mantissa bytes are copied once.
pub struct PlaneChunk {
    width: usize,
    float: bool,
    n: usize,
    /// Mode byte and payload of each coded plane, back to back.
    coded: Held,
    /// Per plane, its span in `coded`; `None` for a raw plane.
    spans: [Option<(usize, usize)>; MAX_PLANES],
}

impl PlaneChunk {
    /// Codes the planes of `raw` (whole `dtype` words) that pay for it.
    pub fn encode(raw: &[u8], dtype: DType) -> PlaneChunk {
        let (width, float) = (dtype.word_size(), dtype.is_float());
        Self::encode_planes(raw, dtype, &worth_coding(raw, width, float), None)
    }

    /// [`PlaneChunk::encode`], also returning [`crate::hash::h128`] of `raw`, computed
    /// block by block as the planes are cut out (each block is read from memory once).
    /// `ahead` (the next chunk's input, or empty) is brought into the cache meanwhile
    /// ([`rans::prefetching`]): a hint, the result does not depend on it.
    pub fn encode_hashed(raw: &[u8], dtype: DType, ahead: &[u8]) -> (PlaneChunk, u128) {
        let (width, float) = (dtype.word_size(), dtype.is_float());
        let mut h = Hasher128::default();
        let chunk = rans::prefetching(ahead, || {
            Self::encode_planes(raw, dtype, &worth_coding(raw, width, float), Some(&mut h))
        });
        (chunk, h.digest())
    }

    /// Codes the `candidates` planes of `raw` one by one, each only if it pays; feeds
    /// `raw` to `hasher` on the way.
    fn encode_planes(
        raw: &[u8],
        dtype: DType,
        candidates: &[bool; MAX_PLANES],
        hasher: Option<&mut Hasher128>,
    ) -> PlaneChunk {
        let (width, float) = (dtype.word_size(), dtype.is_float());
        let n = raw.len() / width;
        let mut w = Writer::reusing(CODED.with(|c| c.take()));
        let mut spans = [None; MAX_PLANES];
        let pairing = match width {
            2 => Some(PAIRS_2BYTE),
            4 => Some(PAIRS_4BYTE),
            _ => None,
        };
        let mut code = |p: usize, plane: &[u8], pairing: Option<Pairing>, w: &mut Writer| {
            let start = w.len();
            if code_plane(plane, pairing, w) {
                spans[p] = Some((start, w.len()));
            }
        };
        let count = candidates.iter().take(width).filter(|&&c| c).count();
        if count > 1 {
            with_scratch(raw.len(), |scratch| {
                let mut planes = plane_slices(scratch, n, width);
                in_blocks(raw, width, hasher, |block, at| {
                    let m = block.len() / width;
                    if plane_by_plane(width) {
                        for p in (0..width).filter(|&p| candidates[p]) {
                            fields::extract(block, width, float, p, &mut planes[p][at..at + m]);
                        }
                        return;
                    }
                    let mut part: Vec<&mut [u8]> =
                        planes.iter_mut().map(|p| &mut p[at..at + m]).collect();
                    fields::split(block, width, float, &mut part);
                });
                for p in (0..width).filter(|&p| candidates[p]) {
                    code(p, planes[p], pairing, &mut w);
                }
            });
        } else if let Some(pairing) = pairing.filter(|_| candidates[0] && paired::long_enough(n)) {
            // The exponent plane alone (bf16, fp16): paired as it is cut out.
            let start = w.len();
            let cut = |pair: &mut dyn FnMut(&[u8], usize)| in_blocks(raw, width, hasher, pair);
            if paired::code_words(raw, (width, float), pairing, cut, &mut w) {
                spans[0] = Some((start, w.len()));
            } else {
                with_scratch(n, |plane| {
                    fields::extract(raw, width, float, 0, plane);
                    code(0, plane, None, &mut w);
                });
            }
        } else if let Some(p) = (0..width).find(|&p| candidates[p]) {
            with_scratch(n, |plane| {
                in_blocks(raw, width, hasher, |block, at| {
                    let part = &mut plane[at..at + block.len() / width];
                    fields::extract(block, width, float, p, part);
                });
                code(p, plane, pairing, &mut w);
            });
        } else if let Some(h) = hasher {
            h.update(raw);
        }
        Self::keep(w, spans, dtype, n)
    }

    /// The chunk of `n` words of `dtype` whose coded planes were written to `w` (taken from
    /// the per-thread buffer, which gets it back) at `spans`.
    fn keep(
        w: Writer,
        spans: [Option<(usize, usize)>; MAX_PLANES],
        dtype: DType,
        n: usize,
    ) -> PlaneChunk {
        let coded = Held::copy_of(w.as_slice());
        CODED.with(|c| c.replace(w.into_inner()));
        PlaneChunk {
            width: dtype.word_size(),
            float: dtype.is_float(),
            n,
            coded,
            spans,
        }
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        (0..self.width)
            .map(|p| self.spans[p].map_or(1 + self.n, |(a, b)| b - a))
            .sum()
    }

    /// Whether the chunk encodes to nothing (never: every plane has its mode byte).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the encoded chunk into `out` (exactly [`PlaneChunk::len`] bytes), cutting the
    /// raw planes out of `raw`, the same input given to [`PlaneChunk::encode`].
    pub fn write(&self, raw: &[u8], out: &mut [MaybeUninit<u8>]) {
        assert_eq!(out.len(), self.len(), "chunk output of the wrong size");
        assert_eq!(
            raw.len() / self.width,
            self.n,
            "chunk input of the wrong size"
        );
        let mut rest = out;
        let mut raw_planes: Vec<Option<&mut [MaybeUninit<u8>]>> = Vec::with_capacity(self.width);
        for p in 0..self.width {
            match self.spans[p] {
                Some((a, b)) => {
                    let (dst, tail) = rest.split_at_mut(b - a);
                    copy_init(dst, &self.coded.as_slice()[a..b]);
                    raw_planes.push(None);
                    rest = tail;
                }
                None => {
                    let (head, tail) = rest.split_at_mut(1 + self.n);
                    head[0] = MaybeUninit::new(MODE_RAW);
                    raw_planes.push(Some(&mut head[1..]));
                    rest = tail;
                }
            }
        }
        let raw_count = raw_planes.iter().filter(|d| d.is_some()).count();
        if raw_count == 1 || plane_by_plane(self.width) {
            // Each raw plane alone (bf16's mantissa byte, fp32's low two), no scratch.
            for (p, dst) in raw_planes.into_iter().enumerate() {
                if let Some(dst) = dst {
                    fields::extract_uninit(raw, self.width, self.float, p, dst);
                }
            }
            return;
        }
        if raw_count == 0 {
            return;
        }
        // 8-byte words: coded planes are cut out again into scratch and dropped.
        with_scratch(self.n * self.width, |scratch| {
            let mut spare = plane_slices(scratch, self.n, self.width).into_iter();
            let mut planes: Vec<&mut [MaybeUninit<u8>]> = raw_planes
                .into_iter()
                .map(|d| {
                    let s = spare.next().expect("one scratch plane per plane");
                    d.unwrap_or_else(|| fields::as_uninit(s))
                })
                .collect();
            fields::split_uninit(raw, self.width, self.float, &mut planes);
        });
    }

    /// The encoded chunk as one buffer.
    pub fn to_vec(&self, raw: &[u8]) -> Vec<u8> {
        let len = self.len();
        let mut v = Vec::with_capacity(len);
        self.write(raw, &mut v.spare_capacity_mut()[..len]);
        // SAFETY: `write` initialized all `len` bytes.
        unsafe { v.set_len(len) };
        v
    }
}

/// Copies `src` into the same-sized `dst`, initializing it.
pub fn copy_init(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: equal lengths; `u8` and `MaybeUninit<u8>` share their layout; a `&mut` and a
    // `&` never overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) }
}

/// Estimated size of a rANS plane: its payload plus the fixed overhead and about two table
/// bytes per present symbol.
fn coded_estimate(payload: f64, present: usize) -> f64 {
    payload + (RANS_OVERHEAD + 2 * present) as f64
}

/// Which planes may pay for coding. Large chunks are judged on a sample first: a plane
/// whose sample is all but uniform (its estimated saving under half of [`MIN_SAVING`]) is
/// stored raw without a full histogram. The plug-in entropy of a sample underestimates the
/// true entropy, so the test errs towards coding; the full decision follows for the rest.
fn worth_coding(raw: &[u8], width: usize, float: bool) -> [bool; MAX_PLANES] {
    let mut out = [true; MAX_PLANES];
    let n = raw.len() / width;
    if n < SAMPLE_MIN_WORDS {
        return out;
    }
    let mut subs = vec![[[0u32; 256]; 4]; width];
    let mut buf = [0u8; SAMPLE_RUN * MAX_PLANES];
    let stride = n / SAMPLE_RUNS;
    // The runs are usually the chunk's first bytes read: ask for all of them at once.
    for k in 0..SAMPLE_RUNS {
        let at = k * stride * width;
        crate::memory::prefetch(&raw[at..at + SAMPLE_RUN * width]);
    }
    for k in 0..SAMPLE_RUNS {
        let at = k * stride * width;
        let run = &raw[at..at + SAMPLE_RUN * width];
        let mut planes = plane_slices(&mut buf[..SAMPLE_RUN * width], SAMPLE_RUN, width);
        fields::split(run, width, float, &mut planes);
        for (h, plane) in subs.iter_mut().zip(&planes) {
            count_into(h, plane);
        }
    }
    let counts: Vec<[u32; 256]> = subs.iter().map(sum_sub).collect();
    let m = (SAMPLE_RUNS * SAMPLE_RUN) as f64;
    for (o, c) in out.iter_mut().zip(&counts) {
        let bits: f64 = c
            .iter()
            .filter(|&&v| v > 0)
            .map(|&v| -(v as f64) * (v as f64 / m).log2())
            .sum();
        let present = c.iter().filter(|&&v| v > 0).count();
        let est = coded_estimate(n as f64 * bits / m / 8.0, present);
        *o = est < n as f64 * (1.0 - MIN_SAVING / 2.0);
    }
    out
}

/// Compresses one chunk of whole `dtype` elements.
pub fn encode_chunk(raw: &[u8], dtype: DType) -> Vec<u8> {
    PlaneChunk::encode(raw, dtype).to_vec(raw)
}

/// Stores one plane of bytes raw, as a constant, or rANS coded, whichever is smallest.
pub(crate) fn encode_plane(plane: &[u8], w: &mut Writer) {
    if !code_plane(plane, None, w) {
        w.u8(MODE_RAW);
        w.bytes(plane);
    }
}

/// Writes `plane` as a constant or rANS coded (pair coded when that costs at most the
/// `pairing` allows) when that is smaller than raw; returns whether it did
/// (nothing is written otherwise).
fn code_plane(plane: &[u8], pairing: Option<Pairing>, w: &mut Writer) -> bool {
    if pairing.is_some_and(|p| paired::code(plane, p, w)) {
        return true;
    }
    let (counts, scale) = model_counts(plane);
    let Some(table) = FreqTable::normalize(&counts) else {
        w.u8(MODE_CONST);
        w.u8(plane.first().copied().unwrap_or(0));
        return true;
    };
    let est = estimate(&table, &counts, scale);
    if !pays(est, plane.len()) {
        return false;
    }
    w.u8(MODE_RANS);
    table.write(w);
    rans::encode(plane, &table, w);
    true
}

/// Estimated size of a plane coded under `table`, from its model counts and their scale.
fn estimate(table: &FreqTable, counts: &[u32; 256], scale: f64) -> f64 {
    let present = counts.iter().filter(|&&c| c > 0).count();
    coded_estimate(table.coded_bytes(counts) * scale, present)
}

/// Whether coding a plane of `n` bytes with estimated size `est` beats storing it raw.
fn pays(est: f64, n: usize) -> bool {
    est < n as f64 * (1.0 - MIN_SAVING)
}

/// Words per block hashed on the way in [`decode_chunk_hashed`],
/// [`PlaneChunk::encode_hashed`] and the predicted decoder: a block stays in L1 between
/// being written or read and being hashed.
pub(crate) const HASH_BLOCK_WORDS: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_roundtrip(raw in proptest::collection::vec(any::<u8>(), 0..4096),
                           d in 0usize..17) {
            let dtype = DType::all()[d];
            let raw = &raw[..raw.len() / dtype.size() * dtype.size()];
            let comp = encode_chunk(raw, dtype);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, dtype, &mut out).unwrap();
            prop_assert_eq!(out, raw.to_vec());
        }

        #[test]
        fn floats_roundtrip(vals in proptest::collection::vec(
            prop_oneof![any::<f32>(), Just(f32::NAN), Just(-0.0f32), Just(f32::INFINITY),
                        Just(f32::MIN_POSITIVE / 3.0), -1e-3f32..1e-3f32], 0..3000)) {
            let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let comp = encode_chunk(&raw, DType::F32);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, DType::F32, &mut out).unwrap();
            prop_assert_eq!(out, raw);
        }
    }

    /// bf16 words of a weight-like tensor: narrow exponents, with `specials` of every
    /// `period` words replaced by ones outside any window (zeros, NaN, Inf, subnormals).
    fn bf16_weights(n: usize, period: usize, seed: u64) -> Vec<u8> {
        let specials = [0x0000u16, 0x8000, 0x7fc1, 0xff80, 0x0001, 0x7f7f, 0x4480];
        (0..n as u64)
            .map(|i| {
                let r = noise(i ^ seed);
                if i as usize % period == period - 1 {
                    specials[(r % 7) as usize]
                } else {
                    // Exponents 0x78..0x7c: |x| in [2^-7, 2^-2), any sign and mantissa.
                    ((r & 0x807f) | (0x78 + r % 5) << 7) as u16
                }
            })
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    proptest! {
        #[test]
        fn pair_coded_chunks_roundtrip(n in 2000usize..9000, period in 3usize..5000, seed in any::<u64>()) {
            let raw = bf16_weights(n, period, seed);
            roundtrips(&raw, DType::BF16);
            roundtrips(&raw[..raw.len() / 4 * 4], DType::F16);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Two chunks decoded together give what each gives alone: the same bytes and
        /// hash, or the same error when one of them is damaged (the other still decodes).
        #[test]
        fn two_chunks_decode_as_each_alone(
            na in 0usize..40_000, nb in 0usize..40_000, da in 0usize..17, db in 0usize..17,
            period in 3usize..3000, seed in any::<u64>(), damage in any::<Option<(bool, usize, u8)>>()) {
            let chunk = |n: usize, d: usize, seed: u64| {
                let dtype = DType::all()[d];
                let raw = bf16_weights(n, period, seed);
                let raw = raw[..raw.len() / dtype.size() * dtype.size()].to_vec();
                let comp = encode_chunk(&raw, dtype);
                (dtype, raw, comp)
            };
            let (ta, raw_a, mut ca) = chunk(na, da, seed);
            let (tb, raw_b, mut cb) = chunk(nb, db, !seed);
            if let Some((first, at, bits)) = damage {
                let c = if first { &mut ca } else { &mut cb };
                let at = at % c.len();
                c[at] ^= bits.max(1);
            }
            let (mut oa, mut ob) = (vec![0u8; raw_a.len()], vec![0u8; raw_b.len()]);
            let [ra, rb] = decode_two_hashed((&ca, ta, &mut oa), (&cb, tb, &mut ob));
            for (r, comp, dtype, out, raw) in [(ra, &ca, ta, &oa, &raw_a), (rb, &cb, tb, &ob, &raw_b)] {
                let mut alone = vec![0u8; raw.len()];
                match (r, decode_chunk_hashed(comp, dtype, &mut alone)) {
                    (Ok(h), Ok(h1)) => {
                        prop_assert_eq!(h, h1);
                        prop_assert_eq!(out, &alone);
                        if damage.is_none() {
                            prop_assert_eq!(out, raw);
                        }
                    }
                    (Err(e), Err(e1)) => prop_assert_eq!(e.to_string(), e1.to_string()),
                    (r, r1) => prop_assert!(false, "together {:?}, alone {:?}", r, r1),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn hashed_encode_matches_plain_encode_and_hash(
            n in 0usize..40_000, period in 3usize..3000, d in 0usize..17, seed in any::<u64>()) {
            let dtype = DType::all()[d];
            let raw = bf16_weights(n, period, seed);
            let raw = &raw[..raw.len() / dtype.size() * dtype.size()];
            let (chunk, hash) = PlaneChunk::encode_hashed(raw, dtype, raw);
            prop_assert_eq!(hash, crate::hash::h128(raw));
            prop_assert_eq!(chunk.to_vec(raw), encode_chunk(raw, dtype));
        }
    }

    #[test]
    fn bf16_exponents_are_pair_coded_within_the_slack() {
        let raw = bf16_weights(50_001, 997, 7);
        let comp = encode_chunk(&raw, DType::BF16);
        assert_eq!(comp[0], MODE_PAIRS);
        let single = {
            let mut w = Writer::default();
            let plane: Vec<u8> = raw
                .chunks(2)
                .map(|w| (u16::from_le_bytes([w[0], w[1]]).rotate_left(1) >> 8) as u8)
                .collect();
            assert!(code_plane(&plane, None, &mut w));
            w.len()
        };
        let paired = comp.len() - (1 + 50_001);
        assert!(
            paired as f64 <= single as f64 * (1.0 + PAIRS_2BYTE.slack),
            "{paired} vs {single}"
        );
        assert_eq!(roundtrips(&raw, DType::BF16), comp.len());
    }

    /// An exponent plane spread over too many values for the pair window is coded one
    /// byte per symbol, hashed or not, and the chunk round-trips.
    #[test]
    fn wide_bf16_exponents_fall_back_to_one_symbol_per_byte() {
        let raw: Vec<u8> = (0..50_001u64)
            .flat_map(|i| {
                let r = noise(i);
                (((r & 0x807f) | (0x60 + r % 40) << 7) as u16).to_le_bytes()
            })
            .collect();
        let comp = encode_chunk(&raw, DType::BF16);
        assert_eq!(comp[0], MODE_RANS);
        let (chunk, hash) = PlaneChunk::encode_hashed(&raw, DType::BF16, &[]);
        assert_eq!(chunk.to_vec(&raw), comp);
        assert_eq!(hash, crate::hash::h128(&raw));
        assert_eq!(roundtrips(&raw, DType::BF16), comp.len());
    }

    /// fp32 words of a weight-like tensor: as [`bf16_weights`], with random low bytes.
    fn f32_weights(n: usize, period: usize, seed: u64) -> Vec<u8> {
        let hi = bf16_weights(n, period, seed);
        hi.chunks(2)
            .enumerate()
            .flat_map(|(i, h)| {
                let lo = noise(i as u64 ^ !seed) as u16;
                let [a, b] = lo.to_le_bytes();
                [a, b, h[0], h[1]]
            })
            .collect()
    }

    #[test]
    fn f32_exponents_are_pair_coded_with_a_wide_table_within_the_slack() {
        let raw = f32_weights(50_001, 997, 7);
        let comp = encode_chunk(&raw, DType::F32);
        assert_eq!(comp[0], MODE_PAIRS_WIDE);
        assert_eq!(comp[2] as u32, PAIRS_4BYTE.bits);
        let plane: Vec<u8> = raw
            .chunks(4)
            .map(|w| (u32::from_le_bytes(w.try_into().unwrap()).rotate_left(1) >> 24) as u8)
            .collect();
        let (mut one, mut paired) = (Writer::default(), Writer::default());
        assert!(code_plane(&plane, None, &mut one));
        assert!(code_plane(&plane, Some(PAIRS_4BYTE), &mut paired));
        let (single, paired) = (one.len(), paired.len());
        assert!(
            paired as f64 <= single as f64 * (1.0 + PAIRS_4BYTE.slack),
            "{paired} vs {single}"
        );
        assert_eq!(roundtrips(&raw, DType::F32), comp.len());
    }

    #[test]
    fn corrupt_wide_pair_headers_are_errors() {
        let raw = f32_weights(20_000, 997, 3);
        let comp = encode_chunk(&raw, DType::F32);
        assert_eq!(comp[0], MODE_PAIRS_WIDE);
        let mut out = vec![0u8; raw.len()];
        // Window start, table scale (too large, too small, other than written), escapes.
        for (at, v) in [(1, 250u8), (2, 15), (2, 7), (2, 12), (3, 0xff), (6, 0x7f)] {
            let mut bad = comp.clone();
            bad[at] = v;
            assert!(
                decode_chunk(&bad, DType::F32, &mut out).is_err(),
                "byte {at} = {v}"
            );
        }
        for cut in [1, 2, 3, 7, comp.len() / 2, comp.len() - 1] {
            assert!(
                decode_chunk(&comp[..cut], DType::F32, &mut out).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn corrupt_pair_headers_are_errors() {
        let raw = bf16_weights(20_000, 997, 3);
        let comp = encode_chunk(&raw, DType::BF16);
        assert_eq!(comp[0], MODE_PAIRS);
        let mut out = vec![0u8; raw.len()];
        for (at, v) in [(1, 250u8), (2, 0xff), (5, 0x7f)] {
            let mut bad = comp.clone();
            bad[at] = v;
            assert!(
                decode_chunk(&bad, DType::BF16, &mut out).is_err(),
                "byte {at} = {v}"
            );
        }
        for cut in [1, 3, 6, comp.len() / 2, comp.len() - 1] {
            assert!(
                decode_chunk(&comp[..cut], DType::BF16, &mut out).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// A chunk large enough to be judged on a sample, as words of `f`.
    fn big_chunk(f: impl Fn(u64) -> u32) -> Vec<u8> {
        (0..(SAMPLE_MIN_WORDS as u64 + 777))
            .flat_map(|i| f(i).to_le_bytes())
            .collect()
    }

    fn noise(i: u64) -> u32 {
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u32
    }

    fn roundtrips(raw: &[u8], dtype: DType) -> usize {
        let comp = encode_chunk(raw, dtype);
        let mut out = vec![0u8; raw.len()];
        decode_chunk(&comp, dtype, &mut out).unwrap();
        assert_eq!(out, raw);
        comp.len()
    }

    #[test]
    fn sampled_chunks_keep_what_compresses() {
        // Uniform bytes: every plane raw, exactly one mode byte each.
        let raw = big_chunk(noise);
        assert_eq!(roundtrips(&raw, DType::F32), raw.len() + 4);
        // bf16 values held in fp32: two constant planes, found despite the sample.
        let raw = big_chunk(|i| noise(i) & 0xffff_0000);
        assert!(roundtrips(&raw, DType::F32) < raw.len() * 9 / 16);
        // A plane with a few percent of redundancy is still coded.
        let raw = big_chunk(|i| noise(i) & if i % 4 == 0 { 0xffff_fff0 } else { !0 });
        let size = roundtrips(&raw, DType::F32);
        assert!(size < raw.len() + 4 - raw.len() / 4 / 100, "{size}");
        for d in DType::all() {
            let raw = big_chunk(|i| noise(i) >> (i % 11));
            let raw = &raw[..raw.len() / d.size() * d.size()];
            roundtrips(raw, *d);
        }
    }

    #[test]
    fn plane_chunk_writes_into_uninit_memory() {
        let raw = big_chunk(|i| (noise(i) & 0x807f_ffff) | 0x3f00_0000);
        let c = PlaneChunk::encode(&raw, DType::F32);
        let mut v: Vec<u8> = Vec::with_capacity(c.len());
        c.write(&raw, &mut v.spare_capacity_mut()[..c.len()]);
        // SAFETY: `write` initialized every byte.
        unsafe { v.set_len(c.len()) };
        assert_eq!(v, encode_chunk(&raw, DType::F32));
        assert!(v.len() < raw.len());
    }
}

//! Prediction from a reference tensor (the same tensor in the previous checkpoint).
//!
//! Each word x is coded against its reference word r as the zigzagged difference `z` of
//! their order-preserving integer images (floats: sign-magnitude mapped to unsigned order),
//! split into a token (an rANS symbol) and raw bits. The token (kind 3) is `z` itself when
//! `z < 2^(tb + 2)`; otherwise, with `n` the bit length of `z`, `(n - tb - 1) << (tb + 1)`,
//! the `tb` bits below the leading 1 and the lowest bit of `z` (the sign of the
//! difference, lopsided for Adam's second moment); the `n - tb - 2` bits in between are
//! raw. Kinds 1 and 2 code the bit length `n` alone and the `n - 1` bits below the leading
//! 1 raw. The symbol is modelled with the reference itself as context: the reference's
//! exponent relative to the chunk's largest, since a step of similar absolute size spans
//! more units in the last place on small values than on large ones.
//!
//! Chunk layout: `u8 kind` — 0: a standalone chunk ([`crate::codec`]) follows (chosen when
//! the estimate says prediction does not pay); 3: token chunk: `u8 table scale bits
//! (8..=11) | u8 top bits tb (0..=2, tokens fitting a byte) | u8 e_max | u64 offset | u16
//! context bitmap | per used context: u8 mode (1 const + u8 symbol, 2 table summing to
//! 2^scale) | context rANS stream over every word's token (a constant context codes under a
//! table holding only its symbol: state unchanged, no bits) | u32 raw-bit byte count |
//! bits`. Kind 5 (format 1.5): kind 3 with `u8 e_max | u8 most`, a base exponent from the
//! encoder's sample below the reference's largest (contexts saturate at 0 above it), so
//! that the encoder reads the reference once. Kind 4: contexts from a side tensor
//! ([`side`]). Kind 2 (written by format 1.2 and 1.3, still read): kind 3 without the top-bits
//! byte, symbols are lengths. Kind 1 (written before format 1.2, still read): kind 2
//! without the scale byte, at scale 12, and the stream skips the words of constant
//! contexts (lanes count coded words only).
//!
//! Kind-2 and kind-3 chunks of 32-bit words decode in one pass (`fused`): context, symbol
//! and word per group of 8, since every word's symbol is in the stream at the word's
//! position; other widths and kind 1 decode symbols first, then words (`decode`).
//!
//! The encoder writes tables of [`TABLE_BITS`]: sixteen 2^12-entry decode tables (256 KB)
//! spill out of L1 and L2 and slow the decoder's table lookups, while the length alphabets
//! (a dozen symbols per context) lose almost nothing to coarser probabilities.

mod choice;
mod contexts;
mod decode;
pub mod direction;
mod encode;
mod fused;
mod side;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(target_arch = "x86_64")]
mod simd512;
mod word;

use crate::codec::{self, PlaneChunk};
use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::entropy::context;
use crate::entropy::freq::FreqTable;
use crate::error::{Error, Result};
use crate::pool::{Buffer, Held};
use crate::scratch;
use decode::Models;
use std::mem::MaybeUninit;
use word::{by_width, mask, offset};

/// Contexts per chunk: reference exponent distance from the chunk maximum, capped.
pub const CONTEXTS: usize = 16;

/// Probability scale (bits) of the context tables the encoder writes. On the MiniLM
/// checkpoint pair, 10 bits instead of 12 costs 0.0001 of the predicted ratio and makes
/// the decoder's lookups ~6% faster.
pub const TABLE_BITS: u32 = 10;

/// How far ahead of their reads the AVX-512 analysis and fused decoder prefetch the
/// words, reference and side, in bytes (16 KiB was no different).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 4096;

/// Kind byte of a standalone chunk inside a predicted tensor.
pub const KIND_STANDALONE: u8 = 0;
/// Words from which a chunk's choice between residual and standalone coding is sampled.
pub const SAMPLED_WORDS: usize = choice::MIN_WORDS;

/// Residual chunk with 2^12 tables and no scale byte (read only).
const KIND_RESIDUAL_12: u8 = 1;
/// Residual chunk of lengths (format 1.2 to 1.3, read only).
const KIND_RESIDUAL: u8 = 2;
/// Residual chunk of tokens: lengths with the top bits and the sign bit of the residual.
const KIND_TOKENS: u8 = 3;
/// Token chunk whose contexts come from a sibling tensor ([`side`]).
const KIND_SIDE: u8 = 4;
/// Token chunk whose base exponent (from the encoder's sample) is below the reference's
/// largest, which follows it: the encoder reads the reference once, not once for its
/// largest exponent and again to code.
const KIND_TOKENS_BASED: u8 = 5;

/// Top bits in the tokens the encoder writes (tokens up to 123 for 32-bit words, 251
/// for 64-bit ones). On real trajectories (MiniLM fine-tune, GPT from scratch) 1 bit
/// beats 2 at table scale 10: the larger alphabets' tables cost more than they save.
const TOP_BITS: u32 = 1;

/// Bit width and float-ness of one word of `dtype`.
fn word_kind(dtype: DType) -> (u32, bool) {
    (8 * dtype.word_size() as u32, dtype.is_float())
}

/// Encodes one chunk of `raw` against the same-sized `reference` chunk, falling back to
/// the standalone codec when the estimates say prediction costs more: estimates on a
/// sample settle clear cases; close ones compare the exact residual estimate with the
/// standalone chunk itself.
pub fn encode_chunk(raw: &[u8], reference: &[u8], dtype: DType) -> Vec<u8> {
    encode_chunk_side(raw, reference, None, dtype)
}

/// [`encode_chunk`] with the same-sized chunk of a sibling tensor, `side`, whose words
/// give the contexts (side contexts, kind 4) when `dtype` is a float type that takes them.
pub fn encode_chunk_side(
    raw: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
) -> Vec<u8> {
    encode_with(raw, reference, side, dtype, false)
        .0
        .into_bytes(raw)
}

/// An encoded chunk as [`encode_chunk_hashed`] hands it over: a residual chunk's bytes, or
/// the standalone chunk that the bytes are the kind byte and then (written only when the
/// file is, with no copy before that).
pub enum Coded {
    /// The residual chunk's bytes.
    Residual(ResidualBytes),
    /// The standalone chunk to write behind [`KIND_STANDALONE`].
    Standalone(Box<PlaneChunk>),
}

impl Coded {
    /// Whether the chunk codes residuals (it uses its reference).
    pub fn is_residual(&self) -> bool {
        matches!(self, Coded::Residual(_))
    }

    /// Whether the chunk takes its contexts from a side tensor (kind 4).
    pub fn is_side(&self) -> bool {
        matches!(self, Coded::Residual(b) if is_side_chunk(b.head.as_slice()))
    }

    /// The chunk's bytes, as [`encode_chunk_side`] writes them (`raw`: the chunk's raw
    /// bytes, which a standalone chunk's raw planes are written from).
    pub fn into_bytes(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Coded::Residual(b) => b.parts().concat(),
            Coded::Standalone(planes) => wrap_standalone(&planes, raw),
        }
    }
}

/// A residual chunk's bytes in two parts, kept until its file is written: everything up
/// to the raw bits' length (a pooled copy of exactly that size), then the packed raw bits
/// in the buffer the analysis packed them into (no copy of the chunk's largest part).
pub struct ResidualBytes {
    head: Held,
    bits: Buffer,
    bits_len: usize,
}

impl ResidualBytes {
    /// The chunk's bytes: the head, then the raw bits.
    pub fn parts(&self) -> [&[u8]; 2] {
        [self.head.as_slice(), &self.bits.as_slice()[..self.bits_len]]
    }

    /// The chunk's length in bytes.
    pub fn len(&self) -> usize {
        self.head.as_slice().len() + self.bits_len
    }

    /// Whether the chunk has no bytes (never: it has a kind byte).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A predicted chunk with [`crate::hash::h128`] of its raw and reference bytes.
pub struct HashedChunk {
    /// The chunk, as [`encode_chunk_side`] writes it once made bytes.
    pub coded: Coded,
    /// Hash of the raw bytes.
    pub raw_hash: u128,
    /// Hash of the reference bytes; `None` for a chunk that the sample sent to the
    /// standalone codec before the reference was read whole (whoever needs it then, for a
    /// tensor with residual chunks besides, hashes the reference chunk itself).
    pub ref_hash: Option<u128>,
}

/// [`encode_chunk_side`] that also hashes the raw and reference bytes, each while a pass
/// of the encoder reads them anyway (the reference with its base exponent, the raw
/// bytes in the analysis), not in passes of their own.
pub fn encode_chunk_hashed(
    raw: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
) -> HashedChunk {
    let (coded, hashes) = encode_with(raw, reference, side, dtype, true);
    let (raw_hash, ref_hash) = hashes.expect("hashes asked for");
    HashedChunk {
        coded,
        raw_hash,
        ref_hash,
    }
}

/// [`encode_chunk_side`], with the raw hash and (when it was read whole) the reference
/// hash when `hash` is set.
fn encode_with(
    raw: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
    hash: bool,
) -> (Coded, Option<(u128, Option<u128>)>) {
    let width = dtype.word_size();
    let (bits, float) = word_kind(dtype);
    let side = side.filter(|s| {
        s.len() == raw.len()
            && side::log_shift(dtype).is_some()
            && raw.len() / width >= side::MIN_WORDS
    });
    // The raw bytes' hash (taken by `raw_hash` when the analysis has not).
    let raw_hash = |h: Option<u128>| h.unwrap_or_else(|| crate::hash::h128(raw));
    let sample = (raw.len() / width >= choice::MIN_WORDS)
        .then(|| choice::Sample::take(raw, reference, side, width));
    // The offset from the sample when there is one: contiguous runs, not a word per
    // cache line of the whole chunk.
    let off = match &sample {
        Some(s) => by_width!(width, offset(&s.xs, &s.rs, bits, float)),
        None => by_width!(width, offset(raw, reference, bits, float)),
    };
    // The side-context base from the sample too (a sample holds the side's runs whenever
    // a side chunk is given).
    let mut side = side.map(
        |s| match sample.as_ref().and_then(|sm| Some((sm.side()?, sm))) {
            Some((ss, sm)) => (s, side::choose(ss, &sm.rs, dtype)),
            None => (s, side::choose(s, reference, dtype)),
        },
    );
    let mut sampled = None;
    // The base exponent: the sample's largest when there is a sample (the reference is
    // then read once, by the analysis, which also finds its true largest); else the
    // reference's own.
    let mut e_max = None;
    if let Some(sample) = &sample {
        // Estimated with the sample's base exponent: the reference is read whole only
        // for a chunk that may code residuals.
        let base = contexts::base(&sample.rs, width, float);
        let params = (base, off, top_bits());
        let (residual, standalone, with_side) =
            choice::estimates(sample, dtype, params, side.map(|(_, at)| at));
        // Side contexts only where the sample says they beat the reference's exponents.
        if with_side.is_some_and(|w| w >= residual) && !forced_side() {
            side = None;
        }
        let residual = with_side.map_or(residual, |w| w.min(residual));
        if residual > standalone * (1.0 + choice::MARGIN_SAMPLED) {
            let (planes, h) = standalone_hashed(raw, dtype, hash);
            let hashes = hash.then(|| (raw_hash(h), None));
            return (Coded::Standalone(Box::new(planes)), hashes);
        }
        sampled = Some(standalone);
        e_max = Some(base);
    }
    let e_max = e_max.unwrap_or_else(|| contexts::base(reference, width, float));
    let params = (e_max, off, top_bits());
    let sides = side.map(|(words, at)| encode::Side {
        words,
        sh: side::log_shift(dtype).expect("side contexts on a float dtype"),
        at,
    });
    let a = encode::analyze(raw, reference, (width, float), params, (true, hash), sides);
    let (est, tables) = a.estimate(1.0);
    let hashes = hash.then(|| (raw_hash(a.raw_hash), a.ref_hash));
    // Without a clear sampled verdict, floats never code below ~0.55 of raw standalone
    // (mantissa noise), so a residual estimate under half the raw size needs no trial.
    let trial = match sampled {
        Some(s) if est > s * (1.0 + choice::MARGIN_EXACT) => {
            return (
                Coded::Standalone(Box::new(PlaneChunk::encode(raw, dtype))),
                hashes,
            )
        }
        Some(s) => est >= s * (1.0 - choice::MARGIN_EXACT),
        None => !(float && est < 0.5 * raw.len() as f64),
    };
    if trial {
        let standalone = PlaneChunk::encode(raw, dtype);
        if est >= standalone.len() as f64 {
            return (Coded::Standalone(Box::new(standalone)), hashes);
        }
    }
    let contexts = match side {
        Some((_, at)) => Contexts::Side(at),
        None => Contexts::Exponent(e_max, a.most.max(e_max)),
    };
    let bytes = residual_chunk(a, &tables, (contexts, off, top_bits()));
    (Coded::Residual(bytes), hashes)
}

/// Whether an encoded chunk takes its contexts from a side tensor (kind 4).
pub fn is_side_chunk(comp: &[u8]) -> bool {
    comp.first() == Some(&KIND_SIDE)
}

/// Where a residual chunk's contexts come from.
#[derive(Clone, Copy)]
enum Contexts {
    /// The reference's exponent below a base exponent `.0`, the reference's largest `.1`
    /// (kind 3) or, sampled, below it (kind 5).
    Exponent(u8, u8),
    /// A sibling tensor's words, with the chunk's `(base, shift)` (kind 4).
    Side((i16, u8)),
}

/// The standalone chunk of `raw`, with the raw bytes' hash when `hash` is set.
fn standalone_hashed(raw: &[u8], dtype: DType, hash: bool) -> (PlaneChunk, Option<u128>) {
    if !hash {
        return (PlaneChunk::encode(raw, dtype), None);
    }
    let (planes, h) = PlaneChunk::encode_hashed(raw, dtype, &[]);
    (planes, Some(h))
}

/// The kind byte and the standalone chunk `planes` of `raw`, written in place (no copy
/// of a finished standalone chunk).
fn wrap_standalone(planes: &PlaneChunk, raw: &[u8]) -> Vec<u8> {
    let len = planes.len() + 1;
    let mut out = Vec::with_capacity(len);
    write_standalone(planes, raw, &mut out.spare_capacity_mut()[..len]);
    // SAFETY: `write_standalone` initialized all `len` bytes.
    unsafe { out.set_len(len) };
    out
}

/// Writes the bytes of a standalone chunk of a predicted tensor into `out` (of
/// `planes.len() + 1` bytes): the kind byte, then the chunk `planes` of `raw`.
pub fn write_standalone(planes: &PlaneChunk, raw: &[u8], out: &mut [MaybeUninit<u8>]) {
    let (kind, rest) = out.split_first_mut().expect("room for the kind byte");
    kind.write(KIND_STANDALONE);
    planes.write(raw, rest);
}

/// The bytes of a residual chunk from its analysis and context tables.
fn residual_chunk(
    a: encode::Analysis,
    tables: &[Option<FreqTable>],
    (contexts, off, tb): (Contexts, u64, u32),
) -> ResidualBytes {
    let mut w = Writer::reusing(CHUNK.take());
    let kind = match contexts {
        Contexts::Exponent(e_max, most) if e_max == most => KIND_TOKENS,
        Contexts::Exponent(..) => KIND_TOKENS_BASED,
        Contexts::Side(_) => KIND_SIDE,
    };
    w.u8(kind);
    w.u8(TABLE_BITS as u8);
    w.u8(tb as u8);
    match contexts {
        Contexts::Exponent(e_max, most) if e_max == most => w.u8(e_max),
        Contexts::Exponent(e_max, most) => {
            w.u8(e_max);
            w.u8(most);
        }
        Contexts::Side((base, shift)) => {
            w.u16(base as u16);
            w.u8(shift);
        }
    }
    w.u64(off);
    let counts: Vec<[u32; 256]> = (0..CONTEXTS).map(|c| a.counts(c)).collect();
    let used: u16 = (0..CONTEXTS)
        .filter(|&c| counts[c].iter().any(|&v| v > 0))
        .fold(0, |m, c| m | 1 << c);
    w.u16(used);
    for c in (0..CONTEXTS).filter(|&c| used >> c & 1 == 1) {
        match &tables[c] {
            Some(t) => {
                w.u8(2);
                t.write(&mut w);
            }
            None => {
                w.u8(1);
                w.u8(counts[c].iter().position(|&v| v > 0).unwrap_or(0) as u8);
            }
        }
    }
    // Constant contexts code through single-symbol tables (no bits, no compaction).
    let coded: Vec<Option<FreqTable>> = (0..CONTEXTS)
        .map(|c| match &tables[c] {
            None if used >> c & 1 == 1 => {
                let sym = counts[c].iter().position(|&v| v > 0).unwrap_or(0);
                Some(FreqTable::single(sym as u8, TABLE_BITS))
            }
            t => t.clone(),
        })
        .collect();
    let stream = context::code_stream(&a.codes, encode::SYM_BITS, &coded);
    let (bits, bits_len) = a.bits.expect("packed raw bits").into_packed();
    let buf = w.into_inner();
    // The tables, the stream and the raw bits' length, written where they are kept.
    let head = Held::filled(buf.len() + stream.byte_len() + 4, |out| {
        let (tables, rest) = out.split_at_mut(buf.len());
        tables.copy_from_slice(&buf);
        let (coded, len) = rest.split_at_mut(stream.byte_len());
        stream.write(coded);
        len.copy_from_slice(&(bits_len as u32).to_le_bytes());
    });
    CHUNK.set(buf);
    ResidualBytes {
        head,
        bits,
        bits_len,
    }
}

thread_local! {
    /// Per-thread buffer a residual chunk's header and tables are written into before
    /// they are kept with its coded stream: reused memory, no allocation per chunk.
    static CHUNK: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Decodes a chunk written by [`encode_chunk`] into `out`, given the same reference chunk.
pub fn decode_chunk(comp: &[u8], reference: &[u8], dtype: DType, out: &mut [u8]) -> Result<()> {
    decode_chunk_side(comp, reference, None, dtype, out)
}

/// Decodes a chunk written by [`encode_chunk_side`] into `out`, given the same reference
/// and side chunks (a side-context chunk without its side is an error).
pub fn decode_chunk_side(
    comp: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    decode_into(comp, reference, side, dtype, out, false).map(|_| ())
}

/// [`decode_chunk_side`], also returning [`crate::hash::h128`] of `out` when the decoder
/// computed it on the way (standalone chunks; 32-bit residual chunks, hashed block by
/// block while each is in L1), so the caller need not read `out` again.
pub fn decode_chunk_side_hashed(
    comp: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
    out: &mut [u8],
) -> Result<Option<u128>> {
    decode_into(comp, reference, side, dtype, out, true)
}

/// A predicted chunk to decode: its coded bytes, reference chunk, side chunk (if its
/// tensor has one), dtype and output.
pub type PredictedOut<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>, DType, &'a mut [u8]);

/// [`decode_chunk_side_hashed`] of two chunks at once: token chunks of 32-bit words
/// decode their streams side by side, which is faster than one after the other. Each
/// result is the one that chunk gives alone.
pub fn decode_two_side_hashed(
    (ca, ra, sa, da, oa): PredictedOut<'_>,
    (cb, rb, sb, db, ob): PredictedOut<'_>,
) -> [Result<Option<u128>>; 2] {
    let pa = prepare(ca, ra, sa, da, oa, true);
    let pb = prepare(cb, rb, sb, db, ob, true);
    match (pa, pb) {
        (Ok(Prep::Fused(a)), Ok(Prep::Fused(b))) => fused::run_two(*a, *b),
        (pa, pb) => [pa.and_then(Prep::finish), pb.and_then(Prep::finish)],
    }
}

/// A chunk's decode once its header is read: done (the hash of the output if computed),
/// or a fused decode still to run.
enum Prep<'a> {
    Done(Option<u128>),
    Fused(Box<fused::Job<'a>>),
}

impl Prep<'_> {
    /// The decode's result, running the fused job if there is one.
    fn finish(self) -> Result<Option<u128>> {
        match self {
            Prep::Done(h) => Ok(h),
            Prep::Fused(job) => job.run(),
        }
    }
}

/// Decodes a chunk into `out`; when `hash`, also returns the hash of `out` if the chunk's
/// decoder computed it on the way.
fn decode_into(
    comp: &[u8],
    reference: &[u8],
    side: Option<&[u8]>,
    dtype: DType,
    out: &mut [u8],
    hash: bool,
) -> Result<Option<u128>> {
    prepare(comp, reference, side, dtype, out, hash)?.finish()
}

/// Reads a chunk's header and decodes it, except fused 32-bit decodes, which it sets up.
fn prepare<'a>(
    comp: &'a [u8],
    reference: &'a [u8],
    side: Option<&'a [u8]>,
    dtype: DType,
    out: &'a mut [u8],
    hash: bool,
) -> Result<Prep<'a>> {
    let mut r = Reader::new(comp);
    let kind = r.u8()?;
    if kind == KIND_STANDALONE {
        return if hash {
            codec::decode_chunk_hashed(&comp[1..], dtype, out).map(|h| Prep::Done(Some(h)))
        } else {
            codec::decode_chunk(&comp[1..], dtype, out).map(|_| Prep::Done(None))
        };
    }
    if kind == KIND_SIDE {
        return decode_side(r, reference, side, dtype, out, hash);
    }
    let width = dtype.word_size();
    let (bits, float) = word_kind(dtype);
    let (scale, tb) = read_scale(&mut r, kind, bits)?;
    // The decoders check the reference's largest exponent against the chunk's.
    let (e_max, most) = read_base(&mut r, kind)?;
    let off = r.u64()? & mask(bits);
    let models = read_models(&mut r, scale)?;
    let limit = tb.map_or(bits, |tb| word::max_token(bits, tb));
    decode::check_symbols(&models, limit)?;
    if kind != KIND_RESIDUAL_12 && width == 4 {
        let params = (float, e_max, off as u32, tb);
        let model = decode::coded_model(&models)?;
        let job = fused::Job::new(r, (reference, out), params, model, None, hash);
        return Ok(Prep::Fused(Box::new(job.with_largest(most))));
    }
    let n = reference.len().min(out.len()) / width;
    let symbols = decode::lengths(
        &mut r,
        &reference[..n * width],
        (width, float),
        (e_max, most),
        &models,
        kind != KIND_RESIDUAL_12,
    )?;
    let bits_data = decode::raw_bits(&mut r)?;
    let used = decode::rebuild(&symbols, bits_data, reference, out, (width, float, off, tb));
    decode::check_used(used, bits_data.len()).map(|_| Prep::Done(None))
}

/// Decodes the rest of a side-context chunk (kind 4): every word's slot from the side
/// and reference words, then (32-bit words) the fused decoder with those slots, or
/// (others) every word's token, then the words.
fn decode_side<'a>(
    mut r: Reader<'a>,
    reference: &'a [u8],
    side: Option<&'a [u8]>,
    dtype: DType,
    out: &'a mut [u8],
    hash: bool,
) -> Result<Prep<'a>> {
    let width = dtype.word_size();
    let (bits, float) = word_kind(dtype);
    let Some(side) = side.filter(|_| side::log_shift(dtype).is_some()) else {
        return Err(Error::Corrupt(
            "side-context chunk in a tensor without a side tensor".into(),
        ));
    };
    let (scale, tb) = read_scale(&mut r, KIND_TOKENS, bits)?;
    let base = r.u16()? as i16;
    let shift = r.u8()?;
    if shift > side::MAX_SHIFT {
        return Err(Error::Corrupt(format!(
            "side context shift {shift} out of range"
        )));
    }
    let off = r.u64()? & mask(bits);
    let models = read_models(&mut r, scale)?;
    let tb = tb.expect("token chunks have top bits");
    decode::check_symbols(&models, word::max_token(bits, tb))?;
    let n = reference.len().min(out.len()).min(side.len()) / width;
    let (model, lut) = decode::coded_model(&models)?;
    if width == 4 {
        let params = (float, 0, off as u32, Some(tb));
        let side = Some((side, (base, shift)));
        let job = fused::Job::new(r, (reference, out), params, (model, lut), side, hash);
        return Ok(Prep::Fused(Box::new(job)));
    }
    let mut slots = scratch::bytes_dirty(n);
    let at = n * width;
    side::map(
        &side[..at],
        &reference[..at],
        dtype,
        (base, shift),
        &lut,
        &mut slots,
    );
    let mut symbols = scratch::bytes_dirty(n);
    model.decode(&mut r, &slots, &mut symbols)?;
    let bits_data = decode::raw_bits(&mut r)?;
    let params = (width, float, off, Some(tb));
    let used = decode::rebuild(&symbols, bits_data, reference, out, params);
    decode::check_used(used, bits_data.len()).map(|_| Prep::Done(None))
}

/// The base exponent of a residual chunk with exponent contexts and the largest exponent
/// its reference must have: stored apart in kind 5 (base below it), the same otherwise.
fn read_base(r: &mut Reader, kind: u8) -> Result<(u8, u8)> {
    let e_max = r.u8()?;
    if kind != KIND_TOKENS_BASED {
        return Ok((e_max, e_max));
    }
    let most = r.u8()?;
    if most <= e_max {
        return Err(Error::Corrupt(format!(
            "sampled base exponent {e_max} not below the reference's largest {most}"
        )));
    }
    Ok((e_max, most))
}

/// Reads what follows the kind byte of a residual chunk up to the base exponent: the
/// tables' scale and (kinds 3 and 5) the tokens' top bits, each checked.
fn read_scale(r: &mut Reader, kind: u8, bits: u32) -> Result<(u32, Option<u32>)> {
    let (scale, tb) = match kind {
        KIND_RESIDUAL_12 => (crate::entropy::SCALE_BITS, None),
        KIND_RESIDUAL => (r.u8()? as u32, None),
        KIND_TOKENS | KIND_TOKENS_BASED => (r.u8()? as u32, Some(r.u8()? as u32)),
        k => return Err(Error::Corrupt(format!("unknown predicted chunk kind {k}"))),
    };
    // Kinds 2 and 3 code constant contexts under tables of total 2^scale, below 2^12.
    let scales = match kind {
        KIND_RESIDUAL_12 => crate::entropy::freq::SCALES,
        _ => *crate::entropy::freq::SCALES.start()..=crate::entropy::SCALE_BITS - 1,
    };
    if !scales.contains(&scale) {
        return Err(Error::Corrupt(format!("table scale {scale} out of range")));
    }
    if let Some(tb) = tb.filter(|&tb| tb > 2 || word::max_token(bits, tb) > 255) {
        return Err(Error::Corrupt(format!("{tb} token top bits out of range")));
    }
    Ok((scale, tb))
}

/// Reads the context bitmap and each used context's constant or table (of total
/// `2^scale`).
fn read_models(r: &mut Reader, scale: u32) -> Result<Models> {
    let used = r.u16()?;
    let mut m = Models {
        tables: vec![None; CONTEXTS],
        consts: [None; CONTEXTS],
        scale,
    };
    for c in (0..CONTEXTS).filter(|&c| used >> c & 1 == 1) {
        match r.u8()? {
            1 => m.consts[c] = Some(r.u8()?),
            2 => m.tables[c] = Some(FreqTable::read_scaled(r, scale)?),
            m => return Err(Error::Corrupt(format!("unknown context mode {m}"))),
        }
    }
    Ok(m)
}

/// Whether side contexts are used even where the sample says they do not pay: never,
/// except in tests that reach side-context chunks with any data.
#[cfg(not(test))]
fn forced_side() -> bool {
    false
}

#[cfg(test)]
fn forced_side() -> bool {
    tests::FORCE_SIDE.with(std::cell::Cell::get)
}

/// Top bits of the tokens the encoder writes: [`TOP_BITS`], except in tests that reach
/// the other widths the format allows (0..=2), which the decoder reads.
#[cfg(not(test))]
fn top_bits() -> u32 {
    TOP_BITS
}

#[cfg(test)]
fn top_bits() -> u32 {
    tests::FORCE_TOP_BITS.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;
    use proptest::prelude::*;
    use std::cell::Cell;

    thread_local! {
        /// See [`forced_side`].
        pub static FORCE_SIDE: Cell<bool> = const { Cell::new(false) };
        /// See [`top_bits`].
        pub static FORCE_TOP_BITS: Cell<u32> = const { Cell::new(TOP_BITS) };
    }

    proptest! {
        #[test]
        fn chunk_roundtrip_random_reference(raw in proptest::collection::vec(any::<u8>(), 0..4096),
                                            noise in proptest::collection::vec(any::<u8>(), 0..4096),
                                            d in 0usize..17) {
            let dtype = DType::all()[d];
            let n = raw.len().min(noise.len()) / dtype.size() * dtype.size();
            let (raw, reference) = (&raw[..n], &noise[..n]);
            let comp = encode_chunk(raw, reference, dtype);
            let mut out = vec![0u8; n];
            decode_chunk(&comp, reference, dtype, &mut out).unwrap();
            prop_assert_eq!(out, raw.to_vec());
            assert_encoded_hashed(raw, reference, None, dtype, &comp);
        }

        /// Few distinct exponents and many exact repeats: constant contexts, zero-length
        /// residuals and lengths that are no multiple of 32, for every dtype.
        #[test]
        fn chunk_roundtrip_structured(picks in proptest::collection::vec((0usize..6, 0u8..4), 0..3000),
                                      d in 0usize..17) {
            let dtype = DType::all()[d];
            let w = dtype.word_size();
            let pool: [u64; 6] = [0, 0x3f80_0000, 0xbf80_0001, 0x3c00_0000_0000_0000, 1, 0x0001_0000];
            let mut reference = Vec::new();
            let mut raw = Vec::new();
            for &(k, step) in &picks {
                let r = pool[k];
                let x = if step == 0 { r } else { r.wrapping_add(step as u64 * (k as u64 + 1)) };
                reference.extend_from_slice(&r.to_le_bytes()[..w]);
                raw.extend_from_slice(&x.to_le_bytes()[..w]);
            }
            let n = raw.len() / dtype.size() * dtype.size();
            let (raw, reference) = (&raw[..n], &reference[..n]);
            let comp = encode_chunk(raw, reference, dtype);
            let mut out = vec![0u8; n];
            decode_chunk(&comp, reference, dtype, &mut out).unwrap();
            prop_assert_eq!(out, raw.to_vec());
            assert_encoded_hashed(raw, reference, None, dtype, &comp);
        }

        /// Side contexts round-trip over every dtype (integer dtypes ignore the side).
        #[test]
        fn side_chunk_roundtrip(words in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 1..300),
                                len in 0usize..40_000, close in any::<bool>(), d in 0usize..17) {
            let dtype = DType::all()[d];
            let w = dtype.word_size();
            let mut raw = Vec::new();
            let (mut reference, mut side) = (Vec::new(), Vec::new());
            // Cycled to reach side-context sizes, each lap a little different.
            for (i, &(x, r, s)) in words.iter().cycle().take(len).enumerate() {
                let x = if close { r ^ (x & 0xfff) ^ (i as u64 & 7) } else { x ^ i as u64 };
                raw.extend_from_slice(&x.to_le_bytes()[..w]);
                reference.extend_from_slice(&r.to_le_bytes()[..w]);
                side.extend_from_slice(&s.to_le_bytes()[..w]);
            }
            let n = raw.len() / dtype.size() * dtype.size();
            let (raw, reference, side) = (&raw[..n], &reference[..n], &side[..n]);
            FORCE_SIDE.with(|f| f.set(true));
            let comp = encode_chunk_side(raw, reference, Some(side), dtype);
            FORCE_SIDE.with(|f| f.set(false));
            let mut out = vec![0u8; n];
            decode_chunk_side(&comp, reference, Some(side), dtype, &mut out).unwrap();
            prop_assert_eq!(&out, raw);
            assert_hashed(&comp, reference, Some(side), dtype, raw);
        }

        /// Damaged or truncated side-context chunks are errors or other data, never a panic.
        #[test]
        fn corrupt_sampled_base_chunks_never_panic(seed in any::<u64>(), n in choice::MIN_WORDS..20_000,
                                                   flip in any::<usize>(), cut in any::<usize>(),
                                                   half in any::<bool>()) {
            let dtype = if half { DType::BF16 } else { DType::F32 };
            let (reference, raw) = outlier_pair(n, seed, dtype);
            let mut comp = encode_chunk(&raw, &reference, dtype);
            prop_assert_eq!(comp[0], KIND_TOKENS_BASED);
            let mut out = vec![0u8; raw.len()];
            let bit = flip % (comp.len() * 8);
            comp[bit / 8] ^= 1 << (bit % 8);
            let _ = decode_chunk(&comp, &reference, dtype, &mut out);
            comp[bit / 8] ^= 1 << (bit % 8);
            let short = cut % comp.len();
            prop_assert!(decode_chunk(&comp[..short], &reference, dtype, &mut out).is_err());
        }
        #[test]
        fn corrupt_side_chunks_never_panic(seed in any::<u64>(), n in side::MIN_WORDS..20_000,
                                           flip in any::<usize>(), cut in any::<usize>()) {
            let (raw, reference, side) = adam_like(n, seed);
            let mut comp = encode_chunk_side(&raw, &reference, Some(&side), DType::F32);
            prop_assert_eq!(comp[0], KIND_SIDE);
            let mut out = vec![0u8; raw.len()];
            let bit = flip % (comp.len() * 8);
            comp[bit / 8] ^= 1 << (bit % 8);
            let _ = decode_chunk_side(&comp, &reference, Some(&side), DType::F32, &mut out);
            comp[bit / 8] ^= 1 << (bit % 8);
            let short = cut % comp.len();
            let r = decode_chunk_side(&comp[..short], &reference, Some(&side), DType::F32, &mut out);
            prop_assert!(r.is_err());
        }

        /// Damaged or truncated chunks are errors or (rarely) other data, never a panic.
        #[test]
        fn corrupt_chunks_never_panic(vals in proptest::collection::vec(-1.0f32..1.0, 1..2000),
                                      flip in any::<usize>(), cut in any::<usize>(), d in 0usize..17) {
            let dtype = DType::all()[d];
            let reference: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let raw: Vec<u8> = vals.iter().map(|v| v * 1.0001).flat_map(|v| v.to_le_bytes()).collect();
            let n = raw.len() / dtype.size() * dtype.size();
            let (raw, reference) = (&raw[..n], &reference[..n]);
            let mut comp = encode_chunk(raw, reference, dtype);
            let mut out = vec![0u8; n];
            let bit = flip % (comp.len() * 8);
            comp[bit / 8] ^= 1 << (bit % 8);
            let _ = decode_chunk(&comp, reference, dtype, &mut out);
            comp[bit / 8] ^= 1 << (bit % 8);
            let short = cut % comp.len();
            prop_assert!(decode_chunk(&comp[..short], reference, dtype, &mut out).is_err());
        }

        #[test]
        fn chunk_roundtrip_close_floats(vals in proptest::collection::vec(-1.0f32..1.0, 1..10_000),
                                        step in -1e-4f32..1e-4) {
            let reference: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let raw: Vec<u8> = vals.iter().map(|v| v + step * v.abs().max(1e-3))
                .flat_map(|v| v.to_le_bytes()).collect();
            let comp = encode_chunk(&raw, &reference, DType::F32);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, &reference, DType::F32, &mut out).unwrap();
            prop_assert_eq!(&out, &raw);
            assert_hashed(&comp, &reference, None, DType::F32, &raw);
            assert_encoded_hashed(&raw, &reference, None, DType::F32, &comp);
        }
    }

    /// The hashing encoder writes the same chunk `comp` as the plain one and hashes the
    /// raw bytes, and the reference bytes unless the sample sent the chunk standalone.
    fn assert_encoded_hashed(
        raw: &[u8],
        reference: &[u8],
        side: Option<&[u8]>,
        dtype: DType,
        comp: &[u8],
    ) {
        let c = encode_chunk_hashed(raw, reference, side, dtype);
        assert_eq!(c.coded.is_residual(), comp[0] != KIND_STANDALONE);
        assert_eq!(c.coded.into_bytes(raw), comp);
        assert_eq!(c.raw_hash, crate::hash::h128(raw));
        match c.ref_hash {
            Some(h) => assert_eq!(h, crate::hash::h128(reference)),
            None => assert!(comp[0] == KIND_STANDALONE && raw.len() / 4 >= choice::MIN_WORDS),
        }
    }

    /// The hashed decoder gives the same bytes and, when it hashes, their `h128`; 32-bit
    /// residual chunks (fused decoder) and standalone ones always hash.
    fn assert_hashed(comp: &[u8], reference: &[u8], side: Option<&[u8]>, dtype: DType, raw: &[u8]) {
        let mut out = vec![0u8; raw.len()];
        let hash = decode_chunk_side_hashed(comp, reference, side, dtype, &mut out).unwrap();
        assert_eq!(out, raw);
        let fused = dtype.word_size() == 4 && comp[0] != KIND_RESIDUAL_12;
        if comp[0] == KIND_STANDALONE || fused {
            assert_eq!(hash, Some(crate::hash::h128(raw)), "kind {}", comp[0]);
        } else if let Some(h) = hash {
            assert_eq!(h, crate::hash::h128(raw));
        }
    }

    /// Unrelated words: the sample sends the chunk to the standalone codec, and the
    /// hashing encoder hashes the raw bytes without reading the reference whole.
    #[test]
    fn unrelated_chunks_hash_on_the_standalone_path() {
        let mut rng = Lcg(5);
        let n = 4 * choice::MIN_WORDS;
        let raw: Vec<u8> = (0..n).flat_map(|_| rng.centered().to_le_bytes()).collect();
        let reference: Vec<u8> = (0..n)
            .flat_map(|_| (rng.next() as u32).to_le_bytes())
            .collect();
        let comp = encode_chunk(&raw, &reference, DType::F32);
        assert_eq!(comp[0], KIND_STANDALONE);
        assert_encoded_hashed(&raw, &reference, None, DType::F32, &comp);
        assert_eq!(
            encode_chunk_hashed(&raw, &reference, None, DType::F32).ref_hash,
            None
        );
    }

    /// An Adam-like pair: `v` decays by a fixed factor where `m` is tiny and grows by `m^2`
    /// elsewhere, `m` being the side tensor.
    fn adam_like(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut rng = Lcg(seed);
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let (mut v0, mut v1, mut m) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let v = 1e-6 * (1.0 + rng.centered()).powi(4) + 1e-9;
            let touched = i % 5 != 0;
            let g = if touched { rng.centered() * 2e-3 } else { 0.0 };
            v0.push(v);
            v1.push(v * 0.98 + 0.02 * g * g);
            m.push(if touched {
                g * 0.5
            } else {
                1e-9 * rng.centered()
            });
        }
        (bytes(&v1), bytes(&v0), bytes(&m))
    }

    /// Side contexts are written for Adam-like data, round-trip, beat exponent contexts,
    /// and need their side: without it, or with another, decoding fails or differs.
    #[test]
    fn side_context_chunks() {
        for n in [1usize, 7, 31, 33, 1000, 20_000] {
            let (raw, reference, side) = adam_like(n, n as u64);
            let comp = encode_chunk_side(&raw, &reference, Some(&side), DType::F32);
            let mut out = vec![0u8; raw.len()];
            decode_chunk_side(&comp, &reference, Some(&side), DType::F32, &mut out).unwrap();
            assert_eq!(out, raw, "n = {n}");
            assert_encoded_hashed(&raw, &reference, Some(&side), DType::F32, &comp);
            if n < side::MIN_WORDS {
                assert_ne!(comp[0], KIND_SIDE);
                continue;
            }
            assert_eq!(comp[0], KIND_SIDE);
            let plain = encode_chunk(&raw, &reference, DType::F32);
            assert!(
                comp.len() < plain.len(),
                "{} vs {}",
                comp.len(),
                plain.len()
            );
            assert!(matches!(
                decode_chunk(&comp, &reference, DType::F32, &mut out),
                Err(Error::Corrupt(_))
            ));
            let other = adam_like(n, 99).2;
            let r = decode_chunk_side(&comp, &reference, Some(&other), DType::F32, &mut out);
            assert!(r.is_err() || out != raw);
        }
    }

    /// Words of a low-exponent context that never change make that context constant: its
    /// lengths are not coded, and the coded lanes skip them.
    #[test]
    fn constant_context_roundtrip() {
        let mut seen = 0;
        for n in [1usize, 31, 33, 1000, 4099] {
            let reference: Vec<f32> = (0..n)
                .map(|i| if i % 3 == 0 { 1e-6 } else { 1.0 + i as f32 })
                .collect();
            let raw: Vec<f32> = reference
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v < 1.0 {
                        v
                    } else {
                        v + (i % 7) as f32 * 0.01
                    }
                })
                .collect();
            let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
            let (reference, raw) = (bytes(&reference), bytes(&raw));
            let comp = encode_chunk(&raw, &reference, DType::F32);
            if comp[0] == KIND_TOKENS && n > 3 {
                let m = read_models(&mut Reader::new(&comp[12..]), TABLE_BITS).unwrap();
                assert!(m.consts.iter().any(Option::is_some), "n = {n}");
                seen += 1;
            }
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, &reference, DType::F32, &mut out).unwrap();
            assert_eq!(out, raw);
        }
        assert!(seen >= 2);
    }

    /// The reference and data of `testdata/residual_kind1_f32.bin`: close weights, every
    /// 97th word a tiny constant (a constant context).
    fn golden_pair() -> (Vec<u8>, Vec<u8>) {
        let mut rng = Lcg(11);
        let reference: Vec<f32> = (0..1000)
            .map(|i| {
                if i % 97 == 0 {
                    1e-30
                } else {
                    rng.centered() * 0.1
                }
            })
            .collect();
        let raw: Vec<f32> = reference
            .iter()
            .map(|&v| {
                if v < 1e-20 {
                    v
                } else {
                    v + rng.centered() * 1e-5
                }
            })
            .collect();
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
        (bytes(&reference), bytes(&raw))
    }

    /// A kind-1 chunk (2^12 tables, written by the encoder before format 1.2) still
    /// decodes; today's encoder writes kind 2 for the same data, and both decode to it.
    #[test]
    fn kind1_chunks_still_decode() {
        let old = include_bytes!("testdata/residual_kind1_f32.bin");
        let (reference, raw) = golden_pair();
        assert_eq!(old[0], KIND_RESIDUAL_12);
        let mut out = vec![0u8; raw.len()];
        decode_chunk(old, &reference, DType::F32, &mut out).unwrap();
        assert_eq!(out, raw);
        let new = encode_chunk(&raw, &reference, DType::F32);
        assert_eq!((new[0], new[1] as u32), (KIND_TOKENS, TABLE_BITS));
        let mut out = vec![0u8; raw.len()];
        decode_chunk(&new, &reference, DType::F32, &mut out).unwrap();
        assert_eq!(out, raw);
        // A scale out of range is an error, not a panic.
        for bad in [0u8, 7, 13, 255] {
            let mut c = new.clone();
            c[1] = bad;
            assert!(decode_chunk(&c, &reference, DType::F32, &mut out).is_err());
        }
        // So are top bits out of range.
        for bad in [3u8, 255] {
            let mut c = new.clone();
            c[2] = bad;
            assert!(decode_chunk(&c, &reference, DType::F32, &mut out).is_err());
        }
    }

    /// Kind-2 chunks (lengths only, written by format 1.2 and 1.3) of the golden pair as
    /// float32 (fused decoder) and as bfloat16 (two-pass decoder) still decode; today's
    /// encoder writes kind 3, which decodes to the same data.
    #[test]
    fn kind2_chunks_still_decode() {
        let (reference, raw) = golden_pair();
        let old: [(&[u8], DType); 2] = [
            (
                include_bytes!("testdata/residual_kind2_f32.bin"),
                DType::F32,
            ),
            (
                include_bytes!("testdata/residual_kind2_bf16.bin"),
                DType::BF16,
            ),
        ];
        for (old, dtype) in old {
            assert_eq!(old[0], KIND_RESIDUAL);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(old, &reference, dtype, &mut out).unwrap();
            assert_eq!(out, raw);
            let new = encode_chunk(&raw, &reference, dtype);
            assert_eq!(new[0], KIND_TOKENS);
            decode_chunk(&new, &reference, dtype, &mut out).unwrap();
            assert_eq!(out, raw);
        }
    }

    #[test]
    fn close_weights_compress_well() {
        let mut rng = Lcg(3);
        let mut next = || rng.centered();
        let base: Vec<f32> = (0..100_000).map(|_| next() * 0.1).collect();
        let reference: Vec<u8> = base.iter().flat_map(|v| v.to_le_bytes()).collect();
        let raw: Vec<u8> = base
            .iter()
            .map(|v| v + next() * 1e-5)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let comp = encode_chunk(&raw, &reference, DType::F32);
        let standalone = codec::encode_chunk(&raw, DType::F32);
        assert!([KIND_TOKENS, KIND_TOKENS_BASED].contains(&comp[0]));
        assert!(
            comp.len() * 10 < standalone.len() * 8,
            "{} vs {}",
            comp.len(),
            standalone.len()
        );
        let mut out = vec![0u8; raw.len()];
        decode_chunk(&comp, &reference, DType::F32, &mut out).unwrap();
        assert_eq!(out, raw);
    }

    /// `n` words (f32, or bf16: the top halves) near 0 with one outlier at word 100, between
    /// the encoder's first two sample runs (words 0..64, 2048..2112), and the same words
    /// moved by ~0.1%: (reference, raw).
    fn outlier_pair(n: usize, seed: u64, dtype: DType) -> (Vec<u8>, Vec<u8>) {
        let mut rng = Lcg(seed);
        let mut base: Vec<f32> = (0..n).map(|_| rng.centered() * 0.05).collect();
        base[100] = 3.0e4;
        let close: Vec<f32> = base
            .iter()
            .map(|v| v * (1.0 + 1e-3 * rng.centered()))
            .collect();
        let bytes = |v: &[f32]| -> Vec<u8> {
            match dtype {
                DType::F32 => v.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => v
                    .iter()
                    .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                    .collect(),
            }
        };
        (bytes(&base), bytes(&close))
    }

    /// A reference whose largest exponent lies between the encoder's sample runs: the
    /// chunk codes under the sampled base (kind 5) and stores the largest; it round-trips
    /// (32-bit words in the fused decoder, 16-bit ones in two passes) and hashes both
    /// inputs; a reference with another largest exponent, or a chunk whose largest is not
    /// above its base, is refused.
    #[test]
    fn sampled_base_below_the_largest_writes_kind_5() {
        let n = 4 * choice::MIN_WORDS;
        for dtype in [DType::F32, DType::BF16] {
            let (reference, raw) = outlier_pair(n, 11, dtype);
            let comp = encode_chunk(&raw, &reference, dtype);
            assert_eq!(comp[0], KIND_TOKENS_BASED, "{dtype:?}");
            assert!(comp[3] < comp[4], "base {} largest {}", comp[3], comp[4]);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, &reference, dtype, &mut out).unwrap();
            assert_eq!(out, raw, "{dtype:?}");
            assert_hashed(&comp, &reference, None, dtype, &raw);
            assert_encoded_hashed(&raw, &reference, None, dtype, &comp);
            // Word 100 with a larger exponent (the outlier's top byte raised by one).
            let mut other = reference.clone();
            let top = 100 * dtype.size() + dtype.size() - 1;
            other[top] += 1;
            let r = decode_chunk(&comp, &other, dtype, &mut out);
            assert!(matches!(r, Err(Error::Corrupt(_))), "{dtype:?}: {r:?}");
            let mut bad = comp.clone();
            bad[4] = bad[3];
            let r = decode_chunk(&bad, &reference, dtype, &mut out);
            assert!(matches!(r, Err(Error::Corrupt(m)) if m.contains("sampled base")));
        }
    }
}

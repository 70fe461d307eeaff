//! rANS with several contexts: symbol `i` is coded under `tables[ctx[i]]`. Same stream
//! layout and lane rules as [`super::rans`]. [`DecodeModel`] decodes a whole stream at
//! once from each symbol's table slot (which callers may compute along with the context);
//! `decode_two_with` decodes two streams side by side, so that their table lookups
//! overlap.

use super::freq::FreqTable;
use super::rans::{fill_decode_table, EncSym, L};
use super::{LANES, SCALE_BITS};
use crate::container::bytes::{Reader, Writer};
use crate::error::{Error, Result};

/// Codes `symbols[i]` under `tables[ctx[i]]`. Panics if a symbol's context has no table
/// or its table lacks the symbol.
pub fn encode(symbols: &[u8], ctx: &[u8], tables: &[Option<FreqTable>], w: &mut Writer) {
    let mut codes = crate::scratch::words(0);
    codes.extend(
        symbols
            .iter()
            .zip(ctx)
            .map(|(&s, &c)| (c as u16) << 8 | s as u16),
    );
    encode_codes(&codes, 8, tables, w);
}

/// Codes symbol `code & (2^sym_bits - 1)` of each `code` under the table of context
/// `code >> sym_bits`: [`encode`] with symbol and context packed in one u16 (so the
/// caller can count and code them in one pass). Panics as [`encode`] does.
pub fn encode_codes(codes: &[u16], sym_bits: u32, tables: &[Option<FreqTable>], w: &mut Writer) {
    let stream = code_stream(codes, sym_bits, tables);
    stream.write(w.extend_zeroed(stream.byte_len()));
}

/// A coded stream, as [`encode_codes`] writes it: the lanes' final states, then the coded
/// words (held in scratch memory until written where they are kept).
pub struct Stream {
    x: [u32; LANES],
    words: crate::scratch::Scratch<u16>,
    /// The coded words are `words[pos..]`.
    pos: usize,
}

impl Stream {
    /// Its length in bytes (never 0: it holds the lanes' states).
    pub fn byte_len(&self) -> usize {
        4 * LANES + 4 + 2 * (self.words.len() - self.pos)
    }

    /// Writes its bytes into `out` (exactly [`Self::byte_len`] of them).
    pub fn write(&self, out: &mut [u8]) {
        let (states, rest) = out.split_at_mut(4 * LANES);
        for (d, s) in states.chunks_exact_mut(4).zip(self.x) {
            d.copy_from_slice(&s.to_le_bytes());
        }
        let coded = &self.words[self.pos..];
        rest[..4].copy_from_slice(&(coded.len() as u32).to_le_bytes());
        crate::container::bytes::u16s_into(coded, &mut rest[4..]);
    }
}

/// The coded stream of `codes` ([`encode_codes`]), not yet written anywhere.
pub fn code_stream(codes: &[u16], sym_bits: u32, tables: &[Option<FreqTable>]) -> Stream {
    let bits = scale_of(tables).expect("tables of one scale");
    let enc = enc_syms(tables, sym_bits);
    let n = codes.len();
    // Only the words below `pos` that the coder wrote are read.
    let mut words = crate::scratch::words_dirty(n + 8);
    let mut pos = words.len();
    let mut x = [L; LANES];
    let full = n / LANES * LANES;
    for i in (full..n).rev() {
        put(&enc, codes[i], &mut x[i - full], &mut words, &mut pos);
    }
    encode_blocks(&mut x, &enc, bits, &codes[..full], &mut words, &mut pos);
    Stream { x, words, pos }
}

/// The scale (in bits) that every present table shares ([`SCALE_BITS`] when none is
/// present), or `None` when they differ.
fn scale_of(tables: &[Option<FreqTable>]) -> Option<u32> {
    let mut scales = tables.iter().flatten().map(FreqTable::scale_bits);
    let first = scales.next().unwrap_or(SCALE_BITS);
    scales.all(|b| b == first).then_some(first)
}

/// Encoder constants of every (context, symbol) code; a missing table or symbol gets the
/// default (zero) constants, which [`put`] and the AVX2 encoder refuse.
fn enc_syms(tables: &[Option<FreqTable>], sym_bits: u32) -> Vec<EncSym> {
    let per = 1usize << sym_bits;
    let mut enc = vec![EncSym::default(); tables.len() << sym_bits];
    for (c, t) in tables.iter().enumerate() {
        if let Some(t) = t {
            let syms = EncSym::table(t);
            let k = per.min(256);
            enc[c * per..c * per + k].copy_from_slice(&syms[..k]);
        }
    }
    enc
}

#[inline(always)]
fn put(enc: &[EncSym], code: u16, x: &mut u32, words: &mut [u16], pos: &mut usize) {
    let e = &enc[code as usize];
    assert!(e.present(), "symbol without a table entry");
    e.put(x, words, pos);
}

/// Encodes whole blocks of 32 codes, last block first, under tables of total `2^bits`.
fn encode_blocks(
    x: &mut [u32; LANES],
    enc: &[EncSym],
    bits: u32,
    full: &[u16],
    words: &mut [u16],
    pos: &mut usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512_vbmi2() {
        // SAFETY: AVX-512 F/VL/BW/VBMI2 are present; each block stores its (at most 32)
        // words below `pos`, which one slot per symbol allows; codes are checked first.
        let missing = unsafe { simd::encode_blocks512(x, enc, bits, full, words, pos) };
        assert!(!missing, "symbol without a table entry");
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2_bmi2_popcnt() {
        // SAFETY: AVX2, BMI2 and POPCNT are present; stores stay inside `words` because `pos` >= 8 always
        // (8 slots of slack, at most one word per symbol); lookups are bounds-checked.
        let missing = unsafe { simd::encode_blocks(x, enc, bits, full, words, pos) };
        assert!(!missing, "symbol without a table entry");
        return;
    }
    let _ = bits;
    scalar_encode_blocks(x, enc, full, words, pos)
}

fn scalar_encode_blocks(
    x: &mut [u32; LANES],
    enc: &[EncSym],
    full: &[u16],
    words: &mut [u16],
    pos: &mut usize,
) {
    for block in full.chunks_exact(LANES).rev() {
        for l in (0..LANES).rev() {
            put(enc, block[l], &mut x[l], words, pos);
        }
    }
}

/// Decodes `out.len()` symbols coded by [`encode`] with the same `ctx` and tables; a
/// context without a table is an error.
pub fn decode(
    r: &mut Reader,
    ctx: &[u8],
    tables: &[Option<FreqTable>],
    out: &mut [u8],
) -> Result<()> {
    let model = DecodeModel::new(tables)?;
    let n = ctx.len().min(out.len());
    let mut slots = crate::scratch::bytes(n);
    for (s, &c) in slots.iter_mut().zip(ctx) {
        *s = model.slot(c).unwrap_or(u8::MAX);
    }
    model.decode(r, &slots, &mut out[..n])
}

/// The decode tables of a set of contexts, back to back (entry `slot << bits | x` for
/// tables of total `2^bits`, all of one scale).
/// Callers map each symbol's context to its table's slot ([`DecodeModel::slot`]) and
/// decode with [`DecodeModel::decode`].
pub struct DecodeModel {
    dt: Vec<u32>,
    /// The tables' scale.
    bits: u32,
    /// Slot of each context's table in `dt`, or `u8::MAX` when it has none.
    slot: [u8; 256],
    tables: u8,
}

/// Entries past the last decode table that its fill may write (see `fill_decode_table`).
const DT_SLACK: usize = 8;

impl DecodeModel {
    /// The model of `tables` (context `c` codes under `tables[c]`, if present).
    pub fn new(tables: &[Option<FreqTable>]) -> Result<DecodeModel> {
        if tables.len() > 256 {
            return Err(Error::Corrupt("too many contexts".into()));
        }
        let count = tables.iter().flatten().count();
        if count >= u8::MAX as usize {
            return Err(Error::Corrupt("too many context tables".into()));
        }
        let bits = scale_of(tables)
            .ok_or_else(|| Error::Corrupt("context tables of different scales".into()))?;
        // Slack behind the last table for the fill's whole groups (dropped after).
        let mut dt = vec![0u32; (count << bits) + DT_SLACK];
        let mut slot = [u8::MAX; 256];
        let mut k = 0;
        for (c, t) in tables.iter().enumerate() {
            if let Some(t) = t {
                // Each table's fill may run into the next table's slots, filled after it.
                let end = ((k + 1) << bits) + DT_SLACK;
                fill_decode_table(t, &mut dt[k << bits..end]);
                slot[c] = k as u8;
                k += 1;
            }
        }
        dt.truncate(count << bits);
        Ok(DecodeModel {
            dt,
            bits,
            slot,
            tables: count as u8,
        })
    }

    /// The slot of context `c`'s table, if it has one.
    pub fn slot(&self, c: u8) -> Option<u8> {
        Some(self.slot[c as usize]).filter(|&s| s != u8::MAX)
    }

    /// Decodes `out.len()` symbols, symbol `i` under the table in slot `slots[i]`, from
    /// the stream that follows in `r`. A slot without a table, an over-read, leftover
    /// words or a wrong final state is an error. Whole blocks of 32 symbols run without
    /// per-symbol checks (AVX2 when present) while a block's worth of words certainly
    /// remains; the tail is checked symbol by symbol.
    pub fn decode(&self, r: &mut Reader, slots: &[u8], out: &mut [u8]) -> Result<()> {
        if slots.len() != out.len() {
            return Err(Error::Corrupt(
                "context count differs from symbol count".into(),
            ));
        }
        if slots.iter().fold(0, |m, &s| m.max(s)) >= self.tables && !slots.is_empty() {
            return Err(Error::Corrupt(
                "symbol under a context without a table".into(),
            ));
        }
        let mut x = read_states(r)?;
        let count = r.u32()? as usize;
        let words = Words(r.take(count * 2)?);
        let full = out.len() / LANES * LANES;
        let dt = Dt {
            t: &self.dt,
            bits: self.bits,
        };
        let (done, mut p) = fast_blocks(&mut x, dt, &slots[..full], words, &mut out[..full]);
        for i in done..out.len() {
            out[i] = step_checked(&mut x[i % LANES], dt, slots[i], words, &mut p)?;
        }
        if x.iter().any(|&s| s != L) || p != words.len() {
            return Err(Error::Corrupt("rANS stream did not end cleanly".into()));
        }
        Ok(())
    }
}

/// The receiving end of [`DecodeModel::decode_with`]: it gives each symbol's table slot
/// and takes each decoded symbol, so that callers can compute slots from their own data
/// and use symbols at once, without arrays of either.
pub(crate) trait Fused {
    /// The table slot of symbol `i` (one past the last table or more is clamped to it;
    /// the sink reports slots it knows to be wrong itself).
    fn slot(&mut self, i: usize) -> u8;
    /// Symbol `i`, decoded by the checked (tail or scalar) path.
    fn take(&mut self, i: usize, sym: u8);
    /// The slots of symbols `at..at + 8` in 32-bit lanes (clamped as in [`Fused::slot`]).
    ///
    /// # Safety
    /// Called only with AVX2 present, for whole groups below the symbol count.
    #[cfg(target_arch = "x86_64")]
    unsafe fn slots8(&mut self, at: usize) -> std::arch::x86_64::__m256i;
    /// The decode-table entries (symbol in the low byte) of the block of symbols
    /// `at..at + 32`, 8 per vector in order: a whole block at once, so that the sink's
    /// per-block work (bounds, bookkeeping) is done once per 32 symbols.
    ///
    /// # Safety
    /// As [`Fused::slots8`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn take32(&mut self, at: usize, entries: [std::arch::x86_64::__m256i; 4]);
    /// [`Fused::slots8`] for symbols `at..at + 16`.
    ///
    /// # Safety
    /// Called only with AVX-512F present, for whole groups below the symbol count.
    #[cfg(target_arch = "x86_64")]
    unsafe fn slots16(&mut self, at: usize) -> std::arch::x86_64::__m512i;
    /// [`Fused::take8`] for symbols `at..at + 16`.
    ///
    /// # Safety
    /// As [`Fused::slots16`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn take16(&mut self, at: usize, entries: std::arch::x86_64::__m512i);
}

/// Which block loop [`DecodeModel::decode_with`] runs over whole blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocks {
    /// None: every symbol one by one (the checked path).
    Scalar,
    /// AVX2 groups of 8, where the CPU has AVX2, BMI2 and POPCNT (tests only: `Widest`
    /// takes it where AVX-512 is missing).
    #[cfg_attr(not(test), allow(dead_code))]
    Avx2,
    /// The widest the CPU has: AVX-512 groups of 16, else as `Avx2`.
    Widest,
}

impl DecodeModel {
    /// Decodes `n` symbols from the stream that follows in `r`, slots from `f` and symbols
    /// to `f` in order of position: whole blocks by the `blocks` loop (tests pick each to
    /// compare), the rest one by one. Errors as [`DecodeModel::decode`]; a model without
    /// tables is an error unless `n` is 0.
    pub(crate) fn decode_with<F: Fused>(
        &self,
        r: &mut Reader,
        n: usize,
        f: &mut F,
        blocks: Blocks,
    ) -> Result<()> {
        let open = self.open(r, n)?;
        self.finish(open, n, f, blocks)
    }

    /// Reads the lane states and the coded words of a stream of `n` symbols.
    fn open<'a>(&self, r: &mut Reader<'a>, n: usize) -> Result<Opened<'a>> {
        if self.tables == 0 && n > 0 {
            return Err(Error::Corrupt(
                "symbol under a context without a table".into(),
            ));
        }
        let x = read_states(r)?;
        let count = r.u32()? as usize;
        let words = Words(r.take(count * 2)?);
        Ok(Opened {
            x,
            words,
            p: 0,
            done: 0,
        })
    }

    /// The decode table view and the last slot of this model.
    fn dt(&self) -> (Dt<'_>, u8) {
        let dt = Dt {
            t: &self.dt,
            bits: self.bits,
        };
        (dt, self.tables.saturating_sub(1))
    }

    /// Decodes the symbols of `o` from where it stands to `n` (blocks, then one by one)
    /// and checks that the stream ends there.
    fn finish<F: Fused>(&self, mut o: Opened, n: usize, f: &mut F, blocks: Blocks) -> Result<()> {
        let (dt, last) = self.dt();
        let full = n / LANES * LANES;
        let rest = Words(&o.words.0[2 * o.p..]);
        let (mut done, mut used) =
            fused_blocks(&mut o.x, dt, last, rest, (o.done, full, blocks), f);
        // The stream's last words, fewer than a block may read: the blocks go on over a
        // copy padded with zeros for as long as they start within the real words (a valid
        // stream never takes a padding word; a corrupt one that does is an error).
        let left = rest.len() - used;
        if done < full && left < LANES {
            let mut pad = [0u8; 4 * LANES];
            pad[..2 * left].copy_from_slice(&rest.0[2 * used..]);
            let padded = Words(&pad[..2 * (left + LANES)]);
            let (d, u) = fused_blocks(&mut o.x, dt, last, padded, (done, full, blocks), f);
            if u > left {
                return Err(Error::Corrupt("rANS stream read past its end".into()));
            }
            (done, used) = (d, used + u);
        }
        let (x, words, mut p) = (&mut o.x, o.words, o.p + used);
        for i in done..n {
            let slot = f.slot(i).min(last);
            f.take(i, step_checked(&mut x[i % LANES], dt, slot, words, &mut p)?);
        }
        if x.iter().any(|&s| s != L) || p != words.len() {
            return Err(Error::Corrupt("rANS stream did not end cleanly".into()));
        }
        Ok(())
    }
}

/// [`DecodeModel::decode_with`] of two streams (model, reader, symbol count, sink each),
/// whole blocks of both decoded side by side (AVX-512: their table lookups overlap) while
/// both have some; each result is the one that stream gives alone.
pub(crate) fn decode_two_with<A: Fused, B: Fused>(
    (ma, ra, na, fa): (&DecodeModel, &mut Reader, usize, &mut A),
    (mb, rb, nb, fb): (&DecodeModel, &mut Reader, usize, &mut B),
    blocks: Blocks,
) -> [Result<()>; 2] {
    let (mut oa, mut ob) = (ma.open(ra, na), mb.open(rb, nb));
    #[cfg(target_arch = "x86_64")]
    if let (Ok(a), Ok(b), Blocks::Widest, true) = (&mut oa, &mut ob, blocks, super::avx512()) {
        let full = na.min(nb) / LANES * LANES;
        let (da, db) = (ma.dt(), mb.dt());
        // SAFETY: AVX-512F is present; slots are clamped to each model's last table, words
        // are read only while 32 remain in each stream, and the sinks are called for
        // whole groups below `full`, at most either's symbol count.
        unsafe { simd::fused_two512((a, da, fa), (b, db, fb), full) };
    }
    [
        oa.and_then(|o| ma.finish(o, na, fa, blocks)),
        ob.and_then(|o| mb.finish(o, nb, fb, blocks)),
    ]
}

/// A stream being decoded: lane states, its coded words, the words used and the symbols
/// done.
struct Opened<'a> {
    x: [u32; LANES],
    words: Words<'a>,
    p: usize,
    done: usize,
}

/// The `blocks` loop of [`DecodeModel::decode_with`] over symbols `from..full` (`full` a
/// multiple of 32), the stream's words from `words` on; returns (symbols done, words
/// used). Without the CPU features, none.
fn fused_blocks<F: Fused>(
    x: &mut [u32; LANES],
    dt: Dt,
    last: u8,
    words: Words,
    (from, full, blocks): (usize, usize, Blocks),
    f: &mut F,
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both): the CPU has the loop's features; slots are clamped to the last
        // table, words are read only while 32 remain, and `f` is called for whole groups
        // below `full`.
        if blocks == Blocks::Widest && super::avx512() {
            return unsafe { simd::fused_blocks512(x, dt, last, words, (from, full), f) };
        }
        if blocks != Blocks::Scalar && super::avx2_bmi2_popcnt() {
            return unsafe { simd::fused_blocks(x, dt, last, words, (from, full), f) };
        }
    }
    let _ = (x, dt, last, words, full, blocks, f);
    (from, 0)
}

/// Moves `r` past a stream written by [`encode`] without decoding it (so that a caller
/// can reach what follows the stream first).
pub fn skip_stream(r: &mut Reader) -> Result<()> {
    r.take(4 * LANES)?;
    let count = r.u32()? as usize;
    r.take(2 * count)?;
    Ok(())
}

/// The 32 initial lane states, each checked to lie in `[L, 2^31)`.
fn read_states(r: &mut Reader) -> Result<[u32; LANES]> {
    let mut x = [0u32; LANES];
    for s in x.iter_mut() {
        *s = r.u32()?;
        if !(L..1 << 31).contains(s) {
            return Err(Error::Corrupt(format!("rANS state {s:#x} out of range")));
        }
    }
    Ok(x)
}

/// The coded words, viewed in place as little-endian u16s.
#[derive(Clone, Copy)]
struct Words<'a>(&'a [u8]);

impl Words<'_> {
    fn len(&self) -> usize {
        self.0.len() / 2
    }
}

/// A model's decode tables and their scale.
#[derive(Clone, Copy)]
struct Dt<'a> {
    t: &'a [u32],
    bits: u32,
}

impl Dt<'_> {
    /// The entry of state `x` in the table in slot `slot`.
    #[inline(always)]
    fn entry(&self, slot: u8, x: u32) -> u32 {
        self.t[(slot as usize) << self.bits | (x & ((1 << self.bits) - 1)) as usize]
    }

    /// The state after the symbol of entry `e` (before renormalization).
    #[inline(always)]
    fn next(&self, e: u32, x: u32) -> u32 {
        (e >> 8 & 0xfff) * (x >> self.bits) + (e >> 20)
    }
}

/// One decode step under table `slot` that checks the stream's bounds.
#[inline(always)]
fn step_checked(x: &mut u32, dt: Dt, slot: u8, words: Words, p: &mut usize) -> Result<u8> {
    let e = dt.entry(slot, *x);
    let mut v = dt.next(e, *x);
    if v < L {
        let b = words
            .0
            .get(2 * *p..2 * *p + 2)
            .ok_or_else(|| Error::Corrupt("rANS stream read past its end".into()))?;
        v = (v << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
        *p += 1;
    }
    *x = v;
    Ok(e as u8)
}

/// Decodes whole blocks of 32 while at least 32 words remain; returns (symbols done, word
/// position). `slots` (valid slots of `dt`) and `out` have the same length, a multiple of 32.
fn fast_blocks(
    x: &mut [u32; LANES],
    dt: Dt,
    slots: &[u8],
    words: Words,
    out: &mut [u8],
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; every slot indexes a whole table of `dt` (checked by
        // `DecodeModel::decode`), words are read only while 32 remain, and `out` and
        // `slots` are read and written by whole blocks within their common length.
        return unsafe { simd::fast_blocks(x, dt, slots, words, out) };
    }
    scalar_fast_blocks(x, dt, slots, words, out)
}

fn scalar_fast_blocks(
    x: &mut [u32; LANES],
    dt: Dt,
    slots: &[u8],
    words: Words,
    out: &mut [u8],
) -> (usize, usize) {
    let mut p = 0;
    let mut done = 0;
    for (blk, sl) in out.chunks_exact_mut(LANES).zip(slots.chunks_exact(LANES)) {
        if words.len() - p < LANES {
            break;
        }
        let w = &words.0[2 * p..2 * p + 2 * LANES];
        let mut k = 0;
        for l in 0..LANES {
            let e = dt.entry(sl[l], x[l]);
            let v = dt.next(e, x[l]);
            let need = v < L;
            let wd = u16::from_le_bytes([w[2 * k], w[2 * k + 1]]) as u32;
            x[l] = if need { (v << 16) | wd } else { v };
            k += need as usize;
            blk[l] = e as u8;
        }
        p += k;
        done += LANES;
    }
    (done, p)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 block decoding, 8 lanes at a time: the table index adds each symbol's slot
    //! to the state's low bits; otherwise the same steps as `rans`'s AVX2 decoder.
    use super::{Dt, EncSym, Fused, Opened, Words, LANES};
    use crate::entropy::rans::simd::{
        advance16, decode_blocks, decode_blocks_with, encode_blocks512_with, encode_blocks_with,
        lookup8x2, pack,
    };
    use std::arch::x86_64::*;

    /// Whether a code of `full` is `n` or more (beyond the tables): a branch-free maximum
    /// (it vectorizes; `any` would test code by code).
    #[inline(always)]
    fn beyond(full: &[u16], n: usize) -> bool {
        !full.is_empty() && full.iter().fold(0, |m, &c| m.max(c)) as usize >= n
    }

    /// AVX2 twin of the scalar block loop in [`super::encode_blocks`]; returns whether a
    /// code had no table entry (its stream is then garbage).
    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    pub unsafe fn encode_blocks(
        x: &mut [u32; LANES],
        enc: &[EncSym],
        bits: u32,
        full: &[u16],
        words: &mut [u16],
        pos: &mut usize,
    ) -> bool {
        // A power-of-two table, so that masked codes need no bounds checks (every code
        // is checked to be in range first).
        let size = enc.len().next_power_of_two();
        let mask = size - 1;
        if beyond(full, enc.len()) {
            return true;
        }
        let mut packed = vec![0u64; size];
        for (p, e) in packed.iter_mut().zip(enc) {
            *p = pack(e);
        }
        let low12 = _mm256_set1_epi32(0xfff);
        let mut missing = _mm256_setzero_si256();
        encode_blocks_with(
            x,
            full.len() / LANES,
            words,
            pos,
            bits,
            #[inline(always)]
            |b, g| {
                let at = LANES * b + 8 * g;
                let codes: &[u16; 8] = full[at..at + 8].try_into().expect("8 codes");
                // SAFETY: masked codes are below `size`, the length of `packed`.
                let (info, rcp) = lookup8x2(|k| *packed.get_unchecked(codes[k] as usize & mask));
                let absent =
                    _mm256_cmpeq_epi32(_mm256_and_si256(info, low12), _mm256_setzero_si256());
                missing = _mm256_or_si256(missing, absent);
                (info, rcp)
            },
        );
        _mm256_movemask_epi8(missing) != 0
    }

    /// AVX-512 twin of [`encode_blocks`]: each code's constants gathered from two tables
    /// (its info and reciprocal halves); returns whether a code had no table entry.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi2")]
    pub unsafe fn encode_blocks512(
        x: &mut [u32; LANES],
        enc: &[EncSym],
        bits: u32,
        full: &[u16],
        words: &mut [u16],
        pos: &mut usize,
    ) -> bool {
        if beyond(full, enc.len()) {
            return true;
        }
        let info: Vec<u32> = enc.iter().map(|e| pack(e) as u32).collect();
        let rcp: Vec<u32> = enc.iter().map(|e| (pack(e) >> 32) as u32).collect();
        let low12 = _mm512_set1_epi32(0xfff);
        let mut missing: __mmask16 = 0;
        encode_blocks512_with(x, full.len() / LANES, words, pos, (bits, (0, 0)), |at| {
            // Codes are below `enc.len()` (checked above), the length of both tables.
            let c =
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(full.as_ptr().add(at) as *const __m256i));
            let i = _mm512_i32gather_epi32::<4>(c, info.as_ptr() as *const i32);
            missing |= _mm512_testn_epi32_mask(i, low12);
            (
                i,
                _mm512_i32gather_epi32::<4>(c, rcp.as_ptr() as *const i32),
            )
        });
        missing != 0
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn fast_blocks(
        x: &mut [u32; LANES],
        dt: Dt,
        slots: &[u8],
        words: Words,
        out: &mut [u8],
    ) -> (usize, usize) {
        let mask = _mm256_set1_epi32((1 << dt.bits) - 1);
        let shift = _mm_cvtsi32_si128(dt.bits as i32);
        decode_blocks(x, words.0, out, dt.bits, |at, s| {
            let sl = _mm_loadl_epi64(slots.as_ptr().add(at) as *const __m128i);
            let base = _mm256_sll_epi32(_mm256_cvtepu8_epi32(sl), shift);
            let idx = _mm256_or_si256(base, _mm256_and_si256(s, mask));
            _mm256_i32gather_epi32::<4>(dt.t.as_ptr() as *const i32, idx)
        })
    }
    /// AVX2 block loop of `DecodeModel::decode_with` over symbols `from..full`: slots
    /// from `f`, clamped to `last`.
    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    pub unsafe fn fused_blocks<F: Fused>(
        x: &mut [u32; LANES],
        dt: Dt,
        last: u8,
        words: Words,
        (from, full): (usize, usize),
        f: &mut F,
    ) -> (usize, usize) {
        let mask = _mm256_set1_epi32((1 << dt.bits) - 1);
        let shift = _mm_cvtsi32_si128(dt.bits as i32);
        let last = _mm256_set1_epi32(last as i32);
        let (done, used) = decode_blocks_with(
            x,
            words.0,
            full - from,
            dt.bits,
            f,
            |f, at, s| {
                let slot = _mm256_min_epu32(f.slots8(from + at), last);
                let idx = _mm256_or_si256(_mm256_sll_epi32(slot, shift), _mm256_and_si256(s, mask));
                _mm256_i32gather_epi32::<4>(dt.t.as_ptr() as *const i32, idx)
            },
            |f, at, e| f.take32(from + at, e),
        );
        (from + done, used)
    }

    /// The decode-table index of 16 lanes in tables of `dt`: `(slot, state)` -> the slot
    /// (clamped to `last`) times the table size plus the state's low bits.
    #[inline(always)]
    unsafe fn index512(dt: Dt, last: u8) -> impl Fn(__m512i, __m512i) -> __m512i {
        let mask = _mm512_set1_epi32((1 << dt.bits) - 1);
        let shift = _mm512_set1_epi32(dt.bits as i32);
        let last = _mm512_set1_epi32(last as i32);
        move |slot, s| {
            let slot = _mm512_min_epu32(slot, last);
            _mm512_or_si512(_mm512_sllv_epi32(slot, shift), _mm512_and_si512(s, mask))
        }
    }

    /// AVX-512 twin of [`fused_blocks`]: the 32 lanes as two vectors of 16, the lanes
    /// that renormalize taking their words in lane order, as the AVX2 loop does.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fused_blocks512<F: Fused>(
        x: &mut [u32; LANES],
        dt: Dt,
        last: u8,
        words: Words,
        (from, full): (usize, usize),
        f: &mut F,
    ) -> (usize, usize) {
        let index = index512(dt, last);
        let shift = _mm512_set1_epi32(dt.bits as i32);
        let table = dt.t.as_ptr() as *const i32;
        let w = words.0;
        let mut a = _mm512_loadu_si512(x.as_ptr() as *const __m512i);
        let mut b = _mm512_loadu_si512(x.as_ptr().add(16) as *const __m512i);
        let (mut p, mut done) = (0usize, from);
        while done + LANES <= full && w.len() / 2 - p >= LANES {
            let ia = index(f.slots16(done), a);
            let ib = index(f.slots16(done + 16), b);
            let ea = _mm512_i32gather_epi32::<4>(ia, table);
            let eb = _mm512_i32gather_epi32::<4>(ib, table);
            advance16(&mut a, ea, shift, w.as_ptr().add(2 * p), &mut p);
            advance16(&mut b, eb, shift, w.as_ptr().add(2 * p), &mut p);
            f.take16(done, ea);
            f.take16(done + 16, eb);
            done += LANES;
        }
        _mm512_storeu_si512(x.as_mut_ptr() as *mut __m512i, a);
        _mm512_storeu_si512(x.as_mut_ptr().add(16) as *mut __m512i, b);
        (done, p)
    }

    /// [`fused_blocks512`] of two freshly opened streams side by side, a block of each
    /// per round (four table lookups in flight), over symbols `0..full` while both have
    /// 32 words left; leaves each stream's states and progress in its [`Opened`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fused_two512<A: Fused, B: Fused>(
        (oa, (dta, last_a), fa): (&mut Opened, (Dt, u8), &mut A),
        (ob, (dtb, last_b), fb): (&mut Opened, (Dt, u8), &mut B),
        full: usize,
    ) {
        let (ia, ib) = (index512(dta, last_a), index512(dtb, last_b));
        let (shift_a, shift_b) = (
            _mm512_set1_epi32(dta.bits as i32),
            _mm512_set1_epi32(dtb.bits as i32),
        );
        let (ta, tb) = (dta.t.as_ptr() as *const i32, dtb.t.as_ptr() as *const i32);
        debug_assert!(oa.p == 0 && oa.done == 0 && ob.p == 0 && ob.done == 0);
        let (wa, wb) = (oa.words.0, ob.words.0);
        let mut a0 = _mm512_loadu_si512(oa.x.as_ptr() as *const __m512i);
        let mut a1 = _mm512_loadu_si512(oa.x.as_ptr().add(16) as *const __m512i);
        let mut b0 = _mm512_loadu_si512(ob.x.as_ptr() as *const __m512i);
        let mut b1 = _mm512_loadu_si512(ob.x.as_ptr().add(16) as *const __m512i);
        let (mut pa, mut pb, mut done) = (0usize, 0usize, 0usize);
        while done + LANES <= full && wa.len() / 2 - pa >= LANES && wb.len() / 2 - pb >= LANES {
            let ea0 = _mm512_i32gather_epi32::<4>(ia(fa.slots16(done), a0), ta);
            let ea1 = _mm512_i32gather_epi32::<4>(ia(fa.slots16(done + 16), a1), ta);
            let eb0 = _mm512_i32gather_epi32::<4>(ib(fb.slots16(done), b0), tb);
            let eb1 = _mm512_i32gather_epi32::<4>(ib(fb.slots16(done + 16), b1), tb);
            advance16(&mut a0, ea0, shift_a, wa.as_ptr().add(2 * pa), &mut pa);
            advance16(&mut b0, eb0, shift_b, wb.as_ptr().add(2 * pb), &mut pb);
            advance16(&mut a1, ea1, shift_a, wa.as_ptr().add(2 * pa), &mut pa);
            advance16(&mut b1, eb1, shift_b, wb.as_ptr().add(2 * pb), &mut pb);
            fa.take16(done, ea0);
            fa.take16(done + 16, ea1);
            fb.take16(done, eb0);
            fb.take16(done + 16, eb1);
            done += LANES;
        }
        _mm512_storeu_si512(oa.x.as_mut_ptr() as *mut __m512i, a0);
        _mm512_storeu_si512(oa.x.as_mut_ptr().add(16) as *mut __m512i, a1);
        _mm512_storeu_si512(ob.x.as_mut_ptr() as *mut __m512i, b0);
        _mm512_storeu_si512(ob.x.as_mut_ptr().add(16) as *mut __m512i, b1);
        (oa.p, oa.done, ob.p, ob.done) = (pa, done, pb, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::freq::histogram;
    use crate::testing::Lcg;
    use proptest::prelude::*;

    /// The AVX2 and scalar block decoders agree symbol for symbol and state for state.
    #[test]
    fn simd_matches_scalar() {
        for bits in [12, 10, 9, 8] {
            simd_matches_scalar_at(bits);
        }
    }

    fn simd_matches_scalar_at(bits: u32) {
        let mut rng = Lcg(5);
        let mut next = || rng.next() >> 33;
        let n = 50_000;
        let ctx: Vec<u8> = (0..n).map(|_| (next() % 3) as u8).collect();
        let sym: Vec<u8> = ctx
            .iter()
            .map(|&c| c * 10 + (next().trailing_zeros() as u8).min(9))
            .collect();
        let tables: Vec<Option<FreqTable>> = (0..3u8)
            .map(|c| {
                let s: Vec<u8> = sym
                    .iter()
                    .zip(&ctx)
                    .filter(|p| *p.1 == c)
                    .map(|p| *p.0)
                    .collect();
                FreqTable::normalize_scaled(&histogram(&s), bits)
            })
            .collect();
        let mut w = Writer::default();
        encode(&sym, &ctx, &tables, &mut w);
        let buf = w.into_inner();
        let mut r = Reader::new(&buf);
        let x = read_states(&mut r).unwrap();
        let count = r.u32().unwrap() as usize;
        let words = Words(r.take(count * 2).unwrap());
        let model = DecodeModel::new(&tables).unwrap();
        let full = n / LANES * LANES;
        let (mut xa, mut xb) = (x, x);
        let (mut oa, mut ob) = (vec![0u8; full], vec![0u8; full]);
        let dt = Dt {
            t: &model.dt,
            bits: model.bits,
        };
        let ra = fast_blocks(&mut xa, dt, &ctx[..full], words, &mut oa);
        let rb = scalar_fast_blocks(&mut xb, dt, &ctx[..full], words, &mut ob);
        assert_eq!(ra, rb);
        assert_eq!(xa, xb);
        assert_eq!(oa, ob);
        assert_eq!(&oa[..ra.0], &sym[..ra.0]);
    }

    /// The AVX2 and scalar block encoders write the same words and end in the same states.
    #[test]
    fn simd_encoder_matches_scalar() {
        for bits in [12, 10, 9, 8] {
            simd_encoder_matches_scalar_at(bits);
        }
    }

    fn simd_encoder_matches_scalar_at(bits: u32) {
        let mut rng = Lcg(9);
        let mut next = || rng.next() >> 33;
        let codes: Vec<u16> = (0..40_000)
            .map(|_| ((next() % 3) << 7 | (next().trailing_zeros() as u64).min(20)) as u16)
            .collect();
        let tables: Vec<Option<FreqTable>> = (0..3u16)
            .map(|c| {
                let mut h = [0u32; 256];
                for &code in codes.iter().filter(|&&k| k >> 7 == c) {
                    h[(code & 127) as usize] += 1;
                }
                FreqTable::normalize_scaled(&h, bits)
            })
            .collect();
        let enc = enc_syms(&tables, 7);
        let cap = codes.len() + 8;
        let (mut wa, mut wb) = (vec![0u16; cap], vec![0u16; cap]);
        let (mut pa, mut pb) = (cap, cap);
        let (mut xa, mut xb) = ([L; LANES], [L; LANES]);
        encode_blocks(&mut xa, &enc, bits, &codes, &mut wa, &mut pa);
        scalar_encode_blocks(&mut xb, &enc, &codes, &mut wb, &mut pb);
        assert_eq!((pa, xa), (pb, xb));
        assert_eq!(&wa[pa..], &wb[pb..]);
        // Every kernel this CPU has, not only the one `encode_blocks` picks; and a code
        // without a table entry is reported by each.
        #[cfg(target_arch = "x86_64")]
        {
            type Kernel = unsafe fn(
                &mut [u32; LANES],
                &[EncSym],
                u32,
                &[u16],
                &mut [u16],
                &mut usize,
            ) -> bool;
            let kernels: [(bool, Kernel); 2] = [
                (crate::entropy::avx2_bmi2_popcnt(), simd::encode_blocks),
                (crate::entropy::avx512_vbmi2(), simd::encode_blocks512),
            ];
            let (mut beyond, mut absent) = (codes.clone(), codes.clone());
            beyond[777] = 3 << 7; // context 3 has no table
            absent[777] = 127; // symbol 127 is not in context 0's table
            for (_, kernel) in kernels.into_iter().filter(|k| k.0) {
                let (mut wc, mut pc, mut xc) = (vec![0u16; cap], cap, [L; LANES]);
                // SAFETY: the CPU has the kernel's features (filtered above).
                let missing = unsafe { kernel(&mut xc, &enc, bits, &codes, &mut wc, &mut pc) };
                assert!(!missing);
                assert_eq!((pc, xc, &wc[pc..]), (pb, xb, &wb[pb..]));
                for bad in [&beyond, &absent] {
                    let (mut wc, mut pc, mut xc) = (vec![0u16; cap], cap, [L; LANES]);
                    // SAFETY: as above.
                    assert!(unsafe { kernel(&mut xc, &enc, bits, bad, &mut wc, &mut pc) });
                }
            }
        }
    }

    proptest! {
        #[test]
        fn corrupt_streams_never_panic(pairs in proptest::collection::vec((0u8..2, 0u8..5), 1..2000),
                                       flip in any::<usize>(), cut in any::<usize>()) {
            let ctx: Vec<u8> = pairs.iter().map(|p| p.0).collect();
            let sym: Vec<u8> = pairs.iter().map(|p| p.1).collect();
            let t = FreqTable::normalize(&[1u32; 256]).unwrap();
            let tables = vec![Some(t.clone()), Some(t)];
            let mut w = Writer::default();
            encode(&sym, &ctx, &tables, &mut w);
            let mut buf = w.into_inner();
            let mut out = vec![0u8; sym.len()];
            let bit = flip % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            let _ = decode(&mut Reader::new(&buf), &ctx, &tables, &mut out);
            buf[bit / 8] ^= 1 << (bit % 8);
            let short = cut % buf.len();
            prop_assert!(decode(&mut Reader::new(&buf[..short]), &ctx, &tables, &mut out).is_err());
            // A context without a table is an error.
            prop_assert!(decode(&mut Reader::new(&buf), &ctx, &tables[..1], &mut out).is_err() || ctx.iter().all(|&c| c == 0));
        }

        #[test]
        fn context_roundtrip(pairs in proptest::collection::vec((0u8..3, 0u8..6), 0..3000),
                             bits in 8u32..13) {
            let ctx: Vec<u8> = pairs.iter().map(|p| p.0).collect();
            let sym: Vec<u8> = pairs.iter().map(|p| p.0 * 7 + p.1).collect();
            let mut tables = vec![None, None, None];
            for c in 0..3u8 {
                let s: Vec<u8> = sym.iter().zip(&ctx).filter(|(_, &k)| k == c).map(|(&s, _)| s).collect();
                let mut h = histogram(&s);
                if h.iter().filter(|&&v| v > 0).count() < 2 {
                    h[255] += 1; // keep every used context codable in this test
                    h[254] += 1;
                }
                tables[c as usize] = FreqTable::normalize_scaled(&h, bits);
            }
            let mut w = Writer::default();
            encode(&sym, &ctx, &tables, &mut w);
            let buf = w.into_inner();
            let mut out = vec![0u8; sym.len()];
            decode(&mut Reader::new(&buf), &ctx, &tables, &mut out).unwrap();
            prop_assert_eq!(out, sym);
        }
    }
}

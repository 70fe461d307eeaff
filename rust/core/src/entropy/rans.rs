//! A 32-lane interleaved rANS coder with 32-bit states and 16-bit renormalization.
//!
//! Symbol `i` of a stream is coded by lane `i % 32`. All lanes share one word stream: in
//! decode order (block of 32 symbols after block, lane 0 to 31 within a block) every lane
//! that needs a word takes the next one. A SIMD decoder serves 8 lanes at once with a
//! popcount and a shuffle, a GPU warp one lane per thread with a ballot and a prefix count,
//! and all of them read exactly the same bytes.
//!
//! Stream layout: 32 x u32 initial decoder states, u32 word count, then the u16 words (all
//! little-endian). States live in `[L, 2^31)` with `L = 2^15`, which keeps the encoder's
//! reciprocal division exact and needs at most one word per symbol.

use std::cell::{Cell, RefCell};

use super::freq::{presence, symbols, FreqTable};
use super::LANES;
use crate::container::bytes::{Reader, Writer};
use crate::error::{Error, Result};

/// Lower bound of the normalized state interval.
pub(crate) const L: u32 = 1 << 15;

/// A decode table: one entry per slot of the table's total `2^bits`, entry = symbol
/// (8 bits) | freq (12 bits) | slot - cum (12 bits).
pub(crate) struct DecodeTable {
    entries: Box<[u32]>,
    bits: u32,
}

impl DecodeTable {
    /// The table of `table`.
    fn new(table: &FreqTable) -> DecodeTable {
        let bits = table.scale_bits();
        let mut entries = vec![0u32; 1 << bits].into_boxed_slice();
        fill_decode_table(table, &mut entries);
        DecodeTable { entries, bits }
    }

    /// The slot mask: state & mask = slot.
    fn mask(&self) -> u32 {
        (1 << self.bits) - 1
    }
}

/// Per-symbol encoder constants: division by `freq` as a multiply and shift (Alverson's
/// method, as in ryg_rans), exact for states below 2^31.
#[derive(Clone, Copy, Default)]
pub(crate) struct EncSym {
    x_max: u32,
    rcp_freq: u32,
    bias: u32,
    cmpl_freq: u32,
    rcp_shift: u32,
    /// The symbol's frequency (0: absent from its table).
    freq: u32,
}

impl EncSym {
    /// Constants of a symbol at `start` with frequency `freq` in a table of total `2^bits`.
    fn new(start: u32, freq: u32, bits: u32) -> EncSym {
        let total = 1 << bits;
        let x_max = ((L >> bits) << 16) * freq;
        let cmpl_freq = total - freq;
        if freq < 2 {
            EncSym {
                x_max,
                rcp_freq: u32::MAX,
                bias: start + total - 1,
                cmpl_freq,
                rcp_shift: 0,
                freq,
            }
        } else {
            let mut shift = 0;
            while freq > (1u32 << shift) {
                shift += 1;
            }
            let rcp_freq = (1u64 << (shift + 31)).div_ceil(freq as u64) as u32;
            EncSym {
                x_max,
                rcp_freq,
                bias: start,
                cmpl_freq,
                rcp_shift: shift - 1,
                freq,
            }
        }
    }
}

thread_local! {
    /// Start and length of the bytes the next [`encode`] on this thread asks the cache for
    /// as it goes (see [`prefetching`]); empty when none.
    static AHEAD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// Per-thread word buffer of the encoder. It only grows and is never cleared: the
    /// encoder writes every slot it hands out before anything reads it.
    static WORDS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f`, during which the first [`encode`] on this thread also asks for `ahead` to be
/// loaded into the core's cache, a few lines per block of symbols. Meant for the input of
/// the next chunk: its first pass then reads it from cache, while the coder, which works
/// in cache, leaves the memory idle. A hint only (prefetches never fault): no result
/// depends on it.
pub fn prefetching<R>(ahead: &[u8], f: impl FnOnce() -> R) -> R {
    AHEAD.with(|a| a.set((ahead.as_ptr() as usize, ahead.len())));
    let r = f();
    AHEAD.with(|a| a.set((0, 0)));
    r
}

/// Codes `symbols` under `table` and appends the stream to `w`.
pub fn encode(symbols: &[u8], table: &FreqTable, w: &mut Writer) {
    let ahead = AHEAD.with(|a| a.replace((0, 0)));
    let syms = enc_table(table);
    let n = symbols.len();
    // Words are pushed back to front (the encoder runs in reverse decode order), so they
    // come out in decode order. 8 slots of slack: stores may land just below `pos`.
    let cap = n + 8;
    WORDS.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let words = &mut buf[..cap];
        let mut pos = cap;
        let mut x = [L; LANES];
        let full = n / LANES * LANES;
        for i in (full..n).rev() {
            put(
                &mut x[i - full],
                &syms[symbols[i] as usize],
                words,
                &mut pos,
            );
        }
        let bits = table.scale_bits();
        encode_blocks(
            &mut x,
            (&syms, bits),
            &symbols[..full],
            words,
            &mut pos,
            ahead,
        );
        for s in x {
            w.u32(s);
        }
        w.u32((cap - pos) as u32);
        w.u16s(&words[pos..]);
    });
}

fn enc_table(table: &FreqTable) -> [EncSym; 256] {
    EncSym::table(table)
}

impl EncSym {
    /// Encoder constants for every symbol of `table`.
    pub(crate) fn table(table: &FreqTable) -> [EncSym; 256] {
        let cum = table.cumulative();
        let bits = table.scale_bits();
        let mut syms = [EncSym::default(); 256];
        for s in 0..256 {
            if table.freq[s] > 0 {
                syms[s] = EncSym::new(cum[s], table.freq[s] as u32, bits);
            }
        }
        syms
    }

    /// Whether these are the constants of a symbol present in its table.
    pub(crate) fn present(&self) -> bool {
        self.x_max != 0
    }

    /// Encodes one symbol into state `x`, pushing a word below `pos` if it overflows.
    #[inline(always)]
    pub(crate) fn put(&self, x: &mut u32, words: &mut [u16], pos: &mut usize) {
        put(x, self, words, pos)
    }
}

/// Fills `t` (one entry per slot of `table`'s total) with its decode table (also for the
/// multi-context coders). Entries are written in order, 8 at a time while `t` has room
/// for 8 (the last group of a symbol runs into the next symbol's slots, which are written
/// next): `t` may extend past the table, and those slack entries get overwritten.
pub(crate) fn fill_decode_table(table: &FreqTable, t: &mut [u32]) {
    const GROUP: usize = 8;
    let mut start = 0usize;
    // The present symbols, in order, from a bit mask (most contexts hold few symbols).
    for s in symbols(&presence(&table.freq)) {
        let f = table.freq[s] as usize;
        let first = s as u32 | (f as u32) << 8;
        let mut entries: [u32; GROUP] = std::array::from_fn(|j| first | (j as u32) << 20);
        let mut i = 0;
        while i < f && start + i + GROUP <= t.len() {
            t[start + i..start + i + GROUP].copy_from_slice(&entries);
            entries = entries.map(|e| e + ((GROUP as u32) << 20));
            i += GROUP;
        }
        let i = i.min(f);
        for (k, e) in t[start + i..start + f].iter_mut().enumerate() {
            *e = first | ((i + k) as u32) << 20;
        }
        start += f;
    }
}

/// Encodes whole blocks of 32 symbols, last block first; the SIMD paths also prefetch the
/// bytes at `ahead` (start, length) as they go.
fn encode_blocks(
    x: &mut [u32; LANES],
    (syms, bits): (&[EncSym; 256], u32),
    full: &[u8],
    words: &mut [u16],
    pos: &mut usize,
    ahead: (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512_vbmi2() {
        // SAFETY: AVX-512 F/VL/BW/VBMI2 are present; each block stores its (at most 32)
        // words below `pos`, which the caller's slack of one word per symbol allows.
        return unsafe { simd::encode_blocks512(x, (syms, bits), full, words, pos, ahead) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2_bmi2_popcnt() {
        // SAFETY: AVX2, BMI1/2 and POPCNT are present; stores stay inside `words` because
        // `pos` >= 8 always (8 slots of slack, at most one word per symbol).
        return unsafe { simd::encode_blocks(x, (syms, bits), full, words, pos, ahead) };
    }
    let _ = (ahead, bits);
    scalar_encode_blocks(x, syms, full, words, pos)
}

fn scalar_encode_blocks(
    x: &mut [u32; LANES],
    syms: &[EncSym; 256],
    full: &[u8],
    words: &mut [u16],
    pos: &mut usize,
) {
    for block in full.chunks_exact(LANES).rev() {
        for l in (0..LANES).rev() {
            put(&mut x[l], &syms[block[l] as usize], words, pos);
        }
    }
}

#[inline(always)]
fn put(x: &mut u32, s: &EncSym, words: &mut [u16], pos: &mut usize) {
    // Branchless renormalization: the low word is always stored one below `pos` (there is
    // always room: at most one word per symbol plus one slot of slack), and `pos` only
    // moves when the state really overflows.
    let mut v = *x;
    let over = v >= s.x_max;
    words[*pos - 1] = v as u16;
    *pos -= over as usize;
    v = if over { v >> 16 } else { v };
    let q = (((v as u64 * s.rcp_freq as u64) >> 32) as u32) >> s.rcp_shift;
    *x = v + s.bias + q * s.cmpl_freq;
}

/// Decodes exactly `out.len()` symbols from the stream at `r` under `table`.
/// Every inconsistency (over-read, leftover words, wrong final state) is an error.
pub fn decode(r: &mut Reader, table: &FreqTable, out: &mut [u8]) -> Result<()> {
    Stream::open(r, table)?.decode(out)
}

/// Decodes two independent streams into `out_a` and `out_b`, interleaving their steps.
/// A stream's steps form one dependency chain (table lookup, multiply, renormalize, next
/// lookup) that leaves most of the core idle; the other stream's steps fill that time.
/// Each result is the one decoding that stream alone gives.
pub fn decode_two(
    a: Stream,
    out_a: &mut [u8],
    b: Stream,
    out_b: &mut [u8],
) -> (Result<()>, Result<()>) {
    let (mut a, mut b) = (a, b);
    let (ra, rb) = two_fast_blocks(&mut a, out_a, &mut b, out_b);
    (a.finish(out_a, ra), b.finish(out_b, rb))
}

/// A rANS stream ready to decode: its lanes' initial states, its words and the decode
/// table. Opening one reads (and checks) its header; decoding checks that it ends cleanly.
pub struct Stream<'a> {
    x: [u32; LANES],
    words: Words<'a>,
    dt: DecodeTable,
}

impl<'a> Stream<'a> {
    /// Reads the stream at `r` (states, word count, words), to be decoded under `table`.
    pub fn open(r: &mut Reader<'a>, table: &FreqTable) -> Result<Stream<'a>> {
        let mut x = [0u32; LANES];
        for s in x.iter_mut() {
            *s = r.u32()?;
            if !(L..1 << 31).contains(s) {
                return Err(Error::Corrupt(format!("rANS state {s:#x} out of range")));
            }
        }
        let count = r.u32()? as usize;
        let words = Words(r.take(count * 2)?);
        Ok(Stream {
            x,
            words,
            dt: DecodeTable::new(table),
        })
    }

    /// Decodes exactly `out.len()` symbols; see [`decode`].
    pub fn decode(mut self, out: &mut [u8]) -> Result<()> {
        self.finish(out, (0, 0))
    }

    /// Decodes `out[done..]`, the stream's words from `p` on, and checks the end state.
    fn finish(&mut self, out: &mut [u8], (done, p): (usize, usize)) -> Result<()> {
        let full = out.len() / LANES * LANES;
        let (mut b, mut p) = (done, p);
        if full > b {
            let rest = Words(&self.words.0[2 * p..]);
            let (d, at) = fast_blocks(&mut self.x, &self.dt, rest, &mut out[b..full]);
            b += d;
            p += at;
        }
        for i in b..out.len() {
            let l = i % LANES;
            out[i] = step_checked(&mut self.x[l], &self.dt, self.words, &mut p)?;
        }
        if self.x.iter().any(|&s| s != L) || p != self.words.len() {
            return Err(Error::Corrupt("rANS stream did not end cleanly".into()));
        }
        Ok(())
    }
}

/// Whole blocks of two streams decoded together while both have one (and its words);
/// returns (symbols done, words used) of each. Without AVX-512 nothing is done here: the
/// streams are then decoded one after the other.
fn two_fast_blocks(
    a: &mut Stream,
    out_a: &mut [u8],
    b: &mut Stream,
    out_b: &mut [u8],
) -> ((usize, usize), (usize, usize)) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        let fa = out_a.len() / LANES * LANES;
        let fb = out_b.len() / LANES * LANES;
        // SAFETY: AVX-512F is present; as `fast_blocks512`, the kernel reads each stream's
        // words only while 32 of them remain and writes both outputs in bounds.
        return unsafe {
            simd::two_blocks512(
                [&mut a.x, &mut b.x],
                [&a.dt, &b.dt],
                [a.words, b.words],
                [&mut out_a[..fa], &mut out_b[..fb]],
            )
        };
    }
    let _ = (a, out_a, b, out_b);
    ((0, 0), (0, 0))
}

/// The coded words, viewed in place as little-endian u16s.
#[derive(Clone, Copy)]
struct Words<'a>(&'a [u8]);

impl Words<'_> {
    fn len(&self) -> usize {
        self.0.len() / 2
    }
    #[inline(always)]
    fn get(&self, i: usize) -> Option<u16> {
        self.0
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline(always)]
    fn at(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.0[2 * i], self.0[2 * i + 1]])
    }
}

/// Decodes whole blocks while at least 32 words remain; returns (symbols done, word pos).
fn fast_blocks(
    x: &mut [u32; LANES],
    dt: &DecodeTable,
    words: Words,
    out: &mut [u8],
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: AVX-512F is present; the kernel reads `words` only below `words.len()`
        // (it stops while 32 words remain) and writes `out` in bounds.
        return unsafe { simd::fast_blocks512(x, dt, words, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2_bmi2_popcnt() {
        // SAFETY: AVX2, BMI1/2 and POPCNT are present; `simd::fast_blocks` reads `words`
        // only below `words.len()` (it stops while 32 words remain) and writes `out` in
        // bounds.
        return unsafe { simd::fast_blocks(x, dt, words, out) };
    }
    scalar_fast_blocks(x, dt, words, out)
}

fn scalar_fast_blocks(
    x: &mut [u32; LANES],
    dt: &DecodeTable,
    words: Words,
    out: &mut [u8],
) -> (usize, usize) {
    let mut p = 0;
    let mut done = 0;
    for blk in out.chunks_exact_mut(LANES) {
        if words.len() - p < LANES {
            break;
        }
        for l in 0..LANES {
            let e = dt.entries[(x[l] & dt.mask()) as usize];
            let v = (e >> 8 & 0xfff) * (x[l] >> dt.bits) + (e >> 20);
            let need = v < L;
            let w = words.at(p) as u32;
            x[l] = if need { (v << 16) | w } else { v };
            p += need as usize;
            blk[l] = e as u8;
        }
        done += LANES;
    }
    (done, p)
}

/// One decode step that checks the stream's bounds (tails and corrupt input).
fn step_checked(x: &mut u32, dt: &DecodeTable, words: Words, p: &mut usize) -> Result<u8> {
    let e = dt.entries[(*x & dt.mask()) as usize];
    let mut v = (e >> 8 & 0xfff) * (*x >> dt.bits) + (e >> 20);
    if v < L {
        let w = words
            .get(*p)
            .ok_or_else(|| Error::Corrupt("rANS stream read past its end".into()))?;
        v = (v << 16) | w as u32;
        *p += 1;
    }
    *x = v;
    Ok(e as u8)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    //! AVX2 decoding of 8 lanes at a time: table gather, multiply-add, and a shuffle that
    //! hands the next words of the shared stream to the lanes that need them, in lane order.
    use super::{DecodeTable, EncSym, Words, L, LANES};
    use std::arch::x86_64::*;

    /// For each 8-bit "needs a word" mask: lane j takes word index rank(j) (its position
    /// among the needing lanes); other lanes take an index whose word is ignored.
    const fn build_lut() -> [[u32; 8]; 256] {
        let mut lut = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut k = 0;
            let mut j = 0;
            while j < 8 {
                if m & (1 << j) != 0 {
                    lut[m][j] = k;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        lut
    }
    static LUT: [[u32; 8]; 256] = build_lut();

    /// For each 8-bit "emits a word" mask: a byte shuffle that moves the emitting lanes'
    /// u16 words, in lane order, to the top of a 16-byte vector (the rest is don't-care).
    const fn build_enc_lut() -> [[u8; 16]; 256] {
        let mut lut = [[0x80u8; 16]; 256];
        let mut m = 0;
        while m < 256 {
            let k = (m as u32).count_ones() as usize;
            let mut slot = 8 - k;
            let mut j = 0;
            while j < 8 {
                if m & (1 << j) != 0 {
                    lut[m][2 * slot] = 2 * j as u8;
                    lut[m][2 * slot + 1] = 2 * j as u8 + 1;
                    slot += 1;
                }
                j += 1;
            }
            m += 1;
        }
        lut
    }
    static ENC_LUT: [[u8; 16]; 256] = build_enc_lut();

    /// Eight (info, rcp) pairs by eight scalar 64-bit loads (`g(k)` is lane k's packed
    /// entry, see [`pack`]), split into two vectors in lane order. On the AMD cores
    /// measured, faster than `vpgatherdd` (~15%) and than two sets of 32-bit loads (~18%);
    /// the decoder's single gather is kept (faster there).
    #[inline(always)]
    pub(crate) unsafe fn lookup8x2(g: impl Fn(usize) -> u64) -> (__m256i, __m256i) {
        let g = |k: usize| g(k) as i64;
        let a = _mm256_setr_epi64x(g(0), g(1), g(2), g(3));
        let b = _mm256_setr_epi64x(g(4), g(5), g(6), g(7));
        let (af, bf) = (_mm256_castsi256_ps(a), _mm256_castsi256_ps(b));
        // Per 128-bit lane: [a0, a1, b0, b1] halves; then put the 64-bit pairs in order.
        let lo = _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(af, bf));
        let hi = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(af, bf));
        (
            _mm256_permute4x64_epi64::<0b11_01_10_00>(lo),
            _mm256_permute4x64_epi64::<0b11_01_10_00>(hi),
        )
    }

    /// A symbol's encoder constants packed for [`lookup8x2`]: `rcp_freq << 32 | bias << 16
    /// | rcp_shift << 12 | freq` (freq 0 for a symbol the table lacks).
    pub(crate) fn pack(e: &EncSym) -> u64 {
        let info = e.freq | (e.rcp_shift << 12) | (e.bias << 16);
        (e.rcp_freq as u64) << 32 | info as u64
    }

    /// Most cache lines [`Ahead`] asks for per block: a short stream (a small tensor)
    /// prefetches only part of a large next input rather than stall on it.
    const AHEAD_LINES: usize = 4;

    /// Prefetches of the bytes at `at..end` spread over the blocks of a coder: `per_block`
    /// cache lines at each call of [`Ahead::step`], into L2.
    struct Ahead {
        at: usize,
        end: usize,
        per_block: usize,
    }

    impl Ahead {
        /// The lines of `(start, len)` spread over `blocks` steps.
        fn new((start, len): (usize, usize), blocks: usize) -> Ahead {
            let lines = len.div_ceil(64);
            Ahead {
                at: start,
                end: start + len,
                per_block: lines.div_ceil(blocks.max(1)).min(AHEAD_LINES),
            }
        }

        /// Asks for the next `per_block` lines.
        #[inline(always)]
        fn step(&mut self) {
            for _ in 0..self.per_block {
                if self.at < self.end {
                    // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never
                    // faults, whatever the address.
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(self.at as *const i8) };
                    self.at += 64;
                }
            }
        }
    }

    /// AVX2 twin of `scalar_encode_blocks`: same words, same order, same final states.
    /// The bytes at `ahead` (start, length) are prefetched as it goes.
    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    pub unsafe fn encode_blocks(
        x: &mut [u32; LANES],
        (syms, bits): (&[EncSym; 256], u32),
        full: &[u8],
        words: &mut [u16],
        pos: &mut usize,
        ahead: (usize, usize),
    ) {
        let packed: [u64; 256] = std::array::from_fn(|s| pack(&syms[s]));
        let blocks = full.len() / LANES;
        let mut ahead = Ahead::new(ahead, blocks);
        encode_blocks_with(x, blocks, words, pos, bits, |b, g| {
            if g == 0 {
                ahead.step();
            }
            // One load of the group's 8 symbols; each lane's byte by shifting.
            let at = LANES * b + 8 * g;
            let s8 = u64::from_le_bytes(full[at..at + 8].try_into().expect("8 symbols"));
            lookup8x2(|k| packed[(s8 >> (8 * k)) as u8 as usize])
        })
    }

    /// AVX-512 twin of [`encode_blocks`] (same words, same order, same final states): the
    /// 32 lanes as two 16-lane vectors, each symbol's constants gathered from two tables,
    /// the overflowing lanes' words stored in lane order by `vpcompressw`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi2")]
    pub unsafe fn encode_blocks512(
        x: &mut [u32; LANES],
        (syms, bits): (&[EncSym; 256], u32),
        full: &[u8],
        words: &mut [u16],
        pos: &mut usize,
        ahead: (usize, usize),
    ) {
        let info: [u32; 256] = std::array::from_fn(|s| pack(&syms[s]) as u32);
        let rcp: [u32; 256] = std::array::from_fn(|s| (pack(&syms[s]) >> 32) as u32);
        let blocks = full.len() / LANES;
        encode_blocks512_with(x, blocks, words, pos, (bits, ahead), |at| {
            let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(full.as_ptr().add(at) as *const __m128i));
            (
                _mm512_i32gather_epi32::<4>(s, info.as_ptr() as *const i32),
                _mm512_i32gather_epi32::<4>(s, rcp.as_ptr() as *const i32),
            )
        });
    }

    /// Encodes `blocks` whole blocks of 32 symbols as [`encode_blocks_with`] does, 16
    /// lanes at a time: `lookup(at)` gives the (info, rcp) halves of the packed constants
    /// ([`pack`]) of the 16 symbols at `at..at + 16`, from tables of total `2^bits`.
    /// Words go below `pos` (one slot per symbol must be there). The bytes at `ahead`
    /// (start, length) are prefetched as it goes.
    #[inline(always)]
    pub(crate) unsafe fn encode_blocks512_with(
        x: &mut [u32; LANES],
        blocks: usize,
        words: &mut [u16],
        pos: &mut usize,
        (bits, ahead): (u32, (usize, usize)),
        mut lookup: impl FnMut(usize) -> (__m512i, __m512i),
    ) {
        let k = EncConsts512::new(bits);
        let mut ahead = Ahead::new(ahead, blocks);
        let mut a = _mm512_loadu_si512(x.as_ptr() as *const __m512i);
        let mut b = _mm512_loadu_si512(x.as_ptr().add(16) as *const __m512i);
        let mut p = *pos;
        let out = words.as_mut_ptr();
        for blk in (0..blocks).rev() {
            ahead.step();
            let eb = lookup(LANES * blk + 16);
            let ea = lookup(LANES * blk);
            let (nb, ob) = k.step(b, eb);
            let (na, oa) = k.step(a, ea);
            // Lanes 16..32 first: the stream is read back in lane order.
            for (v, over) in [(b, ob), (a, oa)] {
                p -= over.count_ones() as usize;
                let low = _mm512_cvtepi32_epi16(v);
                _mm256_mask_compressstoreu_epi16(out.add(p) as *mut i16, over, low);
            }
            (a, b) = (na, nb);
        }
        *pos = p;
        _mm512_storeu_si512(x.as_mut_ptr() as *mut __m512i, a);
        _mm512_storeu_si512(x.as_mut_ptr().add(16) as *mut __m512i, b);
    }

    /// [`EncConsts`] for 16 lanes (AVX-512).
    struct EncConsts512 {
        total: __m512i,
        xmax_shift: u32,
    }

    impl EncConsts512 {
        #[inline(always)]
        unsafe fn new(bits: u32) -> EncConsts512 {
            EncConsts512 {
                total: _mm512_set1_epi32(1 << bits),
                xmax_shift: 31 - bits,
            }
        }

        /// [`EncConsts::step`] on 16 lanes: the new states and the lanes that overflowed.
        #[inline(always)]
        unsafe fn step(
            &self,
            xv: __m512i,
            (info, rcp): (__m512i, __m512i),
        ) -> (__m512i, __mmask16) {
            let freq = _mm512_and_si512(info, _mm512_set1_epi32(0xfff));
            let shift = _mm512_and_si512(_mm512_srli_epi32::<12>(info), _mm512_set1_epi32(0xf));
            let bias = _mm512_srli_epi32::<16>(info);
            let xmax = _mm512_sllv_epi32(freq, _mm512_set1_epi32(self.xmax_shift as i32));
            let over = _mm512_cmpge_epu32_mask(xv, xmax);
            let v = _mm512_mask_srli_epi32::<16>(xv, over, xv);
            let even = _mm512_srli_epi64::<32>(_mm512_mul_epu32(v, rcp));
            let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(v), _mm512_srli_epi64::<32>(rcp));
            let q = _mm512_mask_blend_epi32(0xaaaa, even, odd);
            let q = _mm512_srlv_epi32(q, shift);
            let cmpl = _mm512_sub_epi32(self.total, freq);
            let next = _mm512_add_epi32(_mm512_add_epi32(v, bias), _mm512_mullo_epi32(q, cmpl));
            (next, over)
        }
    }

    /// Encodes `blocks` whole blocks of 32 symbols, last block first and lane 31 first
    /// within a block; `entries(b, g)` gives the packed constants ([`lookup8x2`]) of lanes
    /// `8g..8g + 8` of block `b`, from tables of total `2^bits` (called for the four groups
    /// of a block in any order). Words go below `pos` (8 slots of slack must be there).
    ///
    /// A block's four lookups come first and its four groups are then stepped side by
    /// side with the states in registers: each group's state chain (compare, multiplies,
    /// add) overlaps the others' instead of waiting on its own from the block before.
    #[inline(always)]
    pub(crate) unsafe fn encode_blocks_with(
        x: &mut [u32; LANES],
        blocks: usize,
        words: &mut [u16],
        pos: &mut usize,
        bits: u32,
        mut entries: impl FnMut(usize, usize) -> (__m256i, __m256i),
    ) {
        let k = EncConsts::new(bits);
        let ld = |g: usize| _mm256_loadu_si256(x.as_ptr().add(8 * g) as *const __m256i);
        let (mut s0, mut s1, mut s2, mut s3) = (ld(0), ld(1), ld(2), ld(3));
        let mut p = *pos;
        let out = words.as_mut_ptr();
        for b in (0..blocks).rev() {
            let e3 = entries(b, 3);
            let e2 = entries(b, 2);
            let e1 = entries(b, 1);
            let e0 = entries(b, 0);
            let (n3, m3) = k.step(s3, e3);
            let (n2, m2) = k.step(s2, e2);
            let (n1, m1) = k.step(s1, e1);
            let (n0, m0) = k.step(s0, e0);
            // Words in reverse decode order: lane 31's group first.
            emit_words(s3, m3, out, &mut p);
            emit_words(s2, m2, out, &mut p);
            emit_words(s1, m1, out, &mut p);
            emit_words(s0, m0, out, &mut p);
            (s0, s1, s2, s3) = (n0, n1, n2, n3);
        }
        *pos = p;
        for (g, s) in [s0, s1, s2, s3].into_iter().enumerate() {
            _mm256_storeu_si256(x.as_mut_ptr().add(8 * g) as *mut __m256i, s);
        }
    }

    /// The constants of one 8-lane encode step under tables of total `2^bits`.
    struct EncConsts {
        low12: __m256i,
        low4: __m256i,
        one: __m256i,
        total: __m256i,
        xmax_shift: __m128i,
    }

    impl EncConsts {
        #[inline(always)]
        unsafe fn new(bits: u32) -> EncConsts {
            EncConsts {
                low12: _mm256_set1_epi32(0xfff),
                low4: _mm256_set1_epi32(0xf),
                one: _mm256_set1_epi32(1),
                total: _mm256_set1_epi32(1 << bits),
                xmax_shift: _mm_cvtsi32_si128(31 - bits as i32),
            }
        }

        /// Encodes one symbol per lane (packed constants `(info, rcp)`, see [`pack`]) into
        /// the states `xv`: returns the new states and the lanes that overflowed (whose low
        /// 16 bits [`emit_words`] must store).
        #[inline(always)]
        unsafe fn step(&self, xv: __m256i, (info, rcp): (__m256i, __m256i)) -> (__m256i, __m256i) {
            let freq = _mm256_and_si256(info, self.low12);
            let shift = _mm256_and_si256(_mm256_srli_epi32::<12>(info), self.low4);
            let bias = _mm256_srli_epi32::<16>(info);
            let xmax = _mm256_sll_epi32(freq, self.xmax_shift);
            // x >= x_max  <=>  x > x_max - 1 (both below 2^31, so signed compare works)
            let over = _mm256_cmpgt_epi32(xv, _mm256_sub_epi32(xmax, self.one));
            let v = _mm256_blendv_epi8(xv, _mm256_srli_epi32::<16>(xv), over);
            let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(v, rcp));
            let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(v), _mm256_srli_epi64::<32>(rcp));
            let q = _mm256_blend_epi32::<0b1010_1010>(even, odd);
            let q = _mm256_srlv_epi32(q, shift);
            let cmpl = _mm256_sub_epi32(self.total, freq);
            let next = _mm256_add_epi32(_mm256_add_epi32(v, bias), _mm256_mullo_epi32(q, cmpl));
            (next, over)
        }
    }

    /// Stores the low 16 bits of the `over` lanes of `xv`, in lane order, just below `*p`
    /// (16 bytes are written below it) and moves `*p` down past them.
    #[inline(always)]
    unsafe fn emit_words(xv: __m256i, over: __m256i, out: *mut u16, p: &mut usize) {
        let m = _mm256_movemask_ps(_mm256_castsi256_ps(over)) as usize;
        let low = _mm256_and_si256(xv, _mm256_set1_epi32(0xffff));
        let packed = _mm256_packus_epi32(low, _mm256_setzero_si256());
        let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
        let lut = _mm_loadu_si128(ENC_LUT[m].as_ptr() as *const __m128i);
        let words = _mm_shuffle_epi8(_mm256_castsi256_si128(packed), lut);
        _mm_storeu_si128(out.add(*p - 8) as *mut __m128i, words);
        *p -= m.count_ones() as usize;
    }

    /// One decode step of 8 lanes from their decode-table entries `e` (tables of total
    /// `2^bits`, `bits` in the low lane of `scale`): the states `s` advance (each lane
    /// that needs a word takes the next one of the stream at `w`, in lane order; 8 words
    /// are read, so at least 8 must be there, and `p` moves past the words taken).
    #[inline(always)]
    unsafe fn advance8(s: &mut __m256i, e: __m256i, scale: __m128i, w: *const u8, p: &mut usize) {
        let freq = _mm256_and_si256(_mm256_srli_epi32::<8>(e), _mm256_set1_epi32(0xfff));
        let bias = _mm256_srli_epi32::<20>(e);
        let v = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(*s, scale)), bias);
        let need = _mm256_cmpgt_epi32(_mm256_set1_epi32(L as i32), v);
        let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
        // 8 words widened to u32 and permuted so each needing lane sees its own word.
        let wv = _mm256_cvtepu16_epi32(_mm_loadu_si128(w as *const __m128i));
        let idx = _mm256_loadu_si256(LUT[m].as_ptr() as *const __m256i);
        let renormed = _mm256_or_si256(
            _mm256_slli_epi32::<16>(v),
            _mm256_permutevar8x32_epi32(wv, idx),
        );
        *p += m.count_ones() as usize;
        *s = _mm256_blendv_epi8(v, renormed, need);
    }

    /// Stores the symbols (low bytes) of 8 decode-table entries at `o`.
    #[inline(always)]
    unsafe fn store_symbols8(e: __m256i, o: *mut u8) {
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let bytes = _mm256_shuffle_epi8(e, pick);
        let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes)) as u32;
        let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes)) as u32;
        std::ptr::write_unaligned(o as *mut u32, lo);
        std::ptr::write_unaligned(o.add(4) as *mut u32, hi);
    }

    /// Decodes whole blocks of 32 symbols into `out` while at least 32 of the u16 `words`
    /// remain; `entry(at, s)` gathers the decode-table entries (tables of total `2^bits`)
    /// of the 8 lanes with states `s` whose symbols go to `out[at..at + 8]`. Returns
    /// (symbols done, words used).
    #[inline(always)]
    pub(crate) unsafe fn decode_blocks(
        x: &mut [u32; LANES],
        words: &[u8],
        out: &mut [u8],
        bits: u32,
        entry: impl FnMut(usize, __m256i) -> __m256i,
    ) -> (usize, usize) {
        let n = out.len();
        let o = out.as_mut_ptr();
        let mut entry = entry;
        decode_blocks_with(
            x,
            words,
            n,
            bits,
            &mut (),
            |_, at, s| entry(at, s),
            |_, at, e| {
                for (g, e) in e.into_iter().enumerate() {
                    store_symbols8(e, o.add(at + 8 * g));
                }
            },
        )
    }

    /// [`decode_blocks`] for `n` symbols that hands each group's 8 decode-table entries
    /// (symbol in the low byte) to `take(state, at, entries)` instead of storing the
    /// symbols; `entry` and `take` share the caller's `state`.
    #[inline(always)]
    pub(crate) unsafe fn decode_blocks_with<T>(
        x: &mut [u32; LANES],
        words: &[u8],
        n: usize,
        bits: u32,
        state: &mut T,
        mut entry: impl FnMut(&mut T, usize, __m256i) -> __m256i,
        mut take: impl FnMut(&mut T, usize, [__m256i; 4]),
    ) -> (usize, usize) {
        let scale = _mm_cvtsi32_si128(bits as i32);
        let (mut p, mut done) = (0usize, 0usize);
        let mut st = [_mm256_setzero_si256(); 4];
        for g in 0..4 {
            st[g] = _mm256_loadu_si256(x.as_ptr().add(8 * g) as *const __m256i);
        }
        while done + LANES <= n && words.len() / 2 - p >= LANES {
            // All four lookups first (independent lanes overlap), then the state steps
            // and the symbols in lane order.
            let e: [__m256i; 4] = std::array::from_fn(|g| entry(state, done + 8 * g, st[g]));
            for g in 0..4 {
                advance8(&mut st[g], e[g], scale, words.as_ptr().add(2 * p), &mut p);
            }
            take(state, done, e);
            done += LANES;
        }
        for g in 0..4 {
            _mm256_storeu_si256(x.as_mut_ptr().add(8 * g) as *mut __m256i, st[g]);
        }
        (done, p)
    }

    /// One AVX-512 decode step of 16 lanes from their decode-table entries `e` (tables
    /// of total `2^bits`, `bits` in every lane of `shift`): as [`advance8`], the lanes
    /// that need a word taking the next ones of the stream at `w` in lane order
    /// (`vpexpandd`; 16 words are read).
    #[inline(always)]
    pub(crate) unsafe fn advance16(
        s: &mut __m512i,
        e: __m512i,
        shift: __m512i,
        w: *const u8,
        p: &mut usize,
    ) {
        let freq = _mm512_and_si512(_mm512_srli_epi32::<8>(e), _mm512_set1_epi32(0xfff));
        let bias = _mm512_srli_epi32::<20>(e);
        let v = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srlv_epi32(*s, shift)), bias);
        let need = _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(L as i32));
        let wv = _mm512_cvtepu16_epi32(_mm256_loadu_si256(w as *const __m256i));
        let taken = _mm512_maskz_expand_epi32(need, wv);
        *s = _mm512_mask_or_epi32(v, need, _mm512_slli_epi32::<16>(v), taken);
        *p += need.count_ones() as usize;
    }

    /// AVX-512 twin of [`fast_blocks`]: the 32 lanes as two vectors of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fast_blocks512(
        x: &mut [u32; LANES],
        dt: &DecodeTable,
        words: Words,
        out: &mut [u8],
    ) -> (usize, usize) {
        let (mask, shift) = table512(dt);
        let w = words.0;
        let mut a = _mm512_loadu_si512(x.as_ptr() as *const __m512i);
        let mut b = _mm512_loadu_si512(x.as_ptr().add(16) as *const __m512i);
        let (mut p, mut done) = (0usize, 0usize);
        let table = dt.entries.as_ptr() as *const i32;
        while done + LANES <= out.len() && w.len() / 2 - p >= LANES {
            let ea = _mm512_i32gather_epi32::<4>(_mm512_and_si512(a, mask), table);
            let eb = _mm512_i32gather_epi32::<4>(_mm512_and_si512(b, mask), table);
            advance16(&mut a, ea, shift, w.as_ptr().add(2 * p), &mut p);
            advance16(&mut b, eb, shift, w.as_ptr().add(2 * p), &mut p);
            let o = out.as_mut_ptr().add(done);
            _mm_storeu_si128(o as *mut __m128i, _mm512_cvtepi32_epi8(ea));
            _mm_storeu_si128(o.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(eb));
            done += LANES;
        }
        _mm512_storeu_si512(x.as_mut_ptr() as *mut __m512i, a);
        _mm512_storeu_si512(x.as_mut_ptr().add(16) as *mut __m512i, b);
        (done, p)
    }

    /// [`fast_blocks512`] on two streams at once, a block of each per round, while both
    /// have a whole block and 32 words left; returns (symbols done, words used) of each.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn two_blocks512(
        x: [&mut [u32; LANES]; 2],
        dt: [&DecodeTable; 2],
        words: [Words; 2],
        out: [&mut [u8]; 2],
    ) -> ((usize, usize), (usize, usize)) {
        let ((mask_a, shift_a), (mask_b, shift_b)) = (table512(dt[0]), table512(dt[1]));
        let [xa, xb] = x;
        let [oa, ob] = out;
        let (wa, wb) = (words[0].0, words[1].0);
        let (ta, tb) = (
            dt[0].entries.as_ptr() as *const i32,
            dt[1].entries.as_ptr() as *const i32,
        );
        let mut a0 = _mm512_loadu_si512(xa.as_ptr() as *const __m512i);
        let mut a1 = _mm512_loadu_si512(xa.as_ptr().add(16) as *const __m512i);
        let mut b0 = _mm512_loadu_si512(xb.as_ptr() as *const __m512i);
        let mut b1 = _mm512_loadu_si512(xb.as_ptr().add(16) as *const __m512i);
        let (mut pa, mut pb, mut done) = (0usize, 0usize, 0usize);
        while done + LANES <= oa.len().min(ob.len())
            && wa.len() / 2 - pa >= LANES
            && wb.len() / 2 - pb >= LANES
        {
            let ea0 = _mm512_i32gather_epi32::<4>(_mm512_and_si512(a0, mask_a), ta);
            let ea1 = _mm512_i32gather_epi32::<4>(_mm512_and_si512(a1, mask_a), ta);
            let eb0 = _mm512_i32gather_epi32::<4>(_mm512_and_si512(b0, mask_b), tb);
            let eb1 = _mm512_i32gather_epi32::<4>(_mm512_and_si512(b1, mask_b), tb);
            advance16(&mut a0, ea0, shift_a, wa.as_ptr().add(2 * pa), &mut pa);
            advance16(&mut b0, eb0, shift_b, wb.as_ptr().add(2 * pb), &mut pb);
            advance16(&mut a1, ea1, shift_a, wa.as_ptr().add(2 * pa), &mut pa);
            advance16(&mut b1, eb1, shift_b, wb.as_ptr().add(2 * pb), &mut pb);
            let (pa_out, pb_out) = (oa.as_mut_ptr().add(done), ob.as_mut_ptr().add(done));
            _mm_storeu_si128(pa_out as *mut __m128i, _mm512_cvtepi32_epi8(ea0));
            _mm_storeu_si128(pa_out.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(ea1));
            _mm_storeu_si128(pb_out as *mut __m128i, _mm512_cvtepi32_epi8(eb0));
            _mm_storeu_si128(pb_out.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(eb1));
            done += LANES;
        }
        _mm512_storeu_si512(xa.as_mut_ptr() as *mut __m512i, a0);
        _mm512_storeu_si512(xa.as_mut_ptr().add(16) as *mut __m512i, a1);
        _mm512_storeu_si512(xb.as_mut_ptr() as *mut __m512i, b0);
        _mm512_storeu_si512(xb.as_mut_ptr().add(16) as *mut __m512i, b1);
        ((done, pa), (done, pb))
    }

    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    pub(super) unsafe fn fast_blocks(
        x: &mut [u32; LANES],
        dt: &DecodeTable,
        words: Words,
        out: &mut [u8],
    ) -> (usize, usize) {
        let mask = _mm256_set1_epi32(dt.mask() as i32);
        let table = dt.entries.as_ptr() as *const i32;
        decode_blocks(x, words.0, out, dt.bits, |_, s| {
            _mm256_i32gather_epi32::<4>(table, _mm256_and_si256(s, mask))
        })
    }

    /// A table's slot mask and scale in every lane.
    #[inline(always)]
    unsafe fn table512(dt: &DecodeTable) -> (__m512i, __m512i) {
        (
            _mm512_set1_epi32(dt.mask() as i32),
            _mm512_set1_epi32(dt.bits as i32),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::freq::histogram;
    use crate::testing::Lcg;
    use proptest::prelude::*;

    proptest! {
        /// The decode table, filled in groups with and without slack behind it (and with
        /// stale entries there and in the table), is entry for entry the plain one.
        #[test]
        fn decode_tables_fill_every_entry(counts in proptest::collection::vec(
                                              prop_oneof![Just(0u32), 1u32..4, 1u32..5000], 256),
                                          bits in 8u32..=12, slack in 0usize..20) {
            let mut c = [0u32; 256];
            c.copy_from_slice(&counts);
            let Some(table) = FreqTable::normalize_scaled(&c, bits) else { return Ok(()) };
            let mut plain = Vec::new();
            for (s, &f) in table.freq.iter().enumerate() {
                plain.extend((0..f as u32).map(|i| s as u32 | (f as u32) << 8 | i << 20));
            }
            let mut t = vec![u32::MAX; (1 << bits) + slack];
            fill_decode_table(&table, &mut t);
            prop_assert_eq!(&t[..1 << bits], &plain[..]);
        }
    }

    fn roundtrip(data: &[u8]) {
        let Some(t) = FreqTable::normalize(&histogram(data)) else {
            return;
        };
        let mut w = Writer::default();
        encode(data, &t, &mut w);
        let buf = w.into_inner();
        let mut out = vec![0u8; data.len()];
        let mut r = Reader::new(&buf);
        decode(&mut r, &t, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.remaining(), 0);
    }

    /// The SIMD and scalar encoders must produce identical words and states, at every
    /// table scale.
    #[test]
    fn simd_encoder_matches_scalar() {
        for bits in crate::entropy::freq::WIDE_SCALES.rev().take(4) {
            encoders_agree(bits);
        }
    }

    fn encoders_agree(bits: u32) {
        let mut rng = Lcg(11);
        let data: Vec<u8> = (0..64_000)
            .map(|_| {
                let s = rng.next();
                ((s >> 33).trailing_zeros() as u8).min(30) * 3 + (s >> 62) as u8
            })
            .collect();
        let t = FreqTable::normalize_scaled(&histogram(&data), bits).unwrap();
        let syms = (&enc_table(&t), bits);
        let (mut dec, mut w) = (vec![0u8; data.len()], Writer::default());
        encode(&data, &t, &mut w);
        decode(&mut Reader::new(&w.into_inner()), &t, &mut dec).unwrap();
        assert_eq!(dec, data, "round trip at scale {bits}");
        let cap = data.len() + 8;
        let (mut wa, mut wb) = (vec![0u16; cap], vec![0u16; cap]);
        let (mut pa, mut pb) = (cap, cap);
        let (mut xa, mut xb) = ([L; LANES], [L; LANES]);
        let ahead = (data.as_ptr() as usize, data.len());
        encode_blocks(&mut xa, syms, &data, &mut wa, &mut pa, ahead);
        scalar_encode_blocks(&mut xb, syms.0, &data, &mut wb, &mut pb);
        assert_eq!(pa, pb);
        assert_eq!(xa, xb);
        assert_eq!(&wa[pa..], &wb[pb..]);
        // Every kernel this CPU has, not only the one `encode_blocks` picks.
        #[cfg(target_arch = "x86_64")]
        {
            let (mut wc, mut pc, mut xc) = (vec![0u16; cap], cap, [L; LANES]);
            if crate::entropy::avx2_bmi2_popcnt() {
                // SAFETY: the CPU has AVX2, BMI1/2 and POPCNT.
                unsafe { simd::encode_blocks(&mut xc, syms, &data, &mut wc, &mut pc, ahead) };
                assert_eq!((pc, xc, &wc[pc..]), (pb, xb, &wb[pb..]));
            }
            let (mut wc, mut pc, mut xc) = (vec![0u16; cap], cap, [L; LANES]);
            if crate::entropy::avx512_vbmi2() {
                // SAFETY: the CPU has AVX-512 F/VL/BW/VBMI2.
                unsafe { simd::encode_blocks512(&mut xc, syms, &data, &mut wc, &mut pc, ahead) };
                assert_eq!((pc, xc, &wc[pc..]), (pb, xb, &wb[pb..]));
            }
        }
    }

    /// The SIMD and scalar fast paths must agree symbol for symbol and state for state,
    /// at every table scale.
    #[test]
    fn simd_matches_scalar() {
        for bits in crate::entropy::freq::WIDE_SCALES.rev().take(4) {
            decoders_agree(bits);
        }
    }

    fn decoders_agree(bits: u32) {
        let mut rng = Lcg(7);
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                let s = rng.next();
                ((s >> 33).trailing_zeros() as u8).min(20) + (s >> 60) as u8
            })
            .collect();
        let t = FreqTable::normalize_scaled(&histogram(&data), bits).unwrap();
        let mut w = Writer::default();
        encode(&data, &t, &mut w);
        let buf = w.into_inner();
        let mut r = Reader::new(&buf);
        let mut x = [0u32; LANES];
        for s in x.iter_mut() {
            *s = r.u32().unwrap();
        }
        let count = r.u32().unwrap() as usize;
        let words = Words(r.take(count * 2).unwrap());
        let dt = DecodeTable::new(&t);
        let full = data.len() / LANES * LANES;
        let (mut xa, mut xb) = (x, x);
        let (mut oa, mut ob) = (vec![0u8; full], vec![0u8; full]);
        let ra = fast_blocks(&mut xa, &dt, words, &mut oa);
        let rb = scalar_fast_blocks(&mut xb, &dt, words, &mut ob);
        assert_eq!(ra, rb);
        assert_eq!(xa, xb);
        assert_eq!(oa, ob);
        assert_eq!(&oa[..ra.0], &data[..ra.0]);
        // Every kernel this CPU has, not only the one `fast_blocks` picks.
        #[cfg(target_arch = "x86_64")]
        {
            let kernels: [(bool, SimdBlocks); 2] = [
                (crate::entropy::avx2_bmi2_popcnt(), simd::fast_blocks),
                (crate::entropy::avx512(), simd::fast_blocks512),
            ];
            for (_, kernel) in kernels.into_iter().filter(|k| k.0) {
                let (mut xc, mut oc) = (x, vec![0u8; full]);
                // SAFETY: the CPU has the kernel's features (filtered above).
                let rc = unsafe { kernel(&mut xc, &dt, words, &mut oc) };
                assert_eq!((rc, xc, &oc), (rb, xb, &ob));
            }
        }
    }

    /// An AVX2 or AVX-512 block decoder.
    #[cfg(target_arch = "x86_64")]
    type SimdBlocks =
        unsafe fn(&mut [u32; LANES], &DecodeTable, Words, &mut [u8]) -> (usize, usize);

    /// A coded stream of `n` skewed symbols, its table and the symbols.
    fn coded(n: usize, seed: u64) -> (Vec<u8>, FreqTable, Vec<u8>) {
        let mut rng = Lcg(seed);
        let mut data: Vec<u8> = (0..n)
            .map(|_| ((rng.next() >> 33).trailing_zeros() as u8).min(20))
            .collect();
        data.extend([0, 1]);
        let t = FreqTable::normalize(&histogram(&data)).unwrap();
        let mut w = Writer::default();
        encode(&data, &t, &mut w);
        (w.into_inner(), t, data)
    }

    proptest! {
        /// Two streams decoded together give what each gives alone, damaged or not.
        #[test]
        fn two_streams_decode_as_each_alone(na in 0usize..5000, nb in 0usize..5000,
                                            seed in any::<u64>(), flip in any::<Option<usize>>()) {
            let (mut ba, ta, da) = coded(na, seed);
            let (bb, tb, db) = coded(nb, !seed);
            if let Some(f) = flip {
                let bit = f % (ba.len() * 8);
                ba[bit / 8] ^= 1 << (bit % 8);
            }
            let (mut oa, mut ob) = (vec![0u8; da.len()], vec![0u8; db.len()]);
            let mut ra = Reader::new(&ba);
            let sa = Stream::open(&mut ra, &ta);
            prop_assume!(sa.is_ok());
            let sb = Stream::open(&mut Reader::new(&bb), &tb).unwrap();
            let (ea, eb) = decode_two(sa.unwrap(), &mut oa, sb, &mut ob);
            let mut alone = vec![0u8; da.len()];
            let ea1 = decode(&mut Reader::new(&ba), &ta, &mut alone);
            prop_assert_eq!(format!("{ea:?}"), format!("{ea1:?}"));
            if ea.is_ok() {
                prop_assert_eq!(&oa, &alone);
            }
            prop_assert!(eb.is_ok());
            prop_assert_eq!(ob, db);
            if flip.is_none() {
                prop_assert_eq!(oa, da);
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip_any(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            roundtrip(&data);
        }

        #[test]
        fn roundtrip_skewed(data in proptest::collection::vec(
            prop_oneof![8 => Just(0u8), 1 => any::<u8>()], 0..5000)) {
            roundtrip(&data);
        }

        #[test]
        fn corrupt_streams_never_panic(data in proptest::collection::vec(0u8..4, 1..2000),
                                       flip in any::<usize>()) {
            let t = FreqTable::normalize(&histogram(&data));
            prop_assume!(t.is_some());
            let t = t.unwrap();
            let mut w = Writer::default();
            encode(&data, &t, &mut w);
            let mut buf = w.into_inner();
            let bit = flip % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            let mut out = vec![0u8; data.len()];
            let _ = decode(&mut Reader::new(&buf), &t, &mut out);
        }
    }

    #[test]
    fn skewed_large_is_near_entropy() {
        // Geometric-ish distribution over 40 symbols, like a float exponent plane.
        let mut data = Vec::new();
        let mut rng = Lcg(12345);
        for _ in 0..200_000 {
            let z = (rng.next() >> 33).trailing_zeros().min(39) as u8;
            data.push(100 + z);
        }
        let h = histogram(&data);
        let n = data.len() as f64;
        let entropy: f64 = h
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f64) * (c as f64 / n).log2())
            .sum();
        let t = FreqTable::normalize(&h).unwrap();
        let mut w = Writer::default();
        encode(&data, &t, &mut w);
        let coded = w.into_inner().len() as f64 * 8.0;
        assert!(
            coded < entropy * 1.01 + 4096.0,
            "coded {coded} bits vs entropy {entropy}"
        );
        roundtrip(&data);
    }
}

//! AVX2 kernels for 32-bit words (fp32, int32, the halves of complex64), 8 or 32 words
//! at a time. Callers check for AVX2 and keep scalar loops for the rest.

use super::encode::{BlockHashes, SYM_BITS};
use super::simd512::side_codes16;
use super::CONTEXTS;
use crate::entropy::bits::{BitWriter, WideBits};
use crate::pool::Buffer;
use std::arch::x86_64::*;

/// Eight residuals' raw bits: lane j's 32 bits starting `rel[j]` (< 256 - 32) bits after
/// `base`, from two unaligned loads and two dword permutes (no gathers). At least 40 bytes
/// must be readable from `base`.
#[inline(always)]
unsafe fn window_bits(base: *const u8, rel: __m256i) -> __m256i {
    let d = _mm256_srli_epi32::<5>(rel);
    let sh = _mm256_and_si256(rel, _mm256_set1_epi32(31));
    let lo = _mm256_loadu_si256(base as *const __m256i);
    let hi = _mm256_loadu_si256(base.add(4) as *const __m256i);
    let lo = _mm256_permutevar8x32_epi32(lo, d);
    let hi = _mm256_permutevar8x32_epi32(hi, d);
    // (hi:lo) >> sh in 32-bit lanes: hi << (32 - sh) as (hi << 1) << (31 - sh), so that
    // sh = 0 gives 0 with every count below 32 (a count the compiler cannot bound costs
    // a compare and a blend per shift on AVX2).
    let up = _mm256_sllv_epi32(
        _mm256_slli_epi32::<1>(hi),
        _mm256_xor_si256(sh, _mm256_set1_epi32(31)),
    );
    _mm256_or_si256(_mm256_srlv_epi32(lo, sh), up)
}

/// Inclusive prefix sum of 8 u32 lanes.
#[inline(always)]
unsafe fn prefix_sum(k: __m256i) -> __m256i {
    let s = _mm256_add_epi32(k, _mm256_slli_si256::<4>(k));
    let s = _mm256_add_epi32(s, _mm256_slli_si256::<8>(s));
    let carry = _mm256_shuffle_epi32::<0xff>(_mm256_permute2x128_si256::<0x08>(s, s));
    _mm256_add_epi32(s, carry)
}

/// Order-preserving image of 8 float words (see `ord`).
#[inline(always)]
unsafe fn ord(w: __m256i, top: __m256i) -> __m256i {
    _mm256_xor_si256(w, _mm256_or_si256(_mm256_srai_epi32::<31>(w), top))
}

/// Inverse of [`ord`].
#[inline(always)]
unsafe fn unord(o: __m256i, top: __m256i) -> __m256i {
    let flip = _mm256_xor_si256(_mm256_srai_epi32::<31>(o), _mm256_set1_epi32(-1));
    _mm256_xor_si256(o, _mm256_or_si256(flip, top))
}

/// The raw bits of 8 residuals: lane j's `k[j]` bits, packed one after another from bit
/// `shift` (< 8) of `src` (40 bytes readable there); returns them and their total.
#[inline(always)]
unsafe fn raw8(k: __m256i, src: *const u8, shift: usize) -> (__m256i, usize) {
    let incl = prefix_sum(k);
    let rel = _mm256_add_epi32(_mm256_sub_epi32(incl, k), _mm256_set1_epi32(shift as i32));
    let raw = window_bits(src, rel);
    // k <= 31 (callers' words have at most 31 raw bits): the mask tells the compiler.
    let k31 = _mm256_and_si256(k, _mm256_set1_epi32(31));
    let low = _mm256_andnot_si256(_mm256_sllv_epi32(_mm256_set1_epi32(-1), k31), raw);
    (low, _mm256_extract_epi32::<7>(incl) as u32 as usize)
}

/// The words of 8 zigzagged residuals `z` against reference words `r` and the chunk
/// offset `off` (all lanes).
#[inline(always)]
unsafe fn word8(z: __m256i, r: __m256i, off: __m256i, float: bool) -> __m256i {
    let neg = _mm256_sub_epi32(
        _mm256_setzero_si256(),
        _mm256_and_si256(z, _mm256_set1_epi32(1)),
    );
    word8_split(_mm256_srli_epi32::<1>(z), neg, r, off, float)
}

/// [`word8`] of residuals given as `z >> 1` and `-(z & 1)` (all ones where the
/// difference is negative), where a caller has them without building `z`.
#[inline(always)]
unsafe fn word8_split(
    half: __m256i,
    neg: __m256i,
    r: __m256i,
    off: __m256i,
    float: bool,
) -> __m256i {
    let d = _mm256_xor_si256(half, neg);
    if float {
        let top = _mm256_set1_epi32(i32::MIN);
        unord(_mm256_add_epi32(_mm256_add_epi32(ord(r, top), off), d), top)
    } else {
        _mm256_add_epi32(_mm256_add_epi32(r, off), d)
    }
}

/// Rebuilds 8 32-bit words from their residual lengths `n` (32-bit lanes, each at most
/// 32), their raw bits from bit `shift` (< 8) of `src` (40 bytes readable there), their
/// reference words `r` and the chunk offset `off` (all lanes); returns the words and the
/// raw bits used.
#[inline(always)]
pub(super) unsafe fn rebuild8(
    n: __m256i,
    src: *const u8,
    shift: usize,
    r: __m256i,
    off: __m256i,
    float: bool,
) -> (__m256i, usize) {
    let one = _mm256_set1_epi32(1);
    let k = _mm256_sub_epi32(n, _mm256_min_epu32(n, one));
    let (low, used) = raw8(k, src, shift);
    // Leading 1 at bit n - 1 (none for n = 0): 2^31 >> (32 - n).
    let lead = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::MIN),
        _mm256_sub_epi32(_mm256_set1_epi32(32), n),
    );
    (word8(_mm256_or_si256(lead, low), r, off, float), used)
}

/// [`rebuild8`] from tokens `t` of `tb` top bits (both in 32-bit lanes, tokens at most
/// `word::max_token(32, tb)`) instead of lengths (see `word::untoken`).
#[inline(always)]
pub(super) unsafe fn rebuild8_tokens(
    t: __m256i,
    tb: __m256i,
    src: *const u8,
    shift: usize,
    (r, off): (__m256i, __m256i),
    float: bool,
) -> (__m256i, usize) {
    let one = _mm256_set1_epi32(1);
    // Every shift count below is at most 31 (tb <= 2, k <= 31); masking them with 31
    // tells the compiler so, which spares a compare and a blend per shift.
    let c31 = _mm256_set1_epi32(31);
    let tb = _mm256_and_si256(tb, c31);
    let tb1 = _mm256_add_epi32(tb, one);
    let q = _mm256_srlv_epi32(t, tb1);
    let q1 = _mm256_min_epu32(q, one);
    let k = _mm256_sub_epi32(q, q1);
    let (low, used) = raw8(k, src, shift);
    let hi = _mm256_andnot_si256(
        _mm256_sllv_epi32(_mm256_set1_epi32(-1), tb),
        _mm256_srli_epi32::<1>(t),
    );
    let m = _mm256_or_si256(hi, _mm256_sllv_epi32(q1, tb));
    // z = m << (k + 1) | low << 1 | (t & 1), handed over as z >> 1 and its sign.
    let half = _mm256_or_si256(_mm256_sllv_epi32(m, _mm256_and_si256(k, c31)), low);
    let neg = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_and_si256(t, one));
    (word8_split(half, neg, r, off, float), used)
}

/// Rebuilds 32-bit words from their residual lengths, the raw bits `data` (from bit
/// `pos`; zero-padded by at least 16 bytes) and the reference, 8 words at a time while
/// the bits of a whole group are certainly inside `data`. Returns (words done, bits used).
#[target_feature(enable = "avx2")]
pub unsafe fn rebuild32(
    lengths: &[u8],
    data: &[u8],
    pos: usize,
    reference: &[u8],
    out: &mut [u8],
    off: u32,
    float: bool,
) -> (usize, usize) {
    let offv = _mm256_set1_epi32(off as i32);
    let mut p = pos;
    let mut i = 0;
    // A group reads the 36 bytes from p / 8 (its last bit is 7 + 8 * 31 bits after p / 8).
    while i + 8 <= lengths.len() && p / 8 + 40 <= data.len() {
        let n = _mm256_cvtepu8_epi32(_mm_loadl_epi64(lengths.as_ptr().add(i) as *const __m128i));
        let r = _mm256_loadu_si256(reference.as_ptr().add(4 * i) as *const __m256i);
        let (x, used) = rebuild8(n, data.as_ptr().add(p / 8), p & 7, r, offv, float);
        _mm256_storeu_si256(out.as_mut_ptr().add(4 * i) as *mut __m256i, x);
        p += used;
        i += 8;
    }
    (i, p - pos)
}

/// Table slots of 8 float reference words `r` (32-bit lanes): `lut[min(e_max - top,
/// CONTEXTS - 1)]` with the context's byte of `lut` (16 bytes, repeated in both halves),
/// and the words' top bytes (exponents).
#[inline(always)]
pub(super) unsafe fn slots8(r: __m256i, emax: __m256i, lut: __m256i) -> (__m256i, __m256i) {
    let t = _mm256_and_si256(_mm256_srli_epi32::<23>(r), _mm256_set1_epi32(0xff));
    // Saturating 16-bit steps: each lane's high half stays 0 (0 - 0, min(0, 0)).
    let c = _mm256_min_epu16(
        _mm256_subs_epu16(emax, t),
        _mm256_set1_epi32(CONTEXTS as i32 - 1),
    );
    (lut_slots8(lut, c), t)
}

/// `lut[c]` of 8 context codes `c` (32-bit lanes, each below 16) with the slot map `lut`
/// (16 bytes, repeated in both halves).
#[inline(always)]
pub(super) unsafe fn lut_slots8(lut: __m256i, c: __m256i) -> __m256i {
    // Bytes 1..3 of each lane index past the table (0x80): they shuffle to 0.
    let idx = _mm256_or_si256(c, _mm256_set1_epi32(0x8080_8000u32 as i32));
    _mm256_shuffle_epi8(lut, idx)
}

/// The largest top byte (exponent) of 32-bit float words, 32 at a time in four
/// independent maxima (`reference.len()` a multiple of 128).
#[target_feature(enable = "avx2")]
pub unsafe fn max_top32(reference: &[u8]) -> u8 {
    let mut most = [_mm256_setzero_si256(); 4];
    for block in reference.chunks_exact(128) {
        for (g, m) in most.iter_mut().enumerate() {
            let w = _mm256_loadu_si256(block.as_ptr().add(32 * g) as *const __m256i);
            *m = _mm256_max_epu32(*m, _mm256_srli_epi32::<24>(_mm256_slli_epi32::<1>(w)));
        }
    }
    let m = _mm256_max_epu32(
        _mm256_max_epu32(most[0], most[1]),
        _mm256_max_epu32(most[2], most[3]),
    );
    let mut lanes = [0u32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, m);
    lanes.into_iter().fold(0, u32::max) as u8
}

/// Context codes of 32-bit float words: `lut[min(e_max - exponent, CONTEXTS - 1)]` per
/// word, 32 words at a time (`out.len()` a multiple of 32, `reference` 4 bytes per code);
/// returns the largest exponent seen.
#[target_feature(enable = "avx2")]
pub unsafe fn contexts32(reference: &[u8], e_max: u8, lut: &[u8; CONTEXTS], out: &mut [u8]) -> u8 {
    let low8 = _mm256_set1_epi32(0xff);
    let emax = _mm256_set1_epi8(e_max as i8);
    let cap = _mm256_set1_epi8(CONTEXTS as i8 - 1);
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(lut.as_ptr() as *const __m128i));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut most = _mm256_setzero_si256();
    for (i, o) in out.chunks_exact_mut(32).enumerate() {
        let src = reference.as_ptr().add(128 * i) as *const __m256i;
        let e = |g: usize| {
            _mm256_and_si256(
                _mm256_srli_epi32::<23>(_mm256_loadu_si256(src.add(g))),
                low8,
            )
        };
        let lo = _mm256_packus_epi32(e(0), e(1));
        let hi = _mm256_packus_epi32(e(2), e(3));
        let b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
        most = _mm256_max_epu8(most, b);
        let c = _mm256_min_epu8(_mm256_subs_epu8(emax, b), cap);
        _mm256_storeu_si256(
            o.as_mut_ptr() as *mut __m256i,
            _mm256_shuffle_epi8(table, c),
        );
    }
    let mut bytes = [0u8; 32];
    _mm256_storeu_si256(bytes.as_mut_ptr() as *mut __m256i, most);
    bytes.into_iter().fold(0, u8::max)
}

/// Side-context codes (see `side`) of 8 side words `s` and their reference words `r`
/// (32-bit float lanes), `base` in every lane and the chunk's `shift` in `count`.
#[inline(always)]
pub(super) unsafe fn side_codes8(s: __m256i, r: __m256i, base: __m256i, count: __m128i) -> __m256i {
    let abs = _mm256_set1_epi32(i32::MAX);
    let ls = _mm256_srli_epi32::<21>(_mm256_and_si256(s, abs));
    let lr = _mm256_srli_epi32::<21>(_mm256_and_si256(r, abs));
    let k = _mm256_sub_epi32(_mm256_add_epi32(ls, ls), lr);
    let d = _mm256_max_epi32(_mm256_sub_epi32(base, k), _mm256_setzero_si256());
    _mm256_min_epi32(
        _mm256_srl_epi32(d, count),
        _mm256_set1_epi32(CONTEXTS as i32 - 1),
    )
}

/// Bit length of each u32 lane (0 for 0): the exponent of the lane's low 31 bits as a
/// float, after clearing every bit with a 1 right above it (so rounding cannot carry into
/// the next power of two); 32 where bit 31 is set.
#[inline(always)]
unsafe fn bit_length(z: __m256i) -> __m256i {
    let low = _mm256_and_si256(z, _mm256_set1_epi32(i32::MAX));
    let u = _mm256_andnot_si256(_mm256_srli_epi32::<1>(low), low);
    let e = _mm256_srli_epi32::<23>(_mm256_castps_si256(_mm256_cvtepi32_ps(u)));
    let n = _mm256_max_epi32(
        _mm256_sub_epi32(e, _mm256_set1_epi32(126)),
        _mm256_setzero_si256(),
    );
    let top = _mm256_and_si256(_mm256_srai_epi32::<31>(z), _mm256_set1_epi32(32));
    _mm256_max_epi32(n, top)
}

/// Raw bits of residuals merged in pairs (up to 62 bits each) and packed as each group
/// is made, the writer's state in registers ([`WideBits`]): the serial steps overlap the
/// vector work of the groups around them, where a buffer written out in runs left them
/// alone on the critical path.
struct Pairs {
    bits: WideBits,
}

impl Pairs {
    /// Takes over `bw`'s state, making room for the pairs of `words` values.
    fn new(bw: &mut BitWriter<Buffer>, words: usize) -> Pairs {
        Pairs {
            bits: WideBits::take(bw, words.div_ceil(2)),
        }
    }

    /// Appends 8 values `lv` of `kv` bits (32-bit lanes, in order): at most once per 8
    /// of the `words` made room for, the writer untouched until [`Pairs::finish`].
    #[inline(always)]
    unsafe fn push(&mut self, lv: __m256i, kv: __m256i) {
        let low32 = _mm256_set1_epi64x(0xffff_ffff);
        let k_even = _mm256_and_si256(kv, low32);
        let merged = _mm256_or_si256(
            _mm256_and_si256(lv, low32),
            _mm256_sllv_epi64(_mm256_srli_epi64::<32>(lv), k_even),
        );
        let m = _mm256_add_epi64(k_even, _mm256_srli_epi64::<32>(kv));
        // The four lengths (at most 62) as the bytes of one u32.
        let m = _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
        let m16 = _mm_packus_epi32(_mm256_castsi256_si128(m), _mm256_castsi256_si128(m));
        let lens = _mm_cvtsi128_si32(_mm_packus_epi16(m16, m16)) as u32;
        let (lo, hi) = (
            _mm256_castsi256_si128(merged),
            _mm256_extracti128_si256::<1>(merged),
        );
        self.bits.put(_mm_cvtsi128_si64(lo) as u64, lens & 0xff);
        self.bits
            .put(_mm_extract_epi64::<1>(lo) as u64, lens >> 8 & 0xff);
        self.bits
            .put(_mm_cvtsi128_si64(hi) as u64, lens >> 16 & 0xff);
        self.bits.put(_mm_extract_epi64::<1>(hi) as u64, lens >> 24);
    }

    /// Hands the state back to `bw`.
    fn finish(self, bw: &mut BitWriter<Buffer>) {
        self.bits.finish(bw);
    }
}

/// Raw bits of residuals packed 16 values (8 merged pairs) at a time with AVX-512, no
/// serial step per value: the pairs' bit offsets come from a prefix sum, each pair is
/// shifted into the (at most two) 64-bit words it straddles, the parts landing in one
/// word are OR-ed by a segmented scan (offsets only grow, by at most 62 bits, so words
/// are consecutive), and the finished words are compressed out and stored at once. The
/// bits are those [`Pairs`] writes, in the same order.
struct Packer512 {
    /// Byte position of the word being filled, its bits, and how many (below 64).
    pos: usize,
    acc: u64,
    fill: u64,
}

impl Packer512 {
    /// Takes over `bw`'s state.
    fn new(bw: &BitWriter<Buffer>) -> Packer512 {
        let (pos, acc, fill) = bw.suspend();
        Packer512 {
            pos,
            acc,
            fill: fill as u64,
        }
    }

    /// Appends 16 values `lv` of `kv` bits (32-bit lanes, each below 32 bits, in order).
    #[inline(always)]
    unsafe fn push16(&mut self, lv: __m512i, kv: __m512i, bw: &mut BitWriter<Buffer>) {
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let k_even = _mm512_and_si512(kv, low32);
        // Pairs in 64-bit lanes: the odd value above the even one's bits.
        let v = _mm512_or_si512(
            _mm512_and_si512(lv, low32),
            _mm512_sllv_epi64(_mm512_srli_epi64::<32>(lv), k_even),
        );
        let m = _mm512_add_epi64(k_even, _mm512_srli_epi64::<32>(kv));
        // Lanes moved up by `d` (zeros below).
        let zero = _mm512_setzero_si512();
        let up1 = |a| _mm512_alignr_epi64::<7>(a, zero);
        let up2 = |a| _mm512_alignr_epi64::<6>(a, zero);
        let up4 = |a| _mm512_alignr_epi64::<4>(a, zero);
        let mut p = _mm512_add_epi64(m, up1(m));
        p = _mm512_add_epi64(p, up2(p));
        p = _mm512_add_epi64(p, up4(p));
        let o = _mm512_add_epi64(_mm512_sub_epi64(p, m), _mm512_set1_epi64(self.fill as i64));
        let w = _mm512_srli_epi64::<6>(o);
        let s = _mm512_and_si512(o, _mm512_set1_epi64(63));
        let mut lo = _mm512_sllv_epi64(v, s);
        // A count of 64 (no shift into the next word) gives 0.
        let mut hi = _mm512_srlv_epi64(v, _mm512_sub_epi64(_mm512_set1_epi64(64), s));
        // Segmented OR over lanes of one word.
        let eq1 = _mm512_mask_cmpeq_epu64_mask(0xfe, up1(w), w);
        lo = _mm512_mask_or_epi64(lo, eq1, lo, up1(lo));
        hi = _mm512_mask_or_epi64(hi, eq1, hi, up1(hi));
        let eq2 = _mm512_mask_cmpeq_epu64_mask(0xfc, up2(w), w);
        lo = _mm512_mask_or_epi64(lo, eq2, lo, up2(lo));
        hi = _mm512_mask_or_epi64(hi, eq2, hi, up2(hi));
        let eq4 = _mm512_mask_cmpeq_epu64_mask(0xf0, up4(w), w);
        lo = _mm512_mask_or_epi64(lo, eq4, lo, up4(lo));
        hi = _mm512_mask_or_epi64(hi, eq4, hi, up4(hi));
        // The last lane of each word holds its OR: word t's low parts, word t+1's highs.
        let next = _mm512_alignr_epi64::<1>(_mm512_set1_epi64(-1), w);
        let last = _mm512_cmpneq_epu64_mask(next, w);
        let lows = _mm512_maskz_compress_epi64(last, lo);
        let highs = _mm512_maskz_compress_epi64(last, hi);
        let words = _mm512_or_si512(lows, up1(highs));
        let words = _mm512_mask_or_epi64(words, 1, words, _mm512_set1_epi64(self.acc as i64));
        // Bits held after this group: the held ones plus the 16 values' (last prefix lane).
        let total = self.fill + _mm_extract_epi64::<1>(_mm512_extracti32x4_epi32::<3>(p)) as u64;
        let full = (total >> 6) as usize;
        let out = bw.room_at(self.pos, 72);
        _mm512_mask_storeu_epi64(
            out.add(self.pos) as *mut i64,
            ((1u32 << full) - 1) as u8,
            words,
        );
        self.acc = if full < 8 {
            let at = _mm512_permutexvar_epi64(_mm512_set1_epi64(full as i64), words);
            _mm_cvtsi128_si64(_mm512_castsi512_si128(at)) as u64
        } else {
            let at = _mm512_permutexvar_epi64(_mm512_set1_epi64(7), highs);
            _mm_cvtsi128_si64(_mm512_castsi512_si128(at)) as u64
        };
        self.pos += 8 * full;
        self.fill = total & 63;
    }

    /// Hands the state back to `bw`.
    fn finish(self, bw: &mut BitWriter<Buffer>) {
        bw.resume(self.pos, self.acc, self.fill as u32);
    }
}

/// Codes of the context coder: `context << SYM_BITS | token`, all below this.
const SUB: usize = CONTEXTS << SYM_BITS;

/// The analysis passes' histogram of codes, in four sub-histograms of u32 counts (code j
/// of a run goes to sub-histogram j mod 4), so that repeats of one code do not wait on
/// each other's increments. u32, not u16: this AMD core takes twice as long per
/// increment of a u16 in memory (0.70 against 0.38 ns per code); the four hold 64 KB but
/// a chunk's codes touch a few KB of them.
struct SubHist {
    subs: Box<[[u32; SUB]; 4]>,
}

/// Codes the AVX2 analysis stores before it counts them (a run read back from L1).
/// Counted group by group as they were made, from the vector, the whole pass took 3.4
/// instead of 3.0 ns per word (with u16 counts, on the AMD core above).
const COUNT_RUN: usize = 2048;

impl SubHist {
    fn new() -> SubHist {
        SubHist {
            subs: Box::new([[0u32; SUB]; 4]),
        }
    }

    /// Counts stored codes (at most `u32::MAX` in all); a code is below SUB (context <
    /// CONTEXTS, token < 2^SYM_BITS), the mask only spares the bounds check.
    #[inline(always)]
    fn count(&mut self, codes: &[u16]) {
        let quads = codes.chunks_exact(4);
        let rest = quads.remainder();
        let [s0, s1, s2, s3] = &mut *self.subs;
        for q in quads {
            s0[q[0] as usize & (SUB - 1)] += 1;
            s1[q[1] as usize & (SUB - 1)] += 1;
            s2[q[2] as usize & (SUB - 1)] += 1;
            s3[q[3] as usize & (SUB - 1)] += 1;
        }
        for (sub, &c) in self.subs.iter_mut().zip(rest) {
            sub[c as usize & (SUB - 1)] += 1;
        }
    }

    /// Adds the counts into `hist` (one count per code).
    fn add_to(&self, hist: &mut [u32]) {
        for (i, count) in hist.iter_mut().enumerate().take(SUB) {
            *count += self.subs.iter().map(|s| s[i]).sum::<u32>();
        }
    }
}

/// Tokens of 8 residuals `z` with `tb` top bits (see `word::token`), their raw bits and
/// the count of those: (token, raw bits, count) in 32-bit lanes.
#[inline(always)]
unsafe fn tokens8(z: __m256i, tb: __m256i) -> (__m256i, __m256i, __m256i) {
    let one = _mm256_set1_epi32(1);
    let n = bit_length(z);
    let tb1 = _mm256_add_epi32(tb, one);
    // q = n - tb - 1 (0 below): the token's length class; below class 1 the token is z.
    let q = _mm256_max_epi32(_mm256_sub_epi32(n, tb1), _mm256_setzero_si256());
    let k = _mm256_sub_epi32(q, _mm256_min_epu32(q, one));
    let hi = _mm256_srlv_epi32(z, _mm256_max_epu32(q, one));
    let hi = _mm256_andnot_si256(_mm256_sllv_epi32(_mm256_set1_epi32(-1), tb), hi);
    let t = _mm256_or_si256(
        _mm256_sllv_epi32(q, tb1),
        _mm256_or_si256(_mm256_slli_epi32::<1>(hi), _mm256_and_si256(z, one)),
    );
    let low = _mm256_andnot_si256(
        _mm256_sllv_epi32(_mm256_set1_epi32(-1), k),
        _mm256_srli_epi32::<1>(z),
    );
    (t, low, k)
}

/// [`tokens8`] for 16 lanes (AVX-512; bit lengths by `vplzcntd`).
#[inline(always)]
unsafe fn tokens16(z: __m512i, tb: __m512i) -> (__m512i, __m512i, __m512i) {
    let one = _mm512_set1_epi32(1);
    let n = _mm512_sub_epi32(_mm512_set1_epi32(32), _mm512_lzcnt_epi32(z));
    let tb1 = _mm512_add_epi32(tb, one);
    let q = _mm512_max_epi32(_mm512_sub_epi32(n, tb1), _mm512_setzero_si512());
    let k = _mm512_sub_epi32(q, _mm512_min_epu32(q, one));
    let hi = _mm512_srlv_epi32(z, _mm512_max_epu32(q, one));
    let hi = _mm512_andnot_si512(_mm512_sllv_epi32(_mm512_set1_epi32(-1), tb), hi);
    let t = _mm512_or_si512(
        _mm512_sllv_epi32(q, tb1),
        _mm512_or_si512(_mm512_slli_epi32::<1>(hi), _mm512_and_si512(z, one)),
    );
    let low = _mm512_andnot_si512(
        _mm512_sllv_epi32(_mm512_set1_epi32(-1), k),
        _mm512_srli_epi32::<1>(z),
    );
    (t, low, k)
}

/// [`analyze32`] 16 words at a time (AVX-512 F/BW/CD): `codes.len()` a multiple of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512vl,avx2,bmi1,bmi2,popcnt")]
pub unsafe fn analyze32_512(
    raw: &[u8],
    reference: &[u8],
    side: Option<(&[u8], (i16, u8))>,
    (float, e_max, off, tb): (bool, u8, u32, u32),
    codes: &mut [u16],
    hist: &mut [u32],
    (mut bw, mut hash): (Option<&mut BitWriter<Buffer>>, Option<&mut BlockHashes>),
) -> (u64, u8) {
    let top = _mm512_set1_epi32(i32::MIN);
    let ord16 = |w: __m512i| _mm512_xor_si512(w, _mm512_or_si512(_mm512_srai_epi32::<31>(w), top));
    let offv = _mm512_set1_epi32(off as i32);
    let tbv = _mm512_set1_epi32(tb as i32);
    let emax = _mm512_set1_epi32(e_max as i32);
    let cap = _mm512_set1_epi32(CONTEXTS as i32 - 1);
    let (base, shift) = side.map_or((0, 0), |(_, at)| at);
    let side_at = (
        _mm512_set1_epi32(base as i32),
        _mm512_set1_epi32(shift as i32),
    );
    // Per-lane raw bit counts: at most 31 per word and 2^22 words per lane in a chunk of
    // at most 64 MiB, so u32 lanes do not overflow.
    let mut raw_bits = _mm512_setzero_si512();
    let mut most = _mm512_setzero_si512();
    let mut sub = SubHist::new();
    let mut packer = bw.as_deref().map(Packer512::new);
    for (i, cs) in codes.chunks_exact_mut(16).enumerate() {
        // The line `PREFETCH_AHEAD` bytes on of each input, asked for now (a hint:
        // addresses past the end are never read).
        let ahead = 64 * i + super::PREFETCH_AHEAD;
        _mm_prefetch::<_MM_HINT_T0>(raw.as_ptr().wrapping_add(ahead) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(reference.as_ptr().wrapping_add(ahead) as *const i8);
        if let Some((words, _)) = side {
            _mm_prefetch::<_MM_HINT_T0>(words.as_ptr().wrapping_add(ahead) as *const i8);
        }
        let x = _mm512_loadu_si512(raw.as_ptr().add(64 * i) as *const __m512i);
        let r = _mm512_loadu_si512(reference.as_ptr().add(64 * i) as *const __m512i);
        let (ox, or) = if float { (ord16(x), ord16(r)) } else { (x, r) };
        let d = _mm512_sub_epi32(_mm512_sub_epi32(ox, or), offv);
        let z = _mm512_xor_si512(_mm512_slli_epi32::<1>(d), _mm512_srai_epi32::<31>(d));
        let (t, lv, kv) = tokens16(z, tbv);
        let c = if let Some((words, _)) = side {
            let s = _mm512_loadu_si512(words.as_ptr().add(64 * i) as *const __m512i);
            side_codes16(s, r, side_at)
        } else if float {
            let e = _mm512_and_si512(_mm512_srli_epi32::<23>(r), _mm512_set1_epi32(0xff));
            most = _mm512_max_epu32(most, e);
            // Saturating: a word above a sampled base takes context 0.
            _mm512_min_epu32(_mm512_subs_epu16(emax, e), cap)
        } else {
            _mm512_setzero_si512()
        };
        let code = _mm512_or_si512(_mm512_slli_epi32::<{ SYM_BITS }>(c), t);
        _mm256_storeu_si256(cs.as_mut_ptr() as *mut __m256i, _mm512_cvtepi32_epi16(code));
        sub.count(cs);
        raw_bits = _mm512_add_epi32(raw_bits, kv);
        if let (Some(bw), Some(pk)) = (bw.as_mut(), packer.as_mut()) {
            pk.push16(lv, kv, bw);
        }
        if let Some(h) = hash.as_mut() {
            h.feed_blocks(raw, reference, 64 * (i + 1));
        }
    }
    if let (Some(bw), Some(pk)) = (bw.as_mut(), packer) {
        pk.finish(bw);
    }
    sub.add_to(hist);
    let mut lanes = [0u32; 16];
    _mm512_storeu_si512(lanes.as_mut_ptr() as *mut __m512i, raw_bits);
    let bits = lanes.iter().map(|&b| b as u64).sum();
    (bits, _mm512_reduce_max_epu32(most) as u8)
}

/// The analysis of `encode::analyze` for 32-bit words, 8 at a time (`codes.len()` a
/// multiple of 8, `raw` and `reference` 4 bytes per code, `side` one context per code):
/// codes, their histogram, the packed raw bits (if `bw`), `raw` and `reference` fed to
/// `hash` block by block (if given); returns the raw bit count and the reference's largest
/// exponent (exponent contexts only; else 0).
#[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
pub unsafe fn analyze32(
    raw: &[u8],
    reference: &[u8],
    side: Option<(&[u8], (i16, u8))>,
    (float, e_max, off, tb): (bool, u8, u32, u32),
    codes: &mut [u16],
    hist: &mut [u32],
    (mut bw, mut hash): (Option<&mut BitWriter<Buffer>>, Option<&mut BlockHashes>),
) -> (u64, u8) {
    let top = _mm256_set1_epi32(i32::MIN);
    let offv = _mm256_set1_epi32(off as i32);
    let tbv = _mm256_set1_epi32(tb as i32);
    let emax = _mm256_set1_epi32(e_max as i32);
    let cap = _mm256_set1_epi32(CONTEXTS as i32 - 1);
    let (b, sh) = side.map_or((0, 0), |(_, at)| at);
    let (base, count) = (_mm256_set1_epi32(b as i32), _mm_cvtsi32_si128(sh as i32));
    let mut raw_bits = _mm256_setzero_si256();
    let mut most = _mm256_setzero_si256();
    let mut sub = SubHist::new();
    let mut pairs = bw.as_deref_mut().map(|bw| Pairs::new(bw, codes.len()));
    for (run, run_codes) in codes.chunks_mut(COUNT_RUN).enumerate() {
        for (g, cs) in run_codes.chunks_exact_mut(8).enumerate() {
            let i = run * (COUNT_RUN / 8) + g;
            let x = _mm256_loadu_si256(raw.as_ptr().add(32 * i) as *const __m256i);
            let r = _mm256_loadu_si256(reference.as_ptr().add(32 * i) as *const __m256i);
            let (ox, or) = if float {
                (ord(x, top), ord(r, top))
            } else {
                (x, r)
            };
            let d = _mm256_sub_epi32(_mm256_sub_epi32(ox, or), offv);
            let z = _mm256_xor_si256(_mm256_slli_epi32::<1>(d), _mm256_srai_epi32::<31>(d));
            let (t, lv, kv) = tokens8(z, tbv);
            let c = if let Some((words, _)) = side {
                let s = _mm256_loadu_si256(words.as_ptr().add(32 * i) as *const __m256i);
                side_codes8(s, r, base, count)
            } else if float {
                let e = _mm256_and_si256(_mm256_srli_epi32::<23>(r), _mm256_set1_epi32(0xff));
                most = _mm256_max_epu32(most, e);
                // Saturating: a word above a sampled base takes context 0.
                _mm256_min_epu32(_mm256_subs_epu16(emax, e), cap)
            } else {
                _mm256_setzero_si256()
            };
            let code = _mm256_or_si256(_mm256_slli_epi32::<{ SYM_BITS as i32 }>(c), t);
            let packed = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(
                _mm256_packus_epi32(code, code),
            ));
            _mm_storeu_si128(cs.as_mut_ptr() as *mut __m128i, packed);
            // 64-bit lane sums: even and odd lanes apart.
            raw_bits = _mm256_add_epi64(raw_bits, _mm256_srli_epi64::<32>(kv));
            raw_bits = _mm256_add_epi64(
                raw_bits,
                _mm256_and_si256(kv, _mm256_set1_epi64x(0xffff_ffff)),
            );
            if let Some(pairs) = pairs.as_mut() {
                pairs.push(lv, kv);
            }
            if let Some(h) = hash.as_mut() {
                h.feed_blocks(raw, reference, 32 * (i + 1));
            }
        }
        sub.count(run_codes);
    }
    if let (Some(bw), Some(pairs)) = (bw, pairs) {
        pairs.finish(bw);
    }
    sub.add_to(hist);
    let mut lanes = [0u64; 4];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, raw_bits);
    let mut tops = [0u32; 8];
    _mm256_storeu_si256(tops.as_mut_ptr() as *mut __m256i, most);
    (
        lanes.iter().sum(),
        tops.iter().fold(0, |m, &t| m.max(t)) as u8,
    )
}

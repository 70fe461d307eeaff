//! AVX-512 (F) twins of the fused decoder's AVX2 word kernels in [`super::simd`]: slots
//! and word rebuilds of 16 32-bit words at a time, the same arithmetic lane for lane.
//! Callers check for AVX-512F.

use super::CONTEXTS;
use std::arch::x86_64::*;

/// Bytes that must be readable from the pointer given to [`rebuild16`] and
/// [`rebuild16_tokens`] (two 64-byte loads, 4 bytes apart).
pub(super) const WINDOW16: usize = 68;

/// Sixteen residuals' raw bits: lane j's 32 bits starting `rel[j]` (< 512 - 32) bits after
/// `base`, from two unaligned loads and two dword permutes. [`WINDOW16`] bytes must be
/// readable from `base`.
#[inline(always)]
unsafe fn window_bits16(base: *const u8, rel: __m512i) -> __m512i {
    let d = _mm512_srli_epi32::<5>(rel);
    let sh = _mm512_and_si512(rel, _mm512_set1_epi32(31));
    let lo = _mm512_permutexvar_epi32(d, _mm512_loadu_si512(base as *const __m512i));
    let hi = _mm512_permutexvar_epi32(d, _mm512_loadu_si512(base.add(4) as *const __m512i));
    // (hi:lo) >> sh in 32-bit lanes; a shift by 32 gives 0, as sh = 0 needs.
    let up = _mm512_sllv_epi32(hi, _mm512_sub_epi32(_mm512_set1_epi32(32), sh));
    _mm512_or_si512(_mm512_srlv_epi32(lo, sh), up)
}

/// Inclusive prefix sum of 16 u32 lanes (each step adds the vector moved up by 1, 2, 4
/// and 8 lanes, zeros shifted in).
#[inline(always)]
unsafe fn prefix_sum16(k: __m512i) -> __m512i {
    let z = _mm512_setzero_si512();
    let s = _mm512_add_epi32(k, _mm512_alignr_epi32::<15>(k, z));
    let s = _mm512_add_epi32(s, _mm512_alignr_epi32::<14>(s, z));
    let s = _mm512_add_epi32(s, _mm512_alignr_epi32::<12>(s, z));
    _mm512_add_epi32(s, _mm512_alignr_epi32::<8>(s, z))
}

/// The raw bits of 16 residuals: lane j's `k[j]` (at most 31) bits, packed one after
/// another from bit `shift` (< 8) of `src`; returns them and their total.
#[inline(always)]
unsafe fn raw16(k: __m512i, src: *const u8, shift: usize) -> (__m512i, usize) {
    let incl = prefix_sum16(k);
    let rel = _mm512_add_epi32(_mm512_sub_epi32(incl, k), _mm512_set1_epi32(shift as i32));
    let raw = window_bits16(src, rel);
    let low = _mm512_andnot_si512(_mm512_sllv_epi32(_mm512_set1_epi32(-1), k), raw);
    let total = _mm_extract_epi32::<3>(_mm512_extracti32x4_epi32::<3>(incl));
    (low, total as u32 as usize)
}

/// The words of 16 zigzagged residuals `z` against reference words `r` and the chunk
/// offset `off` (all lanes); floats go through their order-preserving images.
#[inline(always)]
unsafe fn word16(z: __m512i, r: __m512i, off: __m512i, float: bool) -> __m512i {
    let d = _mm512_xor_si512(
        _mm512_srli_epi32::<1>(z),
        _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_and_si512(z, _mm512_set1_epi32(1)),
        ),
    );
    if float {
        let top = _mm512_set1_epi32(i32::MIN);
        let ord = _mm512_xor_si512(r, _mm512_or_si512(_mm512_srai_epi32::<31>(r), top));
        let o = _mm512_add_epi32(_mm512_add_epi32(ord, off), d);
        let flip = _mm512_xor_si512(_mm512_srai_epi32::<31>(o), _mm512_set1_epi32(-1));
        _mm512_xor_si512(o, _mm512_or_si512(flip, top))
    } else {
        _mm512_add_epi32(_mm512_add_epi32(r, off), d)
    }
}

/// Rebuilds 16 32-bit words from their residual lengths `n` (each at most 32), their raw
/// bits from bit `shift` (< 8) of `src` ([`WINDOW16`] bytes readable there), their
/// reference words `r` and the chunk offset `off`; returns the words and the raw bits
/// used.
#[inline(always)]
pub(super) unsafe fn rebuild16(
    n: __m512i,
    src: *const u8,
    shift: usize,
    (r, off): (__m512i, __m512i),
    float: bool,
) -> (__m512i, usize) {
    let one = _mm512_set1_epi32(1);
    let k = _mm512_sub_epi32(n, _mm512_min_epu32(n, one));
    let (low, used) = raw16(k, src, shift);
    // Leading 1 at bit n - 1 (none for n = 0): 2^31 >> (32 - n).
    let lead = _mm512_srlv_epi32(
        _mm512_set1_epi32(i32::MIN),
        _mm512_sub_epi32(_mm512_set1_epi32(32), n),
    );
    (word16(_mm512_or_si512(lead, low), r, off, float), used)
}

/// [`rebuild16`] from tokens `t` of `tb` top bits (both in 32-bit lanes, tokens at most
/// `word::max_token(32, tb)`) instead of lengths (see `word::untoken`).
#[inline(always)]
pub(super) unsafe fn rebuild16_tokens(
    t: __m512i,
    tb: __m512i,
    src: *const u8,
    shift: usize,
    (r, off): (__m512i, __m512i),
    float: bool,
) -> (__m512i, usize) {
    let one = _mm512_set1_epi32(1);
    let q = _mm512_srlv_epi32(t, _mm512_add_epi32(tb, one));
    let q1 = _mm512_min_epu32(q, one);
    let k = _mm512_sub_epi32(q, q1);
    let (low, used) = raw16(k, src, shift);
    let hi = _mm512_andnot_si512(
        _mm512_sllv_epi32(_mm512_set1_epi32(-1), tb),
        _mm512_srli_epi32::<1>(t),
    );
    let m = _mm512_or_si512(hi, _mm512_sllv_epi32(q1, tb));
    let z = _mm512_or_si512(
        _mm512_sllv_epi32(m, _mm512_add_epi32(k, one)),
        _mm512_or_si512(_mm512_slli_epi32::<1>(low), _mm512_and_si512(t, one)),
    );
    (word16(z, r, off, float), used)
}

/// Table slots of 16 float reference words `r`: `lut[min(e_max - top, CONTEXTS - 1)]`
/// (`lut` widened to one slot per 32-bit lane), and the words' top bytes (exponents).
#[inline(always)]
pub(super) unsafe fn slots16(r: __m512i, emax: __m512i, lut: __m512i) -> (__m512i, __m512i) {
    let t = _mm512_and_si512(_mm512_srli_epi32::<23>(r), _mm512_set1_epi32(0xff));
    let c = _mm512_min_epi32(
        _mm512_max_epi32(_mm512_sub_epi32(emax, t), _mm512_setzero_si512()),
        _mm512_set1_epi32(CONTEXTS as i32 - 1),
    );
    (_mm512_permutexvar_epi32(c, lut), t)
}

/// Side-context codes (see `side`) of 16 side words `s` and their reference words `r`
/// (32-bit float lanes), `base` and the chunk's `shift` in every lane.
#[inline(always)]
pub(super) unsafe fn side_codes16(
    s: __m512i,
    r: __m512i,
    (base, shift): (__m512i, __m512i),
) -> __m512i {
    let abs = _mm512_set1_epi32(i32::MAX);
    let ls = _mm512_srli_epi32::<21>(_mm512_and_si512(s, abs));
    let lr = _mm512_srli_epi32::<21>(_mm512_and_si512(r, abs));
    let k = _mm512_sub_epi32(_mm512_add_epi32(ls, ls), lr);
    let d = _mm512_max_epi32(_mm512_sub_epi32(base, k), _mm512_setzero_si512());
    _mm512_min_epi32(
        _mm512_srlv_epi32(d, shift),
        _mm512_set1_epi32(CONTEXTS as i32 - 1),
    )
}

/// Table slots of 16 side words `s` and their reference words `r`: `lut` (one slot per
/// lane) at their [`side_codes16`].
#[inline(always)]
pub(super) unsafe fn side_slots16(
    s: __m512i,
    r: __m512i,
    at: (__m512i, __m512i),
    lut: __m512i,
) -> __m512i {
    _mm512_permutexvar_epi32(side_codes16(s, r, at), lut)
}

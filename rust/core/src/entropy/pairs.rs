//! Pair symbols: two bytes of a plane become one rANS symbol, halving the coder's steps.
//!
//! Exponent planes use a handful of neighbouring values, but at one byte per float word
//! (bf16, fp16) their rANS steps dominate encode and decode. When nearly every byte of a
//! plane falls in a window of [`WINDOW`] consecutive values `lo..lo + 15`, each byte is
//! mapped to its rank `byte - lo` (or [`ESCAPE`] outside the window) and each pair of
//! ranks to one symbol `rank(b[2i]) << 4 | rank(b[2i + 1])` (an odd plane's last symbol
//! pads with rank 0). The symbols are coded as any plane; the escaped bytes are kept
//! apart, in plane order. One rANS step then yields two bytes, and the symbol alphabet
//! (at most 256) still fits the coder's tables.

use std::cell::RefCell;

use crate::error::{Error, Result};

/// Values a window covers: ranks `0..WINDOW`; [`ESCAPE`] marks a byte outside it.
pub const WINDOW: usize = 15;
/// Rank of a byte outside the window: the byte itself is stored apart.
pub const ESCAPE: u8 = WINDOW as u8;
/// The largest window start: the window's values stay below 256.
pub const MAX_LO: u8 = (256 - WINDOW) as u8;

thread_local! {
    /// Per-thread pair-symbol buffer, reused across planes.
    static SYMBOLS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread buffer of `len` bytes (contents unspecified).
pub fn with_symbols<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SYMBOLS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0);
        }
        f(&mut s[..len])
    })
}

/// Pair symbols of a plane of `n` bytes.
pub fn symbol_count(n: usize) -> usize {
    n.div_ceil(2)
}

/// The window start `lo` (at most [`MAX_LO`]) whose [`WINDOW`] values hold the most of
/// `counts`, and how many they hold.
pub fn window(counts: &[u32; 256]) -> (u8, u64) {
    let mut held: u64 = counts[..WINDOW].iter().map(|&c| c as u64).sum();
    let (mut best, mut best_held) = (0usize, held);
    for lo in 1..=MAX_LO as usize {
        held = held + counts[lo + WINDOW - 1] as u64 - counts[lo - 1] as u64;
        if held > best_held {
            (best, best_held) = (lo, held);
        }
    }
    (best as u8, best_held)
}

/// Rank of `b` in the window starting at `lo`.
#[inline(always)]
fn rank(b: u8, lo: u8) -> u8 {
    b.wrapping_sub(lo).min(ESCAPE)
}

/// Maps `plane` to pair symbols in `symbols` ([`symbol_count`] bytes) and appends the
/// bytes outside the window at `lo` to `escapes`, in plane order.
pub fn pair_up(plane: &[u8], lo: u8, symbols: &mut [u8], escapes: &mut Vec<u8>) {
    assert_eq!(symbols.len(), symbol_count(plane.len()), "pair buffer size");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the kernel stays within both slices.
        done = unsafe { avx2::pair_up(plane, lo, symbols, escapes) };
    }
    let mut pairs = plane[2 * done..].chunks(2);
    for (s, pair) in symbols[done..].iter_mut().zip(&mut pairs) {
        let r0 = rank(pair[0], lo);
        let r1 = pair.get(1).map_or(0, |&b| rank(b, lo));
        for (&r, &b) in [r0, r1].iter().zip(pair) {
            if r == ESCAPE {
                escapes.push(b);
            }
        }
        *s = r0 << 4 | r1;
    }
}

/// [`pair_up`] of plane 0 (the most significant byte, floats with the sign rotated down)
/// of the 2- or 4-byte words of `block`, straight from the words: an encoder pairs the
/// exponent plane as it cuts it out, without the plane in between. `symbols` holds
/// [`symbol_count`] of the block's words; escaped bytes are appended to `escapes`.
pub fn pair_up_words(
    block: &[u8],
    (width, float): (usize, bool),
    lo: u8,
    symbols: &mut [u8],
    escapes: &mut Vec<u8>,
) {
    let n = block.len() / width;
    assert_eq!(symbols.len(), symbol_count(n), "pair buffer size");
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::entropy::avx512_bw() {
        // SAFETY: AVX-512 F and BW are present; the kernel reads whole groups of 64 words
        // of `block` and writes their symbols, within `symbols`.
        done = unsafe {
            match (width, float) {
                (2, true) => avx512::pair_up_words::<2, true>(block, lo, symbols, escapes),
                (2, false) => avx512::pair_up_words::<2, false>(block, lo, symbols, escapes),
                (4, true) => avx512::pair_up_words::<4, true>(block, lo, symbols, escapes),
                (4, false) => avx512::pair_up_words::<4, false>(block, lo, symbols, escapes),
                _ => 0,
            }
        };
    }
    // The rest cut out 64 words at a time (even counts but for the last), then paired.
    let mut plane = [0u8; 64];
    let rest = block[done * width..].chunks(64 * width);
    let syms = symbols[done / 2..].chunks_mut(32);
    for (part, syms) in rest.zip(syms) {
        let plane = &mut plane[..part.len() / width];
        crate::fields::extract(part, width, float, 0, plane);
        pair_up(plane, lo, syms, escapes);
    }
}

/// Inverts [`pair_up`]: expands `symbols` into `out` (whose length says whether the last
/// symbol holds one byte or two), taking the escaped bytes from `escapes`. An escape count
/// that does not match, an escaped byte inside the window or a non-zero pad is an error.
pub fn expand(symbols: &[u8], lo: u8, escapes: &[u8], out: &mut [u8]) -> Result<()> {
    let mut next = 0;
    expand_part(symbols, lo, escapes, &mut next, out)?;
    if next != escapes.len() {
        return Err(Error::Corrupt("stray escaped bytes".into()));
    }
    Ok(())
}

/// [`expand`] of a stretch of a plane (an even number of bytes from its start, or its
/// end), taking escaped bytes from `escapes[*next..]` and moving `next` past them: a
/// decoder expands a plane block by block as it merges, the block staying in L1. Whether
/// every escaped byte was taken is the caller's check, once the plane is done.
pub fn expand_part(
    symbols: &[u8],
    lo: u8,
    escapes: &[u8],
    next: &mut usize,
    out: &mut [u8],
) -> Result<()> {
    if symbols.len() != symbol_count(out.len()) {
        return Err(Error::Corrupt(
            "pair symbol count does not match the plane".into(),
        ));
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the kernel stays within the slices.
        done = unsafe { avx2::expand(symbols, lo, escapes, next, out) }?;
    }
    // The rest one symbol at a time.
    for (s, pair) in symbols[done..].iter().zip(out[2 * done..].chunks_mut(2)) {
        let ranks = [s >> 4, s & 15];
        if pair.len() == 1 && ranks[1] != 0 {
            return Err(Error::Corrupt("non-zero pad in a pair symbol".into()));
        }
        for (o, &r) in pair.iter_mut().zip(&ranks) {
            *o = if r == ESCAPE {
                take_escape(escapes, next, lo)?
            } else {
                lo.wrapping_add(r)
            };
        }
    }
    Ok(())
}

/// The escaped byte `escapes[*next]`, moving `next` past it; missing, or inside the window
/// at `lo`, it is an error.
fn take_escape(escapes: &[u8], next: &mut usize, lo: u8) -> Result<u8> {
    let b = *escapes
        .get(*next)
        .ok_or_else(|| Error::Corrupt("too few escaped bytes".into()))?;
    if rank(b, lo) != ESCAPE {
        return Err(Error::Corrupt("escaped byte inside the window".into()));
    }
    *next += 1;
    Ok(b)
}

/// Expands pair symbols as plane 0 (the most significant bytes) of 2- or 4-byte words and
/// merges them with the other planes (`rest`, one fewer than the width) into `out`, as
/// [`expand_part`] then [`crate::fields::merge`] would, without the expanded plane in
/// between; whole groups of 64 words (AVX-512 BW), returns the words done (none without
/// AVX-512).
pub fn expand_merge(
    symbols: &[u8],
    lo: u8,
    escapes: &[u8],
    next: &mut usize,
    rest: &[&[u8]],
    float: bool,
    out: &mut [u8],
) -> Result<usize> {
    #[cfg(target_arch = "x86_64")]
    if crate::entropy::avx512_bw() {
        let words = rest
            .iter()
            .fold(out.len() / (rest.len() + 1), |n, p| n.min(p.len()));
        let groups = (symbols.len() / 32).min(words / 64);
        let args = (symbols, lo, escapes, next);
        // SAFETY: AVX-512 F and BW are present; `groups` keeps the kernel within the
        // slices.
        return unsafe {
            match (rest.len(), float) {
                (1, true) => avx512::expand_merge::<2, true>(args, rest, out, groups),
                (1, false) => avx512::expand_merge::<2, false>(args, rest, out, groups),
                (3, true) => avx512::expand_merge::<4, true>(args, rest, out, groups),
                (3, false) => avx512::expand_merge::<4, false>(args, rest, out, groups),
                _ => Ok(0),
            }
        };
    }
    let _ = (symbols, lo, escapes, next, rest, float, out);
    Ok(0)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! [`super::expand_merge`] and [`super::pair_up_words`]: 32 symbols, 64 words at a time.
    use super::*;
    use std::arch::x86_64::*;

    /// [`super::pair_up_words`]'s whole groups of 64 words; returns the words done.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pair_up_words<const W: usize, const FLOAT: bool>(
        block: &[u8],
        lo: u8,
        symbols: &mut [u8],
        escapes: &mut Vec<u8>,
    ) -> usize {
        let groups = (block.len() / (64 * W)).min(symbols.len() / 32);
        let count = _mm_cvtsi32_si128(8 * (W as i32 - 1));
        let lov = _mm512_set1_epi8(lo as i8);
        let esc = _mm512_set1_epi8(ESCAPE as i8);
        let nib = _mm512_set1_epi16(15);
        for g in 0..groups {
            let src = block.as_ptr().add(64 * W * g);
            let top = crate::fields::avx512::plane_bytes::<W, FLOAT>(src, count);
            let ranks = _mm512_min_epu8(_mm512_sub_epi8(top, lov), esc);
            // 16-bit word i holds the ranks of bytes 2i (low) and 2i + 1 (high).
            let s = _mm512_or_si512(
                _mm512_slli_epi16::<4>(_mm512_and_si512(ranks, nib)),
                _mm512_srli_epi16::<8>(ranks),
            );
            let dst = symbols.as_mut_ptr().add(32 * g) as *mut __m256i;
            _mm256_storeu_si256(dst, _mm512_cvtepi16_epi8(s));
            let escaped = _mm512_cmpeq_epi8_mask(ranks, esc);
            if escaped != 0 {
                let mut bytes = [0u8; 64];
                _mm512_storeu_si512(bytes.as_mut_ptr() as *mut __m512i, top);
                super::avx2::gather(&bytes, escaped, escapes);
            }
        }
        64 * groups
    }

    /// [`super::expand_merge`] of `groups` whole groups of 64 words (the caller checked
    /// that the slices hold them); returns the words done.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn expand_merge<const W: usize, const FLOAT: bool>(
        (symbols, lo, escapes, next): (&[u8], u8, &[u8], &mut usize),
        rest: &[&[u8]],
        out: &mut [u8],
        groups: usize,
    ) -> Result<usize> {
        let lov = _mm512_set1_epi8(lo as i8);
        let nib = _mm512_set1_epi16(15);
        let esc = _mm512_set1_epi8(ESCAPE as i8);
        let src: [*const u8; 3] = std::array::from_fn(|k| rest[k.min(W - 2)].as_ptr());
        for g in 0..groups {
            // Word i of `ranks`: rank of byte 2i in its low byte, of byte 2i + 1 in its high.
            let s = _mm256_loadu_si256(symbols.as_ptr().add(32 * g) as *const __m256i);
            let s = _mm512_cvtepu8_epi16(s);
            let ranks = _mm512_or_si512(
                _mm512_srli_epi16::<4>(s),
                _mm512_slli_epi16::<8>(_mm512_and_si512(s, nib)),
            );
            let mut top = _mm512_add_epi8(ranks, lov);
            let escaped = _mm512_cmpeq_epi8_mask(ranks, esc);
            if escaped != 0 {
                let mut block = [0u8; 64];
                _mm512_storeu_si512(block.as_mut_ptr() as *mut __m512i, top);
                super::avx2::patch(&mut block, escaped, lo, escapes, next)?;
                top = _mm512_loadu_si512(block.as_ptr() as *const __m512i);
            }
            let ld = |k: usize| _mm512_loadu_si512(src[k].add(64 * g) as *const __m512i);
            let planes = if W == 2 {
                [top, ld(0), top, top]
            } else {
                [top, ld(0), ld(1), ld(2)]
            };
            crate::fields::avx512::store_words::<W, FLOAT>(
                planes,
                out.as_mut_ptr().add(64 * W * g),
            );
        }
        Ok(64 * groups)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! 32 pair symbols (64 plane bytes) at a time; escaped bytes are gathered (pairing) or
    //! patched in by bit mask (expanding) only in the blocks that hold one.
    use super::*;
    use std::arch::x86_64::*;

    /// Ranks of 32 bytes at `p`, and a bit mask of the escaped ones.
    #[inline(always)]
    unsafe fn ranks32(p: *const u8, lo: __m256i) -> (__m256i, u32) {
        let v = _mm256_loadu_si256(p as *const __m256i);
        let r = _mm256_min_epu8(_mm256_sub_epi8(v, lo), _mm256_set1_epi8(ESCAPE as i8));
        let esc = _mm256_movemask_epi8(_mm256_cmpeq_epi8(r, _mm256_set1_epi8(ESCAPE as i8)));
        (r, esc as u32)
    }

    /// 16 pair symbols of 32 ranks (even rank high nibble), in the low byte of each u16.
    #[inline(always)]
    unsafe fn pair16(r: __m256i) -> __m256i {
        let even = _mm256_and_si256(_mm256_slli_epi16::<4>(r), _mm256_set1_epi16(0xf0));
        _mm256_or_si256(even, _mm256_srli_epi16::<8>(r))
    }

    /// [`super::pair_up`]'s whole blocks; returns the symbols done.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pair_up(
        plane: &[u8],
        lo: u8,
        symbols: &mut [u8],
        escapes: &mut Vec<u8>,
    ) -> usize {
        let blocks = plane.len() / 64;
        let lov = _mm256_set1_epi8(lo as i8);
        let (src, dst) = (plane.as_ptr(), symbols.as_mut_ptr());
        for k in 0..blocks {
            let (a, ea) = ranks32(src.add(64 * k), lov);
            let (b, eb) = ranks32(src.add(64 * k + 32), lov);
            // packus interleaves the 128-bit halves: fix the order with one permute.
            let packed = _mm256_packus_epi16(pair16(a), pair16(b));
            let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            _mm256_storeu_si256(dst.add(32 * k) as *mut __m256i, s);
            let mask = ea as u64 | (eb as u64) << 32;
            if mask != 0 {
                gather(&plane[64 * k..64 * k + 64], mask, escapes);
            }
        }
        blocks * 32
    }

    /// Appends the bytes of `block` at the positions of `mask`'s set bits, in order.
    #[inline(always)]
    pub(super) fn gather(block: &[u8], mut mask: u64, escapes: &mut Vec<u8>) {
        escapes.reserve(mask.count_ones() as usize);
        while mask != 0 {
            escapes.push(block[mask.trailing_zeros() as usize]);
            mask &= mask - 1;
        }
    }

    /// [`super::expand`]'s whole blocks; returns the symbols done.
    #[target_feature(enable = "avx2")]
    pub unsafe fn expand(
        symbols: &[u8],
        lo: u8,
        escapes: &[u8],
        next: &mut usize,
        out: &mut [u8],
    ) -> Result<usize> {
        let blocks = (out.len() / 64).min(symbols.len() / 32);
        let lov = _mm256_set1_epi8(lo as i8);
        let nib = _mm256_set1_epi8(15);
        for k in 0..blocks {
            let s = _mm256_loadu_si256(symbols.as_ptr().add(32 * k) as *const __m256i);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(s), nib);
            let low = _mm256_and_si256(s, nib);
            // Bytes 2i, 2i + 1 = hi[i], low[i]; unpack works within 128-bit halves.
            let (first, second) = interleave(hi, low);
            let dst = out.as_mut_ptr().add(64 * k);
            _mm256_storeu_si256(dst as *mut __m256i, _mm256_add_epi8(first, lov));
            _mm256_storeu_si256(dst.add(32) as *mut __m256i, _mm256_add_epi8(second, lov));
            let any = _mm256_or_si256(_mm256_cmpeq_epi8(hi, nib), _mm256_cmpeq_epi8(low, nib));
            if _mm256_movemask_epi8(any) != 0 {
                let (e0, e1) = interleave(_mm256_cmpeq_epi8(hi, nib), _mm256_cmpeq_epi8(low, nib));
                let mask = _mm256_movemask_epi8(e0) as u32 as u64
                    | (_mm256_movemask_epi8(e1) as u32 as u64) << 32;
                patch(&mut out[64 * k..64 * k + 64], mask, lo, escapes, next)?;
            }
        }
        Ok(32 * blocks)
    }

    /// 64 bytes `a[0], b[0], a[1], b[1], ...` of two 32-byte vectors, as two vectors.
    #[inline(always)]
    unsafe fn interleave(a: __m256i, b: __m256i) -> (__m256i, __m256i) {
        let (l, h) = (_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b));
        (
            _mm256_permute2x128_si256::<0x20>(l, h),
            _mm256_permute2x128_si256::<0x31>(l, h),
        )
    }

    /// Writes the next escaped bytes at the positions of `mask`'s set bits in `block`.
    pub(super) fn patch(
        block: &mut [u8],
        mut mask: u64,
        lo: u8,
        escapes: &[u8],
        next: &mut usize,
    ) -> Result<()> {
        while mask != 0 {
            block[mask.trailing_zeros() as usize] = super::take_escape(escapes, next, lo)?;
            mask &= mask - 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(plane: &[u8], lo: u8) {
        let mut symbols = vec![0; symbol_count(plane.len())];
        let mut escapes = Vec::new();
        pair_up(plane, lo, &mut symbols, &mut escapes);
        let expected: Vec<u8> = plane
            .iter()
            .copied()
            .filter(|&b| rank(b, lo) == ESCAPE)
            .collect();
        assert_eq!(escapes, expected);
        let mut out = vec![0; plane.len()];
        expand(&symbols, lo, &escapes, &mut out).unwrap();
        assert_eq!(out, plane);
    }

    proptest! {
        #[test]
        fn pairs_roundtrip(plane in proptest::collection::vec(100u8..120, 0..700), lo in 95u8..110) {
            roundtrip(&plane, lo);
        }

        #[test]
        fn pairs_roundtrip_any_bytes(plane in proptest::collection::vec(any::<u8>(), 0..300), lo in any::<u8>()) {
            roundtrip(&plane, lo.min(MAX_LO));
        }

        #[test]
        fn wrong_escapes_are_errors(plane in proptest::collection::vec(0u8..40, 1..500), drop_one in any::<bool>()) {
            let mut symbols = vec![0; symbol_count(plane.len())];
            let mut escapes = Vec::new();
            pair_up(&plane, 10, &mut symbols, &mut escapes);
            prop_assume!(!escapes.is_empty() || !drop_one);
            if drop_one { escapes.pop(); } else { escapes.push(0); }
            let mut out = vec![0; plane.len()];
            prop_assert!(expand(&symbols, 10, &escapes, &mut out).is_err());
        }

        #[test]
        fn escaped_bytes_inside_the_window_are_errors(plane in proptest::collection::vec(0u8..40, 1..500), at in any::<usize>()) {
            let mut symbols = vec![0; symbol_count(plane.len())];
            let mut escapes = Vec::new();
            pair_up(&plane, 10, &mut symbols, &mut escapes);
            prop_assume!(!escapes.is_empty());
            let k = at % escapes.len();
            escapes[k] = 10 + (at % WINDOW) as u8;
            let mut out = vec![0; plane.len()];
            prop_assert!(expand(&symbols, 10, &escapes, &mut out).is_err());
        }
    }

    proptest! {
        /// The fused expand-and-merge gives the words that expanding the plane and merging
        /// it with the other planes give, escaped bytes included, for whole groups of 64
        /// words of 2 or 4 bytes; an escaped byte inside the window in a group it covers is
        /// an error.
        #[test]
        fn expand_merge_matches_expand_then_merge(
            plane in proptest::collection::vec(0u8..48, 0..700),
            low in proptest::collection::vec(any::<u8>(), 2100),
            wide in any::<bool>(), float in any::<bool>(), spoil in any::<Option<usize>>()) {
            let (n, width) = (plane.len(), if wide { 4 } else { 2 });
            let mut symbols = vec![0; symbol_count(n)];
            let mut escapes = Vec::new();
            pair_up(&plane, 20, &mut symbols, &mut escapes);
            let rest: Vec<&[u8]> = low.chunks(700).take(width - 1).map(|p| &p[..n]).collect();
            let planes: Vec<&[u8]> = std::iter::once(&plane[..]).chain(rest.iter().copied()).collect();
            let mut want = vec![0u8; width * n];
            crate::fields::merge(&planes, width, float, &mut want);
            let (mut next, mut out) = (0, vec![0u8; width * n]);
            let done = expand_merge(&symbols, 20, &escapes, &mut next, &rest, float, &mut out).unwrap();
            prop_assert_eq!(done % 64, 0);
            if crate::entropy::avx512_bw() {
                prop_assert_eq!(done, n / 64 * 64);
            }
            prop_assert_eq!(&out[..width * done], &want[..width * done]);
            prop_assert_eq!(next, plane[..done].iter().filter(|&&b| rank(b, 20) == ESCAPE).count());
            if let (Some(at), false) = (spoil, escapes.is_empty()) {
                let k = at % escapes.len();
                escapes[k] = 20;
                let r = expand_merge(&symbols, 20, &escapes, &mut 0, &rest, float, &mut out);
                prop_assert_eq!(r.is_err(), k < next);
            }
        }
    }

    proptest! {
        /// Pairing plane 0 straight from the words gives the symbols and escaped bytes
        /// that cutting the plane out and pairing it give, for 2- and 4-byte words of
        /// any count (odd ones too), floats or not.
        #[test]
        fn pair_up_words_matches_cut_then_pair(
            words in proptest::collection::vec(any::<u32>(), 0..700), exps in any::<u64>(),
            wide in any::<bool>(), float in any::<bool>(), lo in 100u8..140) {
            let width = if wide { 4 } else { 2 };
            // Top bytes (after the sign is rotated down) mostly inside the window.
            let raw: Vec<u8> = words.iter().enumerate().flat_map(|(i, &w)| {
                let inside = (exps >> (i % 64)) & 1 == 0 || i % 7 != 0;
                let top = if inside { lo as u32 + w % 15 } else { w >> 24 };
                if wide {
                    let v = top << 24 | (w & 0xff_ffff);
                    (if float { v.rotate_right(1) } else { v }).to_le_bytes().to_vec()
                } else {
                    let v = (top << 8 | (w & 0xff)) as u16;
                    (if float { v.rotate_right(1) } else { v }).to_le_bytes().to_vec()
                }
            }).collect();
            let n = raw.len() / width;
            let mut plane = vec![0u8; n];
            crate::fields::extract(&raw, width, float, 0, &mut plane);
            let (mut want, mut want_esc) = (vec![0u8; symbol_count(n)], Vec::new());
            pair_up(&plane, lo, &mut want, &mut want_esc);
            let (mut got, mut got_esc) = (vec![0u8; symbol_count(n)], Vec::new());
            pair_up_words(&raw, (width, float), lo, &mut got, &mut got_esc);
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_esc, want_esc);
        }
    }

    #[test]
    fn window_finds_the_densest_run() {
        let mut counts = [0u32; 256];
        for (v, c) in counts.iter_mut().enumerate().skip(100).take(20) {
            *c = 1000 - (v as u32 - 100) * 10;
        }
        counts[255] = 50_000;
        let (lo, held) = window(&counts);
        assert_eq!(lo, MAX_LO);
        assert_eq!(held, 50_000);
        counts[255] = 0;
        let (lo, _) = window(&counts);
        assert_eq!(lo, 100);
    }

    #[test]
    fn odd_plane_pads_with_rank_zero_and_rejects_other_pads() {
        let plane = [7u8, 8, 9];
        let mut symbols = vec![0; 2];
        let mut escapes = Vec::new();
        pair_up(&plane, 7, &mut symbols, &mut escapes);
        assert_eq!(symbols, [0x01, 0x20]);
        let mut out = [0u8; 3];
        assert!(expand(&[0x01, 0x21], 7, &[], &mut out).is_err());
        assert!(expand(&[0x01], 7, &[], &mut out).is_err());
    }
}

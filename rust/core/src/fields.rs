//! Float-aware field splitting: words are cut into byte planes, most significant first.
//!
//! For floats the sign bit is first rotated from the top to the bottom of the word, so
//! plane 0 holds exactly the exponent byte (fp32, bf16) or its top bits (fp16, fp64).
//! Exponents carry most of the redundancy; low mantissa planes are nearly uniform. Each
//! plane is then modelled and coded on its own.

use std::mem::MaybeUninit;

/// Most planes a word can have (fp64/int64 words).
pub const MAX_PLANES: usize = 8;

/// Views initialized bytes as possibly-uninitialized ones, for the `_uninit` writers.
pub fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: same layout; writers only ever store initialized bytes through the view.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// Splits `raw` (whole words of `width` bytes, little-endian) into `width` planes.
///
/// `planes[p][i]` is byte `width-1-p` of word `i` after the float rotation (if `float`).
/// Each plane must be `raw.len() / width` bytes long.
pub fn split(raw: &[u8], width: usize, float: bool, planes: &mut [&mut [u8]]) {
    let mut planes: Vec<&mut [MaybeUninit<u8>]> = planes.iter_mut().map(|p| as_uninit(p)).collect();
    split_uninit(raw, width, float, &mut planes)
}

/// [`split`] into planes that may not be initialized yet (e.g. straight into a fresh
/// output file buffer); every byte of the first `raw.len() / width` of each is written.
pub fn split_uninit(raw: &[u8], width: usize, float: bool, planes: &mut [&mut [MaybeUninit<u8>]]) {
    debug_assert_eq!(planes.len(), width);
    match (width, float) {
        (1, _) => {
            let n = raw.len();
            for (o, &b) in planes[0][..n].iter_mut().zip(raw) {
                *o = MaybeUninit::new(b);
            }
        }
        (2, f) => split_2(raw, f, planes),
        (4, f) => split4(raw, f, planes),
        (8, f) => split_8(raw, f, planes),
        _ => unreachable!("word width {width}"),
    }
}

/// Plane `p` alone of [`split`]'s output, into `out` (`raw.len() / width` bytes): for a
/// chunk whose other planes are stored raw and written later, straight into the file.
pub fn extract(raw: &[u8], width: usize, float: bool, p: usize, out: &mut [u8]) {
    extract_uninit(raw, width, float, p, as_uninit(out))
}

/// [`extract`] into bytes that may not be initialized yet (all `raw.len() / width` are
/// written): one raw plane straight into the output file.
pub fn extract_uninit(
    raw: &[u8],
    width: usize,
    float: bool,
    p: usize,
    out: &mut [MaybeUninit<u8>],
) {
    debug_assert!(p < width);
    match width {
        1 => {
            for (o, &b) in out.iter_mut().zip(raw) {
                *o = MaybeUninit::new(b);
            }
        }
        2 | 4 => {
            // Whole 16-byte blocks with SSE2 (always present on x86-64), the rest portably.
            #[cfg(target_arch = "x86_64")]
            let done = if crate::entropy::avx512_bw() {
                // SAFETY: AVX-512 F and BW are present.
                unsafe { avx512::extract(raw, width, float, p, out) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present.
                unsafe { avx2::extract(raw, width, float, p, out) }
            } else {
                sse2::extract(raw, width, float, p, out)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            let (raw, out) = (&raw[done * width..], &mut out[done..]);
            if width == 2 {
                extract_w::<2>(raw, float, p, out)
            } else {
                extract_w::<4>(raw, float, p, out)
            }
        }
        _ => extract_w::<8>(raw, float, p, out),
    }
}

fn extract_w<const W: usize>(raw: &[u8], float: bool, p: usize, out: &mut [MaybeUninit<u8>]) {
    let shift = 8 * (W - 1 - p) as u32;
    let bits = 8 * W as u32;
    for (o, c) in out.iter_mut().zip(raw.chunks_exact(W)) {
        let mut a = [0u8; 8];
        a[..W].copy_from_slice(c);
        let mut w = u64::from_le_bytes(a);
        if float {
            w = (w << 1 | w >> (bits - 1)) & (u64::MAX >> (64 - bits));
        }
        *o = MaybeUninit::new((w >> shift) as u8);
    }
}

/// Inverse of [`split`]: interleaves `planes` back into little-endian words in `raw`.
pub fn merge(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) {
    debug_assert_eq!(planes.len(), width);
    match (width, float) {
        (1, _) => raw.copy_from_slice(planes[0]),
        (2, f) => merge_simd(planes, 2, f, raw),
        (4, f) => merge_simd(planes, 4, f, raw),
        (8, f) => merge_8(planes, f, raw),
        _ => unreachable!("word width {width}"),
    }
}

/// Generates split/merge for one word width. Plain indexed loops over pre-sliced planes
/// let the compiler drop bounds checks and vectorize (these run at memory speed).
macro_rules! width_impl {
    ($split:ident, $merge:ident, $t:ty, $w:literal) => {
        fn $split(raw: &[u8], float: bool, planes: &mut [&mut [MaybeUninit<u8>]]) {
            let n = raw.len() / $w;
            let outs: [&mut [MaybeUninit<u8>]; $w] = planes_array(planes, n);
            for (i, c) in raw.chunks_exact($w).enumerate() {
                let mut w = <$t>::from_le_bytes(c.try_into().unwrap());
                if float {
                    w = w.rotate_left(1);
                }
                let b = w.to_be_bytes();
                for k in 0..$w {
                    outs[k][i] = MaybeUninit::new(b[k]);
                }
            }
        }

        fn $merge(planes: &[&[u8]], float: bool, raw: &mut [u8]) {
            let n = raw.len() / $w;
            let ins: [&[u8]; $w] = std::array::from_fn(|k| &planes[k][..n]);
            for (i, c) in raw.chunks_exact_mut($w).enumerate() {
                let mut b = [0u8; $w];
                for k in 0..$w {
                    b[k] = ins[k][i];
                }
                let mut w = <$t>::from_be_bytes(b);
                if float {
                    w = w.rotate_right(1);
                }
                c.copy_from_slice(&w.to_le_bytes());
            }
        }
    };
}

width_impl!(split_2, merge_2, u16, 2);
width_impl!(split_4, merge_4, u32, 4);
width_impl!(split_8, merge_8, u64, 8);

/// 4-byte words: SSE2 (always present on x86-64) for whole blocks of 16 words, the
/// portable loop for the rest. The compiler does not vectorize this transpose by itself.
fn split4(raw: &[u8], float: bool, planes: &mut [&mut [MaybeUninit<u8>]]) {
    #[cfg(target_arch = "x86_64")]
    {
        let blocks = raw.len() / 64;
        sse2::split4(&raw[..blocks * 64], float, planes);
        let mut rest: Vec<&mut [MaybeUninit<u8>]> =
            planes.iter_mut().map(|p| &mut p[blocks * 16..]).collect();
        split_4(&raw[blocks * 64..], float, &mut rest);
    }
    #[cfg(not(target_arch = "x86_64"))]
    split_4(raw, float, planes)
}

/// 2- and 4-byte words: AVX2 (else SSE2 for 4-byte words) for whole blocks, the portable
/// loop for the rest. The compiler does not vectorize this transpose by itself.
fn merge_simd(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) {
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if crate::entropy::avx512_bw() {
            // SAFETY: AVX-512 F and BW are present.
            done = unsafe { avx512::merge(planes, width, float, raw) };
        } else if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            done = unsafe { avx2::merge(planes, width, float, raw) };
        } else if width == 4 {
            done = raw.len() / 64 * 16;
            sse2::merge4(planes, float, &mut raw[..done * 4]);
        }
    }
    let rest: [&[u8]; 4] = std::array::from_fn(|k| planes.get(k).map_or(&[][..], |p| &p[done..]));
    let raw = &mut raw[done * width..];
    if width == 2 {
        merge_2(&rest[..2], float, raw)
    } else {
        merge_4(&rest, float, raw)
    }
}

/// Calls `$f::<W, FLOAT>($args)` for the runtime `($width, $float)` of 2- or 4-byte words:
/// one monomorphized loop per case, so that hot loops carry no branch.
#[cfg(target_arch = "x86_64")]
macro_rules! by_word {
    ($width:expr, $float:expr, $f:ident ( $($a:expr),* )) => {
        match ($width, $float) {
            (2, true) => $f::<2, true>($($a),*),
            (2, false) => $f::<2, false>($($a),*),
            (_, true) => $f::<4, true>($($a),*),
            (_, false) => $f::<4, false>($($a),*),
        }
    };
}

/// The whole blocks of `block` words that a wide merge of `planes` into `raw` covers, the
/// planes' starts (padded to 4 with the last) and the output's start.
#[cfg(target_arch = "x86_64")]
fn merge_layout(
    planes: &[&[u8]],
    width: usize,
    raw: &mut [u8],
    block: usize,
) -> (usize, [*const u8; 4], *mut u8) {
    let blocks = planes
        .iter()
        .take(width)
        .fold(raw.len() / (block * width), |b, p| b.min(p.len() / block));
    let src: [*const u8; 4] = std::array::from_fn(|k| planes[k.min(width - 1)].as_ptr());
    (blocks, src, raw.as_mut_ptr())
}

/// The whole blocks of `block` words that a wide extraction from `raw` into `out` covers,
/// and the input's and output's starts.
#[cfg(target_arch = "x86_64")]
fn extract_layout(
    raw: &[u8],
    width: usize,
    out: &mut [MaybeUninit<u8>],
    block: usize,
) -> (usize, *const u8, *mut u8) {
    let blocks = (raw.len() / (block * width)).min(out.len() / block);
    (blocks, raw.as_ptr(), out.as_mut_ptr() as *mut u8)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! Plane extraction and merging as in [`super::avx2`], 64 words at a time (AVX-512 F
    //! and BW).
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Plane `p` of 2- or 4-byte words, 64 words at a time; returns the words done.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn extract(
        raw: &[u8],
        width: usize,
        float: bool,
        p: usize,
        out: &mut [MaybeUninit<u8>],
    ) -> usize {
        let (blocks, src, dst) = super::extract_layout(raw, width, out, 64);
        let shift = 8 * (width - 1 - p) as u32;
        by_word!(width, float, words(src, dst, blocks, shift));
        blocks * 64
    }

    /// `blocks` x 64 words of `W` bytes at `src` (floats with the sign rotated down) ->
    /// byte `shift / 8` from the bottom of each, 64 bytes at `dst` per block.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn words<const W: usize, const FLOAT: bool>(
        src: *const u8,
        dst: *mut u8,
        blocks: usize,
        shift: u32,
    ) {
        let count = _mm_cvtsi32_si128(shift as i32);
        for b in 0..blocks {
            // SAFETY (caller): block `b` reads `64 W` bytes at `src + 64 W b` and writes 64
            // at `dst + 64 b`.
            // Stored in 32- or 16-byte parts: joined into one vector first is slower.
            let ld = |k: usize| _mm512_loadu_si512(src.add(64 * W * b + 64 * k) as *const __m512i);
            if W == 2 {
                let byte =
                    |v: __m512i| _mm512_cvtepi16_epi8(_mm512_srl_epi16(rotl16::<FLOAT>(v), count));
                _mm256_storeu_si256(dst.add(64 * b) as *mut __m256i, byte(ld(0)));
                _mm256_storeu_si256(dst.add(64 * b + 32) as *mut __m256i, byte(ld(1)));
            } else {
                for k in 0..4 {
                    let v = _mm512_cvtepi32_epi8(_mm512_srl_epi32(rotl32::<FLOAT>(ld(k)), count));
                    _mm_storeu_si128(dst.add(64 * b + 16 * k) as *mut __m128i, v);
                }
            }
        }
    }

    /// 16-bit words with the sign rotated down (floats) or as they are.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rotl16<const FLOAT: bool>(v: __m512i) -> __m512i {
        if FLOAT {
            _mm512_or_si512(_mm512_slli_epi16::<1>(v), _mm512_srli_epi16::<15>(v))
        } else {
            v
        }
    }

    /// 32-bit words with the sign rotated down (floats) or as they are.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rotl32<const FLOAT: bool>(v: __m512i) -> __m512i {
        if FLOAT {
            _mm512_rol_epi32::<1>(v)
        } else {
            v
        }
    }

    /// Byte `count / 8` from the bottom (floats with the sign rotated down) of each of the
    /// 64 words of `W` (2 or 4) bytes at `src`: 64 bytes of a plane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn plane_bytes<const W: usize, const FLOAT: bool>(
        src: *const u8,
        count: __m128i,
    ) -> __m512i {
        let ld = |k: usize| _mm512_loadu_si512(src.add(64 * k) as *const __m512i);
        if W == 2 {
            let byte =
                |v: __m512i| _mm512_cvtepi16_epi8(_mm512_srl_epi16(rotl16::<FLOAT>(v), count));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(byte(ld(0))), byte(ld(1)))
        } else {
            let byte =
                |k: usize| _mm512_cvtepi32_epi8(_mm512_srl_epi32(rotl32::<FLOAT>(ld(k)), count));
            let lo = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(byte(0)), byte(1));
            let hi = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(byte(2)), byte(3));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        }
    }

    /// Interleaves 2- or 4-byte words from `planes` into `raw`, 64 words at a time;
    /// returns the words done.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn merge(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) -> usize {
        let (blocks, src, dst) = super::merge_layout(planes, width, raw, 64);
        by_word!(width, float, merge_words(src, dst, blocks));
        blocks * 64
    }

    /// `blocks` x 64 words of `W` bytes from the planes at `src` to `dst`.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn merge_words<const W: usize, const FLOAT: bool>(
        src: [*const u8; 4],
        dst: *mut u8,
        blocks: usize,
    ) {
        for b in 0..blocks {
            // SAFETY (caller): block `b` reads 64 bytes of each plane at `64 b` and writes
            // `64 W` bytes at `dst + 64 W b`.
            let ld = |k: usize| _mm512_loadu_si512(src[k].add(64 * b) as *const __m512i);
            let planes = if W == 2 {
                [ld(0), ld(1), ld(1), ld(1)]
            } else {
                [ld(0), ld(1), ld(2), ld(3)]
            };
            store_words::<W, FLOAT>(planes, dst.add(64 * W * b));
        }
    }

    /// Stores the 64 words of `W` (2 or 4) bytes whose planes are `planes[..W]` (plane 0
    /// the most significant byte; floats rotated back) at `dst` (`64 W` bytes). The in-lane
    /// unpacks of the AVX2 loop leave each 128-bit lane holding a run of words; 128-bit
    /// lane shuffles put the runs in order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn store_words<const W: usize, const FLOAT: bool>(
        planes: [__m512i; 4],
        dst: *mut u8,
    ) {
        let unrotate = |v: __m512i| {
            if !FLOAT {
                v
            } else if W == 2 {
                _mm512_or_si512(_mm512_srli_epi16::<1>(v), _mm512_slli_epi16::<15>(v))
            } else {
                _mm512_ror_epi32::<1>(v)
            }
        };
        let st = |k: usize, v: __m512i| {
            _mm512_storeu_si512(dst.add(64 * k) as *mut __m512i, unrotate(v))
        };
        if W == 2 {
            let (hi, lo) = (planes[0], planes[1]);
            // Lane L of `a`: words 16L..16L+8; of `c`: words 16L+8..16L+16.
            let (a, c) = (_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi));
            let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
            let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
            st(0, _mm512_permutex2var_epi64(a, first, c));
            st(1, _mm512_permutex2var_epi64(a, second, c));
        } else {
            let [b0, b1, b2, b3] = planes;
            let (lo_lo, lo_hi) = (_mm512_unpacklo_epi8(b3, b2), _mm512_unpacklo_epi8(b1, b0));
            let (hi_lo, hi_hi) = (_mm512_unpackhi_epi8(b3, b2), _mm512_unpackhi_epi8(b1, b0));
            // Lane L of `wj`: words 16L+4j..16L+4j+4; a 4x4 transpose of lanes orders them.
            let w0 = _mm512_unpacklo_epi16(lo_lo, lo_hi);
            let w1 = _mm512_unpackhi_epi16(lo_lo, lo_hi);
            let w2 = _mm512_unpacklo_epi16(hi_lo, hi_hi);
            let w3 = _mm512_unpackhi_epi16(hi_lo, hi_hi);
            let t0 = _mm512_shuffle_i64x2::<0x44>(w0, w1);
            let t1 = _mm512_shuffle_i64x2::<0x44>(w2, w3);
            let t2 = _mm512_shuffle_i64x2::<0xee>(w0, w1);
            let t3 = _mm512_shuffle_i64x2::<0xee>(w2, w3);
            st(0, _mm512_shuffle_i64x2::<0x88>(t0, t1));
            st(1, _mm512_shuffle_i64x2::<0xdd>(t0, t1));
            st(2, _mm512_shuffle_i64x2::<0x88>(t2, t3));
            st(3, _mm512_shuffle_i64x2::<0xdd>(t2, t3));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Plane extraction and merging 32 words at a time, one loop per (width, float) so
    //! that the hot loop carries no branch.
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Plane `p` of 2- or 4-byte words, 32 words at a time; returns the words done.
    #[target_feature(enable = "avx2")]
    pub unsafe fn extract(
        raw: &[u8],
        width: usize,
        float: bool,
        p: usize,
        out: &mut [MaybeUninit<u8>],
    ) -> usize {
        let (blocks, src, dst) = super::extract_layout(raw, width, out, 32);
        let shift = _mm_cvtsi32_si128(8 * (width - 1 - p) as i32);
        by_word!(width, float, words(src, dst, blocks, shift));
        blocks * 32
    }

    /// Interleaves 2- or 4-byte words from `planes` into `raw`, 32 words at a time (the
    /// inverse of [`extract`] over all planes); returns the words done.
    #[target_feature(enable = "avx2")]
    pub unsafe fn merge(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) -> usize {
        let (blocks, src, dst) = super::merge_layout(planes, width, raw, 32);
        by_word!(width, float, merge_words(src, dst, blocks));
        blocks * 32
    }

    /// `blocks` x 32 words of `W` bytes from the planes at `src` (plane 0 the most
    /// significant byte; floats rotated back) to `dst`. In-lane unpacks leave words 0-7 |
    /// 16-23 and 8-15 | 24-31 in the two halves; 128-bit permutes put them in order.
    #[target_feature(enable = "avx2")]
    unsafe fn merge_words<const W: usize, const FLOAT: bool>(
        src: [*const u8; 4],
        dst: *mut u8,
        blocks: usize,
    ) {
        let unrotate = |v: __m256i| {
            if !FLOAT {
                v
            } else if W == 2 {
                _mm256_or_si256(_mm256_srli_epi16::<1>(v), _mm256_slli_epi16::<15>(v))
            } else {
                _mm256_or_si256(_mm256_srli_epi32::<1>(v), _mm256_slli_epi32::<31>(v))
            }
        };
        for b in 0..blocks {
            // SAFETY (caller): block `b` reads 32 bytes of each plane at `32 b` and writes
            // `32 W` bytes at `dst + 32 W b`.
            let ld = |k: usize| _mm256_loadu_si256(src[k].add(32 * b) as *const __m256i);
            let st = |k: usize, v: __m256i| {
                _mm256_storeu_si256(dst.add(32 * W * b + 32 * k) as *mut __m256i, unrotate(v))
            };
            if W == 2 {
                let (hi, lo) = (ld(0), ld(1));
                let (a, c) = (_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi));
                st(0, _mm256_permute2x128_si256::<0x20>(a, c));
                st(1, _mm256_permute2x128_si256::<0x31>(a, c));
            } else {
                let (b0, b1, b2, b3) = (ld(0), ld(1), ld(2), ld(3));
                let (lo_lo, lo_hi) = (_mm256_unpacklo_epi8(b3, b2), _mm256_unpacklo_epi8(b1, b0));
                let (hi_lo, hi_hi) = (_mm256_unpackhi_epi8(b3, b2), _mm256_unpackhi_epi8(b1, b0));
                let w0 = _mm256_unpacklo_epi16(lo_lo, lo_hi);
                let w1 = _mm256_unpackhi_epi16(lo_lo, lo_hi);
                let w2 = _mm256_unpacklo_epi16(hi_lo, hi_hi);
                let w3 = _mm256_unpackhi_epi16(hi_lo, hi_hi);
                st(0, _mm256_permute2x128_si256::<0x20>(w0, w1));
                st(1, _mm256_permute2x128_si256::<0x20>(w2, w3));
                st(2, _mm256_permute2x128_si256::<0x31>(w0, w1));
                st(3, _mm256_permute2x128_si256::<0x31>(w2, w3));
            }
        }
    }

    /// Each `W`-byte lane of `v` (sign rotated down for floats) shifted right by `shift`,
    /// masked to its low byte.
    #[inline(always)]
    unsafe fn byte<const W: usize, const FLOAT: bool>(v: __m256i, shift: __m128i) -> __m256i {
        if W == 2 {
            let v = if FLOAT {
                _mm256_or_si256(_mm256_slli_epi16::<1>(v), _mm256_srli_epi16::<15>(v))
            } else {
                v
            };
            _mm256_and_si256(_mm256_srl_epi16(v, shift), _mm256_set1_epi16(0xff))
        } else {
            let v = if FLOAT {
                _mm256_or_si256(_mm256_slli_epi32::<1>(v), _mm256_srli_epi32::<31>(v))
            } else {
                v
            };
            _mm256_and_si256(_mm256_srl_epi32(v, shift), _mm256_set1_epi32(0xff))
        }
    }

    /// `blocks` x 32 words of `W` bytes at `src` -> 32 bytes each at `dst`.
    #[target_feature(enable = "avx2")]
    unsafe fn words<const W: usize, const FLOAT: bool>(
        src: *const u8,
        dst: *mut u8,
        blocks: usize,
        shift: __m128i,
    ) {
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..blocks {
            // SAFETY (caller): block `b` reads `32 W` bytes at `src + 32 W b` and writes 32
            // at `dst + 32 b`.
            let ld = |k: usize| {
                let v = _mm256_loadu_si256(src.add(32 * W * b + 32 * k) as *const __m256i);
                byte::<W, FLOAT>(v, shift)
            };
            let v = if W == 2 {
                _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(ld(0), ld(1)))
            } else {
                let lo = _mm256_packs_epi32(ld(0), ld(1));
                let hi = _mm256_packs_epi32(ld(2), ld(3));
                _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order)
            };
            _mm256_storeu_si256(dst.add(32 * b) as *mut __m256i, v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    //! 16 words at a time: byte interleave/deinterleave with unpack and pack instructions.
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `raw.len()` is a multiple of 64; each plane holds at least `raw.len() / 4` bytes.
    pub fn split4(raw: &[u8], float: bool, planes: &mut [&mut [MaybeUninit<u8>]]) {
        let mask = unsafe { _mm_set1_epi32(0xff) };
        for (b, c) in raw.chunks_exact(64).enumerate() {
            // SAFETY: SSE2 is part of x86-64; loads read `c` (64 bytes), stores write 16
            // bytes at `16 * b` of planes that hold at least `16 * (b + 1)` bytes.
            unsafe {
                let mut w = [_mm_setzero_si128(); 4];
                for (k, v) in w.iter_mut().enumerate() {
                    *v = _mm_loadu_si128(c.as_ptr().add(16 * k) as *const __m128i);
                    if float {
                        *v = _mm_or_si128(_mm_slli_epi32::<1>(*v), _mm_srli_epi32::<31>(*v));
                    }
                }
                let byte = |v: __m128i, shift: i32| -> __m128i {
                    _mm_and_si128(_mm_srl_epi32(v, _mm_cvtsi32_si128(shift)), mask)
                };
                for (p, plane) in planes.iter_mut().enumerate().take(4) {
                    let shift = 8 * (3 - p as i32);
                    let lo = _mm_packs_epi32(byte(w[0], shift), byte(w[1], shift));
                    let hi = _mm_packs_epi32(byte(w[2], shift), byte(w[3], shift));
                    let out = _mm_packus_epi16(lo, hi);
                    _mm_storeu_si128(plane[16 * b..16 * b + 16].as_mut_ptr() as *mut __m128i, out);
                }
            }
        }
    }

    /// Plane `p` of 2- or 4-byte words, 16 words at a time; returns the words done.
    pub fn extract(
        raw: &[u8],
        width: usize,
        float: bool,
        p: usize,
        out: &mut [MaybeUninit<u8>],
    ) -> usize {
        let blocks = (raw.len() / (16 * width)).min(out.len() / 16);
        // SAFETY: SSE2 is part of x86-64; block `b` reads the `16 * width` bytes of `raw`
        // at `16 * width * b` and writes the 16 bytes of `out` at `16 * b`, both in bounds.
        unsafe {
            let shift = _mm_cvtsi32_si128(8 * (width - 1 - p) as i32);
            let mask = if width == 2 {
                _mm_set1_epi16(0xff)
            } else {
                _mm_set1_epi32(0xff)
            };
            let ld = |b: usize, k: usize| {
                _mm_loadu_si128(raw.as_ptr().add(16 * width * b + 16 * k) as *const __m128i)
            };
            for b in 0..blocks {
                let v = if width == 2 {
                    let byte = |v: __m128i| {
                        let v = if float {
                            _mm_or_si128(_mm_slli_epi16::<1>(v), _mm_srli_epi16::<15>(v))
                        } else {
                            v
                        };
                        _mm_and_si128(_mm_srl_epi16(v, shift), mask)
                    };
                    _mm_packus_epi16(byte(ld(b, 0)), byte(ld(b, 1)))
                } else {
                    let byte = |v: __m128i| {
                        let v = if float {
                            _mm_or_si128(_mm_slli_epi32::<1>(v), _mm_srli_epi32::<31>(v))
                        } else {
                            v
                        };
                        _mm_and_si128(_mm_srl_epi32(v, shift), mask)
                    };
                    let lo = _mm_packs_epi32(byte(ld(b, 0)), byte(ld(b, 1)));
                    let hi = _mm_packs_epi32(byte(ld(b, 2)), byte(ld(b, 3)));
                    _mm_packus_epi16(lo, hi)
                };
                _mm_storeu_si128(out.as_mut_ptr().add(16 * b) as *mut __m128i, v);
            }
        }
        blocks * 16
    }

    /// `raw.len()` is a multiple of 64; each plane holds at least `raw.len() / 4` bytes.
    pub fn merge4(planes: &[&[u8]], float: bool, raw: &mut [u8]) {
        for (b, c) in raw.chunks_exact_mut(64).enumerate() {
            // SAFETY: SSE2 is part of x86-64; each load reads 16 in-bounds plane bytes (the
            // slice index checks it) and the stores write the 64 bytes of `c`.
            unsafe {
                let ld = |p: usize| {
                    _mm_loadu_si128(planes[p][16 * b..16 * b + 16].as_ptr() as *const __m128i)
                };
                let (b0, b1, b2, b3) = (ld(0), ld(1), ld(2), ld(3));
                let lo_lo = _mm_unpacklo_epi8(b3, b2);
                let lo_hi = _mm_unpacklo_epi8(b1, b0);
                let hi_lo = _mm_unpackhi_epi8(b3, b2);
                let hi_hi = _mm_unpackhi_epi8(b1, b0);
                let words = [
                    _mm_unpacklo_epi16(lo_lo, lo_hi),
                    _mm_unpackhi_epi16(lo_lo, lo_hi),
                    _mm_unpacklo_epi16(hi_lo, hi_hi),
                    _mm_unpackhi_epi16(hi_lo, hi_hi),
                ];
                for (k, mut v) in words.into_iter().enumerate() {
                    if float {
                        v = _mm_or_si128(_mm_srli_epi32::<1>(v), _mm_slli_epi32::<31>(v));
                    }
                    _mm_storeu_si128(c.as_mut_ptr().add(16 * k) as *mut __m128i, v);
                }
            }
        }
    }
}

/// The first `W` planes, each cut to exactly `n` bytes.
fn planes_array<'a, const W: usize>(
    planes: &'a mut [&mut [MaybeUninit<u8>]],
    n: usize,
) -> [&'a mut [MaybeUninit<u8>]; W] {
    let mut it = planes.iter_mut().map(|p| &mut p[..n]);
    std::array::from_fn(|_| it.next().expect("one plane per word byte"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(raw: &[u8], width: usize, float: bool) -> Vec<u8> {
        let n = raw.len() / width;
        let mut bufs = vec![vec![0u8; n]; width];
        {
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            split(raw, width, float, &mut planes);
        }
        let planes: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let mut out = vec![0u8; raw.len()];
        merge(&planes, width, float, &mut out);
        out
    }

    #[test]
    fn fp32_exponent_is_plane_zero() {
        let x = 1.5f32; // exponent 127, sign 0
        let mut bufs = vec![vec![0u8; 1]; 4];
        let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        split(&x.to_le_bytes(), 4, true, &mut planes);
        assert_eq!(bufs[0][0], 127);
        let y = -1.5f32;
        let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        split(&y.to_le_bytes(), 4, true, &mut planes);
        assert_eq!(bufs[0][0], 127);
        assert_eq!(bufs[3][0] & 1, 1, "sign lands in the lowest bit");
    }

    /// The SSE2 path must match the portable one byte for byte.
    #[test]
    fn split4_matches_portable() {
        let raw: Vec<u8> = (0..64 * 9 + 12).map(|i| (i * 131 % 251) as u8).collect();
        for float in [false, true] {
            let n = raw.len() / 4;
            let (mut a, mut b) = (vec![vec![0u8; n]; 4], vec![vec![0u8; n]; 4]);
            let mut pa: Vec<&mut [MaybeUninit<u8>]> = a.iter_mut().map(|x| as_uninit(x)).collect();
            split4(&raw, float, &mut pa);
            let mut pb: Vec<&mut [MaybeUninit<u8>]> = b.iter_mut().map(|x| as_uninit(x)).collect();
            split_4(&raw, float, &mut pb);
            assert_eq!(a, b);
            let planes: Vec<&[u8]> = a.iter().map(|x| x.as_slice()).collect();
            let (mut ra, mut rb) = (vec![0u8; raw.len()], vec![0u8; raw.len()]);
            merge_simd(&planes, 4, float, &mut ra);
            merge_4(&planes, float, &mut rb);
            assert_eq!(ra, rb);
            assert_eq!(ra, raw);
        }
    }

    proptest! {
        #[test]
        fn extract_matches_split(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                 wi in 0usize..4, float in any::<bool>()) {
            let width = [1, 2, 4, 8][wi];
            let raw = &raw[..raw.len() / width * width];
            let n = raw.len() / width;
            let mut bufs = vec![vec![0u8; n]; width];
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            split(raw, width, float, &mut planes);
            for (p, want) in bufs.iter().enumerate() {
                let mut got = vec![0u8; n];
                extract(raw, width, float, p, &mut got);
                prop_assert_eq!(&got, want);
            }
        }

        /// The SSE2 fallback (used where AVX2 is absent) agrees with the portable loop.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn sse2_extract_matches_portable(raw in proptest::collection::vec(any::<u8>(), 0..700),
                                         four in any::<bool>(), float in any::<bool>(),
                                         p in 0usize..4) {
            let width = if four { 4 } else { 2 };
            let (p, raw) = (p % width, &raw[..raw.len() / width * width]);
            let n = raw.len() / width;
            let (mut got, mut want) = (vec![0u8; n], vec![0u8; n]);
            let done = sse2::extract(raw, width, float, p, as_uninit(&mut got));
            let (rest_raw, rest) = (&raw[done * width..], as_uninit(&mut got[done..]));
            if four {
                extract_w::<4>(rest_raw, float, p, rest);
                extract_w::<4>(raw, float, p, as_uninit(&mut want));
            } else {
                extract_w::<2>(rest_raw, float, p, rest);
                extract_w::<2>(raw, float, p, as_uninit(&mut want));
            }
            prop_assert_eq!(got, want);
        }

        /// The SSE2 merge of 4-byte words (used where AVX2 is absent) agrees with the
        /// portable loop.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn sse2_merge4_matches_portable(raw in proptest::collection::vec(any::<u8>(), 0..300),
                                        float in any::<bool>()) {
            let raw = &raw[..raw.len() / 64 * 64];
            let n = raw.len() / 4;
            let mut bufs = vec![vec![0u8; n]; 4];
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            split(raw, 4, float, &mut planes);
            let planes: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            let mut out = vec![0u8; raw.len()];
            sse2::merge4(&planes, float, &mut out);
            prop_assert_eq!(out, raw.to_vec());
        }

        /// Every wide extract and merge this CPU has (AVX2, AVX-512) matches the portable
        /// split and merge.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn wide_kernels_match_portable(raw in proptest::collection::vec(any::<u8>(), 0..3000),
                                      four in any::<bool>(), float in any::<bool>()) {
            let width = if four { 4 } else { 2 };
            let raw = &raw[..raw.len() / width * width];
            let n = raw.len() / width;
            let mut bufs = vec![vec![0u8; n]; width];
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            split(raw, width, float, &mut planes);
            let planes: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            type Merge = unsafe fn(&[&[u8]], usize, bool, &mut [u8]) -> usize;
            let kernels: [(bool, Merge); 2] = [
                (std::arch::is_x86_feature_detected!("avx2"), avx2::merge),
                (crate::entropy::avx512_bw(), avx512::merge),
            ];
            for (_, kernel) in kernels.into_iter().filter(|k| k.0) {
                let mut out = vec![0u8; raw.len()];
                // SAFETY: the CPU has the kernel's features (filtered above).
                let done = unsafe { kernel(&planes, width, float, &mut out) };
                prop_assert_eq!(&out[..done * width], &raw[..done * width]);
            }
            type Extract = unsafe fn(&[u8], usize, bool, usize, &mut [MaybeUninit<u8>]) -> usize;
            let kernels: [(bool, Extract); 2] = [
                (std::arch::is_x86_feature_detected!("avx2"), avx2::extract),
                (crate::entropy::avx512_bw(), avx512::extract),
            ];
            for (_, kernel) in kernels.into_iter().filter(|k| k.0) {
                for (p, plane) in planes.iter().enumerate() {
                    let mut out = vec![0u8; n];
                    // SAFETY: the CPU has the kernel's features (filtered above).
                    let done = unsafe { kernel(raw, width, float, p, as_uninit(&mut out)) };
                    prop_assert_eq!(&out[..done], &plane[..done]);
                }
            }
        }

        #[test]
        fn split_merge_roundtrip(raw in proptest::collection::vec(any::<u8>(), 0..1100),
                                 wi in 0usize..4, float in any::<bool>()) {
            let width = [1, 2, 4, 8][wi];
            let raw = &raw[..raw.len() / width * width];
            prop_assert_eq!(roundtrip(raw, width, float), raw.to_vec());
        }
    }
}

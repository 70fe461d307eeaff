//! Decoding a kind-2 or kind-3 residual chunk of 32-bit words in one pass: each word's
//! context (from its reference word), its residual length or token (context rANS) and the
//! word itself (raw bits and reference), 8 words at a time, with no arrays of contexts or
//! symbols in between. Both kinds code every word's symbol, so stream position i is word i.

use super::decode::{check_used, coded_model, mismatch, raw_bits, Models, MISSING};
use super::word::{load, token_bits, unresidual, untoken};
use super::{contexts, side, CONTEXTS};
use crate::container::bytes::Reader;
use crate::entropy::bits::BitReader;
use crate::entropy::context::{skip_stream, Blocks, Fused};
use crate::error::{Error, Result};
use crate::hash::Hasher128;

/// Output bytes hashed at a time: written words still in L1.
const HASH_BYTES: usize = 4 * crate::codec::HASH_BLOCK_WORDS;

/// Raw-bit bytes readable from [`Sink::window`]: what a group of 16 reads (the AVX-512
/// kernels' [`super::simd512::WINDOW16`]), rounded up; a group of 8 reads 40.
const WINDOW: usize = 72;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(WINDOW >= super::simd512::WINDOW16 && WINDOW >= 40);

/// Decodes the stream and raw bits that follow in `r` (to the chunk's end) into the
/// `reference.len() / 4` words of `out`, the stream's symbols being lengths (`tb` None,
/// kind 2) or tokens of `tb` top bits (kind 3 and 4); errors as the two-pass decoder
/// does. Each word's table slot comes from its reference word's exponent or, for side
/// contexts (kind 4), from its side and reference words ([`decode32_side`]).
/// With `hash`, returns [`crate::hash::h128`] of `out`, fed block by block as it is
/// written.
pub(super) fn decode32(
    r: &mut Reader,
    reference: &[u8],
    out: &mut [u8],
    (float, e_max, off, tb): (bool, u8, u32, Option<u32>),
    m: &Models,
    hash: bool,
) -> Result<Option<u128>> {
    let (model, lut) = coded_model(m)?;
    decode32_side(
        r,
        reference,
        out,
        (float, e_max, off, tb),
        (&model, lut),
        None,
        hash,
    )
}

/// [`decode32`] with the decode model and slot map already made, and optionally a side
/// tensor's words and the chunk's `(base, shift)`, whose contexts ([`super::side`])
/// every word then takes, mapped through `lut`.
pub(super) fn decode32_side(
    r: &mut Reader,
    reference: &[u8],
    out: &mut [u8],
    (float, e_max, off, tb): (bool, u8, u32, Option<u32>),
    (model, lut): (&crate::entropy::context::DecodeModel, [u8; CONTEXTS]),
    side: Option<(&[u8], (i16, u8))>,
    hash: bool,
) -> Result<Option<u128>> {
    let mut ahead = r.clone();
    skip_stream(&mut ahead)?;
    let bits = raw_bits(&mut ahead)?;
    let n = reference.len().min(out.len()) / 4;
    let n = side.map_or(n, |(s, _)| n.min(s.len() / 4));
    // Only an output of whole words is hashed here: its every byte is written.
    let mut hasher = (hash && out.len() == 4 * n).then(Hasher128::default);
    let (reference, out) = (&reference[..4 * n], &mut out[..4 * n]);
    let data = (reference, out, bits, lut);
    let params = (e_max, off, tb.unwrap_or(0));
    let side = side.map(|(s, at)| (&s[..4 * n], at));
    let h = hasher.as_mut();
    let used = match (float, tb.is_some()) {
        (true, false) => run::<true, false>(r, model, n, data, params, side, h)?,
        (false, false) => run::<false, false>(r, model, n, data, params, side, h)?,
        (true, true) => run::<true, true>(r, model, n, data, params, side, h)?,
        (false, true) => run::<false, true>(r, model, n, data, params, side, h)?,
    };
    check_used(used, bits.len())?;
    Ok(hasher.map(|h| h.digest()))
}

/// Runs the fused decode into a sink of `data` (reference, output, raw bits, slot map),
/// `params` and the side words, feeding the output to `hasher`, then the sink's checks;
/// returns the raw bits used.
fn run<const F: bool, const T: bool>(
    r: &mut Reader,
    model: &crate::entropy::context::DecodeModel,
    n: usize,
    (reference, out, bits, lut): (&[u8], &mut [u8], &[u8], [u8; CONTEXTS]),
    params: (u8, u32, u32),
    side: Option<(&[u8], (i16, u8))>,
    hasher: Option<&mut Hasher128>,
) -> Result<usize> {
    let mut sink = Sink::<F, T>::new(reference, out, bits, lut, params, side);
    sink.hasher = hasher;
    model.decode_with(r, n, &mut sink, BLOCKS.with(|b| b.get()))?;
    sink.hash_to(sink.out.len());
    let (most, worst) = sink.seen();
    if worst == MISSING && n > 0 {
        return Err(Error::Corrupt(
            "symbol under a context without a table".into(),
        ));
    }
    if F && side.is_none() && most != sink.e_max {
        return Err(mismatch());
    }
    Ok(sink.bits.position())
}

thread_local! {
    /// The loop whole blocks take (tests pick each one to compare).
    static BLOCKS: std::cell::Cell<Blocks> = const { std::cell::Cell::new(Blocks::Widest) };
}

/// The words' side of the fused decode (`F`: float words; `T`: symbols are tokens of
/// `tb` top bits, else lengths).
struct Sink<'a, const F: bool, const T: bool> {
    reference: &'a [u8],
    out: &'a mut [u8],
    bits: BitReader<'a>,
    /// The raw bits' last (up to) [`WINDOW`] bytes, then zeros: groups near the end read
    /// here.
    tail: [u8; 2 * WINDOW],
    tail_at: usize,
    /// Slot of each context ([`MISSING`] without a table).
    lut: [u8; CONTEXTS],
    /// The side words, when their contexts (with the chunk's `(base, shift)`) give the
    /// slots instead of the reference's exponents.
    side: Option<(&'a [u8], (i16, u8))>,
    /// Fed the output in blocks of [`HASH_BYTES`] as they are written, up to `hashed`.
    hasher: Option<&'a mut Hasher128>,
    hashed: usize,
    e_max: u8,
    off: u32,
    tb: u32,
    /// Largest top byte and slot seen by the scalar path.
    most: u8,
    worst: u8,
    #[cfg(target_arch = "x86_64")]
    v: simd::State,
    /// The AVX-512 state, made only where the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    v512: Option<simd::State512>,
}

impl<'a, const F: bool, const T: bool> Sink<'a, F, T> {
    fn new(
        reference: &'a [u8],
        out: &'a mut [u8],
        bits: &'a [u8],
        lut: [u8; CONTEXTS],
        (e_max, off, tb): (u8, u32, u32),
        side: Option<(&'a [u8], (i16, u8))>,
    ) -> Self {
        let at = side.map_or((0, 0), |(_, at)| at);
        let tail_at = bits.len().saturating_sub(WINDOW);
        let mut tail = [0u8; 2 * WINDOW];
        tail[..bits.len() - tail_at].copy_from_slice(&bits[tail_at..]);
        Sink {
            reference,
            out,
            bits: BitReader::new(bits),
            tail,
            tail_at,
            lut,
            side,
            hasher: None,
            hashed: 0,
            e_max,
            off,
            tb,
            most: 0,
            worst: 0,
            #[cfg(target_arch = "x86_64")]
            v: simd::State::new(&lut, (e_max, off, tb), at),
            #[cfg(target_arch = "x86_64")]
            v512: crate::entropy::avx512().then(|| {
                // SAFETY: the CPU has AVX-512F.
                unsafe { simd::State512::new(&lut, (e_max, off, tb), at) }
            }),
        }
    }

    /// Largest top byte (floats) and slot seen over every word.
    fn seen(&self) -> (u8, u8) {
        #[cfg(target_arch = "x86_64")]
        let (most, worst) = {
            let (m, w) = self.v.seen();
            let (m5, w5) = self.v512.as_ref().map_or((0, 0), simd::State512::seen);
            (m.max(m5), w.max(w5))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (most, worst) = (0, 0);
        (self.most.max(most), self.worst.max(worst))
    }

    /// Feeds the output written since the last call, up to byte `end`, to the hasher.
    #[inline(always)]
    fn hash_to(&mut self, end: usize) {
        if let Some(h) = self.hasher.as_deref_mut() {
            h.update(&self.out[self.hashed..end]);
            self.hashed = end;
        }
    }

    /// [`WINDOW`] readable bytes from the raw bits' byte `at` (zeros past their end).
    #[inline(always)]
    fn window(&self, at: usize) -> *const u8 {
        let data = self.bits.data();
        if at + WINDOW <= data.len() {
            // SAFETY: in bounds, checked just above.
            unsafe { data.as_ptr().add(at) }
        } else {
            // Here `at > data.len() - WINDOW`: fewer than WINDOW bytes past `tail_at`, so
            // WINDOW more fit in `tail`.
            self.tail[at.min(data.len()) - self.tail_at..].as_ptr()
        }
    }

    /// Feeds the hasher the whole blocks written up to byte `end` (a group's end).
    #[inline(always)]
    fn hash_blocks(&mut self, end: usize) {
        if self.hasher.is_some() && end - self.hashed >= HASH_BYTES {
            self.hash_to(end);
        }
    }
}

impl<const F: bool, const T: bool> Fused for Sink<'_, F, T> {
    #[inline(always)]
    fn slot(&mut self, i: usize) -> u8 {
        let c = if let Some((side, (base, shift))) = self.side {
            let at = 4 * i..4 * i + 4;
            let k = side::key::<4>(&side[at.clone()], &self.reference[at], 21);
            side::context(k, base, shift)
        } else if F {
            let w = &self.reference[4 * i..4 * i + 4];
            self.most = self.most.max(contexts::top::<4>(w));
            contexts::context_of::<4>(w, self.e_max)
        } else {
            0
        };
        let s = self.lut[c as usize];
        self.worst = self.worst.max(s);
        s
    }

    #[inline(always)]
    fn take(&mut self, i: usize, sym: u8) {
        let z = if T {
            let raw = self.bits.get_short(token_bits(sym, self.tb));
            untoken(sym, self.tb, raw)
        } else {
            let n = sym as u32;
            // n <= 32 (the tables were checked): the leading 1 is (1 << n) >> 1 (none for 0).
            ((1u64 << n) >> 1) | self.bits.get_short(n.saturating_sub(1))
        };
        let r = load::<4>(&self.reference[4 * i..]);
        let x = unresidual(z, r, self.off as u64, 32, F) as u32;
        self.out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn slots8(&mut self, at: usize) -> std::arch::x86_64::__m256i {
        let r = self.reference.as_ptr().add(4 * at);
        match self.side {
            Some((side, _)) => self.v.side8(side.as_ptr().add(4 * at), r),
            None => self.v.slots8::<F>(r),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn take8(&mut self, at: usize, entries: std::arch::x86_64::__m256i) {
        let p = self.bits.position();
        let src = self.window(p / 8);
        let used = self.v.take8::<F, T>(
            entries,
            src,
            p & 7,
            self.reference.as_ptr().add(4 * at),
            self.out.as_mut_ptr().add(4 * at),
        );
        self.bits.skip(used);
        // Whole blocks while they are in L1 (a block ends on a group of 8).
        self.hash_blocks(4 * (at + 8));
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn slots16(&mut self, at: usize) -> std::arch::x86_64::__m512i {
        let v = self.v512.as_mut().expect("AVX-512 state");
        let r = self.reference.as_ptr().add(4 * at);
        match self.side {
            Some((side, _)) => v.side16(side.as_ptr().add(4 * at), r),
            None => v.slots16::<F>(r),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn take16(&mut self, at: usize, entries: std::arch::x86_64::__m512i) {
        let p = self.bits.position();
        let src = self.window(p / 8);
        let v = self.v512.as_ref().expect("AVX-512 state");
        let used = v.take16::<F, T>(
            entries,
            src,
            p & 7,
            self.reference.as_ptr().add(4 * at),
            self.out.as_mut_ptr().add(4 * at),
        );
        self.bits.skip(used);
        // A block ends on a group of 16 as well (HASH_BYTES is a multiple of 64).
        self.hash_blocks(4 * (at + 16));
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The sink's AVX2 state: constants and the running maxima of top bytes and slots.
    use super::super::simd::{rebuild8, rebuild8_tokens, side_codes8, slots8};
    use super::super::simd512::{rebuild16, rebuild16_tokens, side_slots16, slots16};
    use super::CONTEXTS;
    use std::arch::x86_64::*;

    pub(super) struct State {
        lut: __m256i,
        emax: __m256i,
        off: __m256i,
        tb: __m256i,
        most: __m256i,
        worst: __m256i,
        /// Side contexts' `base` in every lane and `shift`.
        base: __m256i,
        shift: __m128i,
    }

    impl State {
        pub(super) fn new(
            lut: &[u8; CONTEXTS],
            (e_max, off, tb): (u8, u32, u32),
            (base, shift): (i16, u8),
        ) -> State {
            let mut l = [0u8; 32];
            l[..16].copy_from_slice(lut);
            l[16..].copy_from_slice(lut);
            // SAFETY: plain SSE2/AVX loads and sets of in-bounds arrays; `__m256i` values
            // are only used by AVX2 code.
            unsafe {
                State {
                    lut: _mm256_loadu_si256(l.as_ptr() as *const __m256i),
                    emax: _mm256_set1_epi32(e_max as i32),
                    off: _mm256_set1_epi32(off as i32),
                    tb: _mm256_set1_epi32(tb as i32),
                    most: _mm256_setzero_si256(),
                    worst: _mm256_setzero_si256(),
                    base: _mm256_set1_epi32(base as i32),
                    shift: _mm_cvtsi32_si128(shift as i32),
                }
            }
        }

        /// Largest top byte and slot over the groups seen.
        pub(super) fn seen(&self) -> (u8, u8) {
            let mut a = [0u32; 16];
            // SAFETY: stores into a local array of 64 bytes.
            unsafe {
                _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, self.most);
                _mm256_storeu_si256(a.as_mut_ptr().add(8) as *mut __m256i, self.worst);
            }
            let most = a[..8].iter().fold(0, |m, &v| m.max(v));
            let worst = a[8..].iter().fold(0, |m, &v| m.max(v));
            (most as u8, worst as u8)
        }

        /// The slots of the 8 reference words at `r` (32 readable bytes).
        #[inline(always)]
        pub(super) unsafe fn slots8<const F: bool>(&mut self, r: *const u8) -> __m256i {
            let s = if F {
                let (s, t) = slots8(_mm256_loadu_si256(r as *const __m256i), self.emax, self.lut);
                self.most = _mm256_max_epu32(self.most, t);
                s
            } else {
                // Integers: context 0 for every word.
                _mm256_shuffle_epi8(self.lut, _mm256_set1_epi32(0x8080_8000u32 as i32))
            };
            self.worst = _mm256_max_epu32(self.worst, s);
            s
        }

        /// The slots of the 8 side words at `side` and reference words at `r` (32
        /// readable bytes each): their side contexts through the lut.
        #[inline(always)]
        pub(super) unsafe fn side8(&mut self, side: *const u8, r: *const u8) -> __m256i {
            let c = side_codes8(
                _mm256_loadu_si256(side as *const __m256i),
                _mm256_loadu_si256(r as *const __m256i),
                self.base,
                self.shift,
            );
            // Bytes 1..3 of each lane index past the table (0x80): they shuffle to 0.
            let idx = _mm256_or_si256(c, _mm256_set1_epi32(0x8080_8000u32 as i32));
            let s = _mm256_shuffle_epi8(self.lut, idx);
            self.worst = _mm256_max_epu32(self.worst, s);
            s
        }

        /// Rebuilds the 8 words at `out` (32 writable bytes) from their decode-table
        /// entries, the raw bits at `src` from bit `shift` and the reference words at `r`;
        /// returns the raw bits used.
        #[inline(always)]
        pub(super) unsafe fn take8<const F: bool, const T: bool>(
            &self,
            entries: __m256i,
            src: *const u8,
            shift: usize,
            r: *const u8,
            out: *mut u8,
        ) -> usize {
            let s = _mm256_and_si256(entries, _mm256_set1_epi32(0xff));
            let r = _mm256_loadu_si256(r as *const __m256i);
            let (x, used) = if T {
                rebuild8_tokens(s, self.tb, src, shift, (r, self.off), F)
            } else {
                rebuild8(s, src, shift, r, self.off, F)
            };
            _mm256_storeu_si256(out as *mut __m256i, x);
            used
        }
    }

    /// [`State`] for 16 words at a time (AVX-512F).
    pub(super) struct State512 {
        lut: __m512i,
        emax: __m512i,
        off: __m512i,
        tb: __m512i,
        most: __m512i,
        worst: __m512i,
        /// Side contexts' `base` and `shift` in every lane.
        side: (__m512i, __m512i),
    }

    impl State512 {
        /// # Safety
        /// The CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn new(
            lut: &[u8; CONTEXTS],
            (e_max, off, tb): (u8, u32, u32),
            (base, shift): (i16, u8),
        ) -> Self {
            let slots: [u32; 16] = std::array::from_fn(|c| lut[c] as u32);
            State512 {
                lut: _mm512_loadu_si512(slots.as_ptr() as *const __m512i),
                emax: _mm512_set1_epi32(e_max as i32),
                off: _mm512_set1_epi32(off as i32),
                tb: _mm512_set1_epi32(tb as i32),
                most: _mm512_setzero_si512(),
                worst: _mm512_setzero_si512(),
                side: (
                    _mm512_set1_epi32(base as i32),
                    _mm512_set1_epi32(shift as i32),
                ),
            }
        }

        /// Largest top byte and slot over the groups seen.
        pub(super) fn seen(&self) -> (u8, u8) {
            let lanes = |v: &__m512i| {
                // SAFETY: a 64-byte vector read as the 16 u32 lanes it holds.
                let a = unsafe { *(v as *const __m512i as *const [u32; 16]) };
                a.into_iter().fold(0, u32::max) as u8
            };
            (lanes(&self.most), lanes(&self.worst))
        }

        /// The slots of the 16 reference words at `r` (64 readable bytes).
        #[inline(always)]
        pub(super) unsafe fn slots16<const F: bool>(&mut self, r: *const u8) -> __m512i {
            let s = if F {
                let (s, t) = slots16(_mm512_loadu_si512(r as *const __m512i), self.emax, self.lut);
                self.most = _mm512_max_epu32(self.most, t);
                s
            } else {
                // Integers: context 0 for every word.
                _mm512_permutexvar_epi32(_mm512_setzero_si512(), self.lut)
            };
            self.worst = _mm512_max_epu32(self.worst, s);
            s
        }

        /// [`State::side8`] for 16 words (64 readable bytes at `side` and `r`).
        #[inline(always)]
        pub(super) unsafe fn side16(&mut self, side: *const u8, r: *const u8) -> __m512i {
            let s = side_slots16(
                _mm512_loadu_si512(side as *const __m512i),
                _mm512_loadu_si512(r as *const __m512i),
                self.side,
                self.lut,
            );
            self.worst = _mm512_max_epu32(self.worst, s);
            s
        }

        /// [`State::take8`] for 16 words ([`super::WINDOW`] bytes readable at `src`, 64
        /// writable at `out`).
        #[inline(always)]
        pub(super) unsafe fn take16<const F: bool, const T: bool>(
            &self,
            entries: __m512i,
            src: *const u8,
            shift: usize,
            r: *const u8,
            out: *mut u8,
        ) -> usize {
            let s = _mm512_and_si512(entries, _mm512_set1_epi32(0xff));
            let r = _mm512_loadu_si512(r as *const __m512i);
            let (x, used) = if T {
                rebuild16_tokens(s, self.tb, src, shift, (r, self.off), F)
            } else {
                rebuild16(s, src, shift, (r, self.off), F)
            };
            _mm512_storeu_si512(out as *mut __m512i, x);
            used
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FORCE_SIDE;
    use super::super::{decode_chunk_side, encode_chunk, encode_chunk_side, is_side_chunk};
    use super::BLOCKS;
    use crate::dtype::DType;
    use crate::entropy::context::Blocks;
    use proptest::prelude::*;

    /// Decodes `comp` one by one and with every block loop the CPU has (AVX2, AVX-512):
    /// the one-by-one result and bytes, and whether every loop gave the same.
    fn all(comp: &[u8], reference: &[u8], dtype: DType) -> (Vec<u8>, bool, bool) {
        all_side(comp, reference, None, dtype)
    }

    /// [`all`] with a side tensor.
    fn all_side(
        comp: &[u8],
        reference: &[u8],
        side: Option<&[u8]>,
        dtype: DType,
    ) -> (Vec<u8>, bool, bool) {
        let run = |blocks: Blocks| {
            let mut out = vec![0u8; reference.len()];
            BLOCKS.with(|b| b.set(blocks));
            let ok = decode_chunk_side(comp, reference, side, dtype, &mut out).is_ok();
            BLOCKS.with(|b| b.set(Blocks::Widest));
            (out, ok)
        };
        let (out, ok) = run(Blocks::Scalar);
        let same = [Blocks::Avx2, Blocks::Widest].into_iter().all(|b| {
            let (o, k) = run(b);
            k == ok && (!ok || o == out)
        });
        (out, ok, same)
    }

    proptest! {
        /// The block loops and the scalar path agree on valid and damaged chunks of
        /// every 32-bit dtype (floats and integers), lengths no multiple of 32 included.
        #[test]
        fn block_loop_matches_scalar(vals in proptest::collection::vec((-1.0f32..1.0, 0u8..4), 0..3000),
                                     flip in any::<usize>(), d in 0usize..3) {
            let dtype = [DType::F32, DType::I32, DType::U32][d];
            let reference: Vec<u8> = vals.iter().flat_map(|v| v.0.to_le_bytes()).collect();
            let raw: Vec<u8> = vals.iter()
                .map(|&(v, k)| if k == 0 { v } else { v * (1.0 + 1e-4 * k as f32) })
                .flat_map(|v| v.to_le_bytes()).collect();
            let mut comp = encode_chunk(&raw, &reference, dtype);
            let (a, ok, same) = all(&comp, &reference, dtype);
            prop_assert!(ok && same);
            prop_assert_eq!(&a, &raw);
            let bit = flip % (comp.len() * 8);
            comp[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(all(&comp, &reference, dtype).2);
        }

        /// The same for side-context chunks (slots given per word).
        #[test]
        fn block_loop_matches_scalar_with_side(seed in any::<u32>(), n in 16_384usize..17_000,
                                               flip in any::<usize>()) {
            let word = |i: usize, k: u32| ((i as u32 ^ seed).wrapping_mul(0x9e37_79b9 ^ k) >> 9) as f32;
            let reference: Vec<u8> = (0..n).flat_map(|i| (1.0 + word(i, 1)).to_le_bytes()).collect();
            let side: Vec<u8> = (0..n).flat_map(|i| (word(i, 2) * 1e-3).to_le_bytes()).collect();
            let raw: Vec<u8> = (0..n)
                .flat_map(|i| ((1.0 + word(i, 1)) * (1.0 + 1e-4 * (word(i, 3) % 7.0))).to_le_bytes())
                .collect();
            FORCE_SIDE.with(|f| f.set(true));
            let mut comp = encode_chunk_side(&raw, &reference, Some(&side), DType::F32);
            FORCE_SIDE.with(|f| f.set(false));
            prop_assert!(is_side_chunk(&comp));
            let (a, ok, same) = all_side(&comp, &reference, Some(&side), DType::F32);
            prop_assert!(ok && same);
            prop_assert_eq!(&a, &raw);
            let bit = flip % (comp.len() * 8);
            comp[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(all_side(&comp, &reference, Some(&side), DType::F32).2);
        }
    }
}

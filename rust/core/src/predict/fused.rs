//! Decoding a kind-2, 3 or 4 residual chunk of 32-bit words in one pass: each word's
//! context (from its reference word, or its side word), its residual length or token
//! (context rANS) and the word itself (raw bits and reference), 8 (AVX2) or 16 (AVX-512)
//! words at a time, with no arrays of contexts or symbols in between. Every kind codes
//! every word's symbol, so stream position i is word i. Two chunks can decode together,
//! their streams side by side ([`run_two`]).

use super::decode::{check_used, mismatch, raw_bits, MISSING};
use super::word::{load, token_bits, unresidual, untoken};
use super::{contexts, side, CONTEXTS};
use crate::container::bytes::Reader;
use crate::entropy::bits::BitReader;
use crate::entropy::context::{decode_two_with, skip_stream, Blocks, DecodeModel, Fused};
use crate::error::{Error, Result};
use crate::hash::Hasher128;

/// Output bytes hashed at a time: written words still in L1.
const HASH_BYTES: usize = 4 * crate::codec::HASH_BLOCK_WORDS;

/// Raw-bit bytes readable from [`Sink::window`]: what a group of 16 reads (the AVX-512
/// kernels' [`super::simd512::WINDOW16`]), rounded up; a group of 8 reads 40.
const WINDOW: usize = 72;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(WINDOW >= super::simd512::WINDOW16 && WINDOW >= 40);

/// Raw-bit bytes a block of 32 words (four AVX2 groups) may read from its first group's
/// byte: each group takes at most 31 bytes of raw bits (8 words of at most 31 bits) and
/// reads 40 bytes from its own first byte.
const BLOCK_WINDOW: usize = 3 * 32 + 40;

/// One chunk's fused decode, set up: the reader at its stream (the raw bits follow it to
/// the chunk's end), its reference and output (`reference.len() / 4` words are decoded),
/// its parameters `(float, e_max, off, tb)` (`tb` None: the symbols are lengths, kind 2;
/// else tokens of `tb` top bits, kinds 3 and 4), decode model and slot map, side words,
/// and whether to hash the output ([`crate::hash::h128`], fed block by block as it is
/// written). Errors as the two-pass decoder does.
pub(super) struct Job<'a> {
    r: Reader<'a>,
    reference: &'a [u8],
    out: &'a mut [u8],
    params: (bool, u8, u32, Option<u32>),
    model: (DecodeModel, [u8; CONTEXTS]),
    side: Option<(&'a [u8], (i16, u8))>,
    hash: bool,
    /// The largest exponent the reference must have (floats, exponent contexts).
    most: u8,
}

impl<'a> Job<'a> {
    /// A job over the stream at `r`. Each word's table slot comes from its reference
    /// word's exponent or, with `side` (a side tensor's words and the chunk's `(base,
    /// shift)`, kind 4), from its side context ([`super::side`]), through the slot map.
    pub(super) fn new(
        r: Reader<'a>,
        (reference, out): (&'a [u8], &'a mut [u8]),
        params: (bool, u8, u32, Option<u32>),
        model: (DecodeModel, [u8; CONTEXTS]),
        side: Option<(&'a [u8], (i16, u8))>,
        hash: bool,
    ) -> Job<'a> {
        Job {
            r,
            reference,
            out,
            params,
            model,
            side,
            hash,
            most: params.1,
        }
    }

    /// The job with `most` as the largest exponent its reference must have, where that is
    /// above the base exponent (kind 5).
    pub(super) fn with_largest(self, most: u8) -> Job<'a> {
        Job { most, ..self }
    }

    /// Decodes the chunk alone.
    pub(super) fn run(self) -> Result<Option<u128>> {
        match (self.params.0, self.params.3.is_some()) {
            (true, false) => self.run_as::<true, false>(),
            (false, false) => self.run_as::<false, false>(),
            (true, true) => self.run_as::<true, true>(),
            (false, true) => self.run_as::<false, true>(),
        }
    }

    fn run_as<const F: bool, const T: bool>(self) -> Result<Option<u128>> {
        decode_alone(self.open::<F, T>()?)
    }

    /// The job's reader, model and sink (after checking that the raw bits are there).
    fn open<const F: bool, const T: bool>(self) -> Result<Ready<'a, F, T>> {
        let mut ahead = self.r.clone();
        skip_stream(&mut ahead)?;
        let bits = raw_bits(&mut ahead)?;
        let n = self.reference.len().min(self.out.len()) / 4;
        let n = self.side.map_or(n, |(s, _)| n.min(s.len() / 4));
        // Only an output of whole words is hashed here: its every byte is written.
        let hash = self.hash && self.out.len() == 4 * n;
        let (reference, out) = (&self.reference[..4 * n], &mut self.out[..4 * n]);
        let (_, e_max, off, tb) = self.params;
        let side = self.side.map(|(s, at)| (&s[..4 * n], at));
        let lut = self.model.1;
        let mut sink = Sink::<F, T>::new(
            reference,
            out,
            bits,
            lut,
            (e_max, off, tb.unwrap_or(0)),
            side,
            self.most,
        );
        sink.hasher = hash.then(Hasher128::default);
        Ok((self.r, self.model, sink))
    }
}

/// Decodes two chunks together: where both are token chunks of the same kind of words,
/// their streams side by side ([`crate::entropy::context::decode_two_with`]); otherwise
/// one after the other. Each result is the one that chunk gives alone.
pub(super) fn run_two(a: Job, b: Job) -> [Result<Option<u128>>; 2] {
    let same = a.params.0 == b.params.0 && a.params.3.is_some() && b.params.3.is_some();
    match (same, a.params.0) {
        (true, true) => two::<true>(a, b),
        (true, false) => two::<false>(a, b),
        (false, _) => [a.run(), b.run()],
    }
}

/// A job ready to decode: its reader at the stream, its model and its sink.
type Ready<'a, const F: bool, const T: bool> =
    (Reader<'a>, (DecodeModel, [u8; CONTEXTS]), Sink<'a, F, T>);

/// Decodes an opened job by itself.
fn decode_alone<const F: bool, const T: bool>(
    (mut r, model, mut sink): Ready<F, T>,
) -> Result<Option<u128>> {
    let n = sink.n;
    model
        .0
        .decode_with(&mut r, n, &mut sink, BLOCKS.with(|b| b.get()))?;
    sink.conclude()
}

/// [`run_two`] of two token chunks of float (`F`) or integer words.
fn two<const F: bool>(a: Job, b: Job) -> [Result<Option<u128>>; 2] {
    let ((mut ra, ma, mut sa), (mut rb, mb, mut sb)) =
        match (a.open::<F, true>(), b.open::<F, true>()) {
            (Ok(a), Ok(b)) => (a, b),
            // A chunk whose raw bits are missing fails alone; the other decodes alone.
            (oa, ob) => return [oa.and_then(decode_alone), ob.and_then(decode_alone)],
        };
    let (na, nb) = (sa.n, sb.n);
    let [da, db] = decode_two_with(
        (&ma.0, &mut ra, na, &mut sa),
        (&mb.0, &mut rb, nb, &mut sb),
        BLOCKS.with(|b| b.get()),
    );
    [
        da.and_then(|_| sa.conclude()),
        db.and_then(|_| sb.conclude()),
    ]
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
    /// Words to decode.
    n: usize,
    /// Fed the output in blocks of [`HASH_BYTES`] as they are written, up to `hashed`.
    hasher: Option<Hasher128>,
    hashed: usize,
    e_max: u8,
    /// The largest top byte the reference must have.
    largest: u8,
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
        largest: u8,
    ) -> Self {
        let at = side.map_or((0, 0), |(_, at)| at);
        let n = reference.len().min(out.len()) / 4;
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
            n,
            hasher: None,
            hashed: 0,
            e_max,
            largest,
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

    /// The checks after every word is decoded (contexts with tables, the reference's
    /// base exponent, every raw bit used); the output's hash when it was hashed.
    fn conclude(mut self) -> Result<Option<u128>> {
        self.hash_to(self.out.len());
        let (most, worst) = self.seen();
        if worst == MISSING && self.n > 0 {
            return Err(Error::Corrupt(
                "symbol under a context without a table".into(),
            ));
        }
        if F && self.side.is_none() && most != self.largest {
            return Err(mismatch());
        }
        check_used(self.bits.position(), self.bits.data().len())?;
        Ok(self.hasher.map(|h| h.digest()))
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
        if let Some(h) = self.hasher.as_mut() {
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

    /// Rebuilds the block of 32 words at `at` from their decode-table entries (AVX2, 8 at
    /// a time; `ONE`: tokens of one top bit); returns the raw bits used.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn rebuild32<const ONE: bool>(
        &mut self,
        at: usize,
        entries: [std::arch::x86_64::__m256i; 4],
    ) -> usize {
        let start = self.bits.position();
        let data = self.bits.data();
        let (r, out) = (self.reference.as_ptr(), self.out.as_mut_ptr());
        let mut p = start;
        if start / 8 + BLOCK_WINDOW <= data.len() {
            // Every group's window lies inside the raw bits: no per-group bounds, and the
            // four groups written out (as a loop, ~4% slower on Zen 3).
            let bits = data.as_ptr();
            let v = &self.v;
            let (e, a) = (entries, 4 * at);
            p += v.take8::<F, T, ONE>(e[0], bits.add(p / 8), p & 7, r.add(a), out.add(a));
            let a = a + 32;
            p += v.take8::<F, T, ONE>(e[1], bits.add(p / 8), p & 7, r.add(a), out.add(a));
            let a = a + 32;
            p += v.take8::<F, T, ONE>(e[2], bits.add(p / 8), p & 7, r.add(a), out.add(a));
            let a = a + 32;
            p += v.take8::<F, T, ONE>(e[3], bits.add(p / 8), p & 7, r.add(a), out.add(a));
        } else {
            for (g, e) in entries.into_iter().enumerate() {
                let a = 4 * (at + 8 * g);
                let src = self.window(p / 8);
                p += self
                    .v
                    .take8::<F, T, ONE>(e, src, p & 7, r.add(a), out.add(a));
            }
        }
        p - start
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
    unsafe fn take32(&mut self, at: usize, entries: [std::arch::x86_64::__m256i; 4]) {
        // One-top-bit tokens (what the encoder writes) get their own copy of the loop, with
        // constant shift counts.
        let used = if T && self.tb == 1 {
            self.rebuild32::<true>(at, entries)
        } else {
            self.rebuild32::<false>(at, entries)
        };
        self.bits.skip(used);
        // Whole blocks while they are in L1 (a hash block ends on a block of 32).
        self.hash_blocks(4 * (at + 32));
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn slots16(&mut self, at: usize) -> std::arch::x86_64::__m512i {
        let v = self.v512.as_mut().expect("AVX-512 state");
        let r = self.reference.as_ptr().add(4 * at);
        // The reference (and side) line `PREFETCH_AHEAD` bytes on, asked for now (a hint:
        // addresses past the end are never read).
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(super::PREFETCH_AHEAD) as *const i8);
        if let Some((side, _)) = self.side {
            _mm_prefetch::<_MM_HINT_T0>(
                side.as_ptr().wrapping_add(4 * at + super::PREFETCH_AHEAD) as *const i8
            );
        }
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
    use super::super::simd::{lut_slots8, rebuild8, rebuild8_tokens, side_codes8, slots8};
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
            let s = lut_slots8(self.lut, c);
            self.worst = _mm256_max_epu32(self.worst, s);
            s
        }

        /// Rebuilds the 8 words at `out` (32 writable bytes) from their decode-table
        /// entries, the raw bits at `src` from bit `shift` and the reference words at `r`
        /// (`ONE`: tokens of one top bit, whatever the chunk's); returns the raw bits used.
        #[inline(always)]
        pub(super) unsafe fn take8<const F: bool, const T: bool, const ONE: bool>(
            &self,
            entries: __m256i,
            src: *const u8,
            shift: usize,
            r: *const u8,
            out: *mut u8,
        ) -> usize {
            let s = _mm256_and_si256(entries, _mm256_set1_epi32(0xff));
            let r = _mm256_loadu_si256(r as *const __m256i);
            let (x, used) = if T && ONE {
                rebuild8_tokens(s, _mm256_set1_epi32(1), src, shift, (r, self.off), F)
            } else if T {
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
    use super::super::side;
    use super::super::tests::{FORCE_SIDE, FORCE_TOP_BITS};
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

    /// Decodes chunks `a` and `b` (coded bytes, reference, side) together with every
    /// block loop: each result is the one that chunk gives alone, and so is its output
    /// where it decodes (after an error the output is unspecified: a block loop stops
    /// at another symbol than the one-by-one path).
    fn two_match_alone(a: (&[u8], &[u8], Option<&[u8]>), b: (&[u8], &[u8], Option<&[u8]>)) -> bool {
        let alone = |(c, r, s): (&[u8], &[u8], Option<&[u8]>)| {
            let mut out = vec![0u8; r.len()];
            let res = super::super::decode_chunk_side_hashed(c, r, s, DType::F32, &mut out);
            (res.ok(), out)
        };
        let (ea, eb) = (alone(a), alone(b));
        [Blocks::Scalar, Blocks::Avx2, Blocks::Widest]
            .into_iter()
            .all(|blocks| {
                BLOCKS.with(|c| c.set(blocks));
                let (mut oa, mut ob) = (vec![0u8; a.1.len()], vec![0u8; b.1.len()]);
                let [ra, rb] = super::super::decode_two_side_hashed(
                    (a.0, a.1, a.2, DType::F32, &mut oa),
                    (b.0, b.1, b.2, DType::F32, &mut ob),
                );
                BLOCKS.with(|c| c.set(Blocks::Widest));
                let same =
                    |r: Option<Option<u128>>, o: Vec<u8>, e: &(Option<Option<u128>>, Vec<u8>)| {
                        r == e.0 && (r.is_none() || o == e.1)
                    };
                same(ra.ok(), oa, &ea) && same(rb.ok(), ob, &eb)
            })
    }

    proptest! {
        /// Two chunks decoded together (exponent or side contexts, different lengths,
        /// valid or bit-flipped) give what each gives alone.
        #[test]
        fn two_chunks_decode_as_alone(seed in any::<u32>(), na in 0usize..3000, nb in 0usize..3000,
                                      sides in any::<(bool, bool)>(), flips in any::<(usize, usize)>(),
                                      damage in 0u8..4) {
            let word = |i: usize, k: u32| ((i as u32 ^ seed).wrapping_mul(0x9e37_79b9 ^ k) >> 9) as f32;
            let make = |n: usize, k: u32, with_side: bool| {
                let n = if with_side { n + side::MIN_WORDS } else { n };
                let r: Vec<u8> = (0..n).flat_map(|i| (1.0 + word(i, k)).to_le_bytes()).collect();
                let s: Vec<u8> = (0..n).flat_map(|i| (word(i, k + 1) * 1e-3).to_le_bytes()).collect();
                let x: Vec<u8> = (0..n)
                    .flat_map(|i| ((1.0 + word(i, k)) * (1.0 + 1e-4 * (word(i, k + 2) % 7.0))).to_le_bytes())
                    .collect();
                FORCE_SIDE.with(|f| f.set(with_side));
                let c = encode_chunk_side(&x, &r, with_side.then_some(&s[..]), DType::F32);
                FORCE_SIDE.with(|f| f.set(false));
                (c, r, with_side.then_some(s))
            };
            let (mut ca, ra, sa) = make(na, 1, sides.0);
            let (mut cb, rb, sb) = make(nb, 5, sides.1);
            for (c, flip, on) in [(&mut ca, flips.0, damage & 1 != 0), (&mut cb, flips.1, damage & 2 != 0)] {
                if on && !c.is_empty() {
                    let bit = flip % (c.len() * 8);
                    c[bit / 8] ^= 1 << (bit % 8);
                }
            }
            prop_assert!(two_match_alone((&ca, &ra, sa.as_deref()), (&cb, &rb, sb.as_deref())));
        }

        /// The block loops and the scalar path agree on valid and damaged chunks of
        /// every 32-bit dtype (floats and integers), lengths no multiple of 32 included.
        /// Tokens of every top-bit width the format allows (the encoder writes one).
        #[test]
        fn block_loop_matches_scalar(vals in proptest::collection::vec((-1.0f32..1.0, 0u8..4), 0..3000),
                                     flip in any::<usize>(), d in 0usize..3, tb in 0u32..3) {
            let dtype = [DType::F32, DType::I32, DType::U32][d];
            let reference: Vec<u8> = vals.iter().flat_map(|v| v.0.to_le_bytes()).collect();
            let raw: Vec<u8> = vals.iter()
                .map(|&(v, k)| if k == 0 { v } else { v * (1.0 + 1e-4 * k as f32) })
                .flat_map(|v| v.to_le_bytes()).collect();
            FORCE_TOP_BITS.with(|t| t.set(tb));
            let mut comp = encode_chunk(&raw, &reference, dtype);
            FORCE_TOP_BITS.with(|t| t.set(super::super::TOP_BITS));
            if comp.first().is_some_and(|&k| k != super::super::KIND_STANDALONE) {
                // kind, scale, top bits
                prop_assert_eq!(comp[2] as u32, tb);
            }
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

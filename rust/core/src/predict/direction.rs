//! Adam-direction references: a better prediction of a weight than its previous value.
//!
//! Between two checkpoints of a fine-tune, Adam moves each weight along nearly the same
//! direction step after step: `u = m / (sqrt(v) + eps)`, from the optimizer's moments
//! `m`, `v` saved with the reference checkpoint. The prediction `p = w0 + step * u`, with
//! one least-squares `step` per tensor, leaves a smaller residual than `w0` alone where
//! that holds (all-MiniLM-L6-v2's word embeddings: 17% fewer bits).
//!
//! The decoder recomputes `p` from the same inputs, so it must come out bit-identical on
//! any machine, whatever a caller's flush-to-zero (FTZ) and denormals-are-zero (DAZ)
//! flags: the float32 inputs' subnormals are flushed by their bits, and after every
//! operation a result below `2^-100` in magnitude becomes 0. So every operand is 0 or far
//! from the subnormals, and a result that FTZ flushes on one machine and not on another
//! is below `2^-100` on both (the comparison is exact, the rounding near `2^-126`
//! irrelevant). Each operation (sqrt, add, divide, multiply, no fused multiply-add) is a
//! correctly rounded IEEE one. A NaN result takes the weight's own bits (NaN payloads
//! differ between CPUs). Round-to-nearest is assumed.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Adam's `eps` in the direction `m / (sqrt(v) + eps)` (PyTorch's default).
pub const EPS: f32 = 1e-8;

/// Largest and smallest |step| a file may store (the step is applied as a float32).
pub const MAX_STEP: f64 = 1.0e12;
/// See [`MAX_STEP`].
pub const MIN_STEP: f64 = 1.0e-12;

/// Results of smaller magnitude become 0 (see the module doc).
const TINY: f32 = 7.888609e-31; // 2^-100

/// Words per parallel block.
const BLOCK: usize = 1 << 16;

/// A float32 word with subnormals flushed to zero by its bits.
#[inline(always)]
fn load(b: &[u8]) -> f32 {
    let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let bits = if bits & 0x7f80_0000 == 0 {
        bits & 0x8000_0000
    } else {
        bits
    };
    f32::from_bits(bits)
}

/// `x`, or 0 below [`TINY`] (see the module doc).
#[inline(always)]
fn tame(x: f32) -> f32 {
    if x.abs() < TINY {
        0.0
    } else {
        x
    }
}

/// The direction `m / (sqrt(v) + eps)` of one word's moments.
#[inline(always)]
fn direction(m: &[u8], v: &[u8]) -> f32 {
    tame(load(m) / tame(load(v).sqrt() + EPS))
}

/// The predicted word `w0 + step * u` as float32 bits (see the module doc).
#[inline(always)]
fn predicted(w0: &[u8], m: &[u8], v: &[u8], step: f32) -> [u8; 4] {
    let p = tame(load(w0) + tame(step * direction(m, v)));
    if p.is_nan() {
        [w0[0], w0[1], w0[2], w0[3]]
    } else {
        p.to_le_bytes()
    }
}

/// Whether `step` may be stored and used (finite, inside [`MIN_STEP`]..=[`MAX_STEP`]).
pub fn valid_step(step: f64) -> bool {
    (MIN_STEP..=MAX_STEP).contains(&step.abs())
}

fn predict_block(w0: &[u8], m: &[u8], v: &[u8], step: f32, out: &mut [u8]) {
    let words = w0
        .chunks_exact(4)
        .zip(m.chunks_exact(4))
        .zip(v.chunks_exact(4));
    for (o, ((w, m), v)) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&predicted(w, m, v, step));
    }
}

/// Eight words at a time: the scalar operations in the same order, so the same bits
/// (elementwise IEEE operations do not depend on the vector width).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{EPS, TINY};
    use std::arch::x86_64::*;

    /// Eight raw words at byte `i` of `s` (`i + 32 <= s.len()`, checked).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn raw(s: &[u8], i: usize) -> __m256i {
        let bytes = &s[i..i + 32];
        // SAFETY: `bytes` holds the 32 bytes read (unaligned load).
        unsafe { _mm256_loadu_si256(bytes.as_ptr() as *const __m256i) }
    }

    /// [`super::load`]: subnormals flushed by their bits.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn flushed(x: __m256i) -> __m256 {
        let exponent = _mm256_and_si256(x, _mm256_set1_epi32(0x7f80_0000));
        let subnormal = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
        let signed_zero = _mm256_and_si256(x, _mm256_set1_epi32(i32::MIN));
        _mm256_castsi256_ps(_mm256_blendv_epi8(x, signed_zero, subnormal))
    }

    /// [`super::tame`]: 0 below `TINY`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn tame(x: __m256) -> __m256 {
        let abs = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)));
        _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(TINY)), x)
    }

    /// [`super::direction`] of the eight words at byte `i`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn direction(m: &[u8], v: &[u8], i: usize) -> __m256 {
        let den = tame(_mm256_add_ps(
            _mm256_sqrt_ps(flushed(raw(v, i))),
            _mm256_set1_ps(EPS),
        ));
        tame(_mm256_div_ps(flushed(raw(m, i)), den))
    }

    /// [`super::predict_block`].
    #[target_feature(enable = "avx2")]
    pub(super) fn predict_block(w0: &[u8], m: &[u8], v: &[u8], step: f32, out: &mut [u8]) {
        let body = w0.len() / 32 * 32;
        let stepv = _mm256_set1_ps(step);
        for (i, o) in (0..body).step_by(32).zip(out.chunks_exact_mut(32)) {
            let w = raw(w0, i);
            let p = tame(_mm256_add_ps(
                flushed(w),
                tame(_mm256_mul_ps(stepv, direction(m, v, i))),
            ));
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(p, p);
            let p = _mm256_blendv_ps(p, _mm256_castsi256_ps(w), nan);
            // SAFETY: `o` holds the 32 bytes written (unaligned store).
            unsafe { _mm256_storeu_ps(o.as_mut_ptr() as *mut f32, p) };
        }
        super::predict_block(&w0[body..], &m[body..], &v[body..], step, &mut out[body..]);
    }

    /// [`super::sums`] in float64 lanes (the additions in another order than the scalar
    /// loop's: a fit only guides the encoder, which stores its step).
    #[target_feature(enable = "avx2")]
    pub(super) fn sums(w0: &[u8], w1: &[u8], m: &[u8], v: &[u8]) -> [f64; 3] {
        let body = w0.len() / 32 * 32;
        let wide = |x: __m256| {
            (
                _mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)),
            )
        };
        let finite =
            |x: __m256d| _mm256_cmp_pd::<_CMP_EQ_OQ>(_mm256_sub_pd(x, x), _mm256_setzero_pd());
        let mut acc = [_mm256_setzero_pd(); 3];
        for i in (0..body).step_by(32) {
            let (a0, a1) = wide(flushed(raw(w0, i)));
            let (b0, b1) = wide(flushed(raw(w1, i)));
            let (u0, u1) = wide(direction(m, v, i));
            for (d, u) in [(_mm256_sub_pd(b0, a0), u0), (_mm256_sub_pd(b1, a1), u1)] {
                let keep = _mm256_and_pd(finite(d), finite(u));
                let (d, u) = (_mm256_and_pd(d, keep), _mm256_and_pd(u, keep));
                acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(d, u));
                acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(u, u));
                acc[2] = _mm256_add_pd(acc[2], _mm256_mul_pd(d, d));
            }
        }
        let mut out = super::sums_scalar(&w0[body..], &w1[body..], &m[body..], &v[body..]);
        for (o, a) in out.iter_mut().zip(acc) {
            let mut lanes = [0.0f64; 4];
            // SAFETY: `lanes` holds the four doubles stored.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), a) };
            *o += lanes.iter().sum::<f64>();
        }
        out
    }
}

fn predict_dispatch(w0: &[u8], m: &[u8], v: &[u8], step: f32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { avx2::predict_block(w0, m, v, step, out) };
    }
    predict_block(w0, m, v, step, out)
}

/// Checks that float32 word buffers (little-endian bytes) pair one-to-one.
fn check_words(lens: &[usize]) -> Result<()> {
    if !lens[0].is_multiple_of(4) || lens.iter().any(|&n| n != lens[0]) {
        return Err(Error::InvalidArgument(format!(
            "float32 buffers of equal length expected, got {lens:?} bytes"
        )));
    }
    Ok(())
}

/// Writes the predicted float32 words `w0 + step * m / (sqrt(v) + eps)` into `out`
/// (little-endian bytes; every slice of the same length, a multiple of 4), in parallel
/// in the current rayon pool, with `step` rounded to float32. Bit-identical on every
/// machine (see the module doc). Unequal lengths or a step outside [`valid_step`] are
/// an [`Error::InvalidArgument`].
pub fn predict(w0: &[u8], m: &[u8], v: &[u8], step: f64, out: &mut [u8]) -> Result<()> {
    Inputs { w0, m, v, step }.check()?;
    check_words(&[w0.len(), out.len()])?;
    let (b, step) = (4 * BLOCK, step as f32);
    out.par_chunks_mut(b)
        .zip(w0.par_chunks(b))
        .zip(m.par_chunks(b).zip(v.par_chunks(b)))
        .for_each(|((o, w), (m, v))| predict_dispatch(w, m, v, step, o));
    Ok(())
}

/// The inputs of one tensor's Adam-direction prediction: the reference weight `w0`, its
/// moments `m` and `v` (float32 little-endian bytes, equal lengths) and the step. Coders
/// take it instead of a whole prediction and make each chunk's share of it where they
/// code the chunk ([`Inputs::predict_chunk`]), so no tensor-sized buffer is written and
/// read back.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The reference weight.
    pub w0: &'a [u8],
    /// Its first moment (`exp_avg`).
    pub m: &'a [u8],
    /// Its second moment (`exp_avg_sq`).
    pub v: &'a [u8],
    /// The step along the direction (applied as a float32).
    pub step: f64,
}

impl Inputs<'_> {
    /// Checks that the three buffers pair one-to-one as float32 words and that the step
    /// is storable ([`Error::InvalidArgument`] otherwise).
    pub fn check(&self) -> Result<()> {
        check_words(&[self.w0.len(), self.m.len(), self.v.len()])?;
        if !valid_step(self.step) {
            return Err(Error::InvalidArgument(format!(
                "step {} out of range",
                self.step
            )));
        }
        Ok(())
    }

    /// Writes the prediction of the words at bytes `at` into `out` (same length), in the
    /// calling thread: the same bits as [`predict`] gives there. The caller has checked
    /// the inputs ([`Inputs::check`]); `at` must lie within them, on word boundaries.
    pub fn predict_chunk(&self, at: std::ops::Range<usize>, out: &mut [u8]) {
        let (w0, m, v) = (&self.w0[at.clone()], &self.m[at.clone()], &self.v[at]);
        predict_dispatch(w0, m, v, self.step as f32, out);
    }
}

/// How well the Adam direction explains a tensor's change `w1 - w0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Least-squares `step` of the change on the direction (0 without finite terms).
    pub step: f64,
    /// Share of the change's energy the direction explains (R², 0..=1): the residual
    /// keeps `1 - r2` of it, about `-log2(1 - r2) / 2` bits fewer per word where the
    /// change spans many units in the last place.
    pub r2: f64,
}

/// Sums `(d.u, u.u, d.d)` over one block, skipping words with non-finite terms.
fn sums(w0: &[u8], w1: &[u8], m: &[u8], v: &[u8]) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { avx2::sums(w0, w1, m, v) };
    }
    sums_scalar(w0, w1, m, v)
}

/// [`sums`] one word at a time.
fn sums_scalar(w0: &[u8], w1: &[u8], m: &[u8], v: &[u8]) -> [f64; 3] {
    let mut s = [0.0f64; 3];
    let words = w0.chunks_exact(4).zip(w1.chunks_exact(4));
    for ((w0, w1), (m, v)) in words.zip(m.chunks_exact(4).zip(v.chunks_exact(4))) {
        let d = load(w1) as f64 - load(w0) as f64;
        let u = direction(m, v) as f64;
        if d.is_finite() && u.is_finite() {
            s[0] += d * u;
            s[1] += u * u;
            s[2] += d * d;
        }
    }
    s
}

/// Words per block of a sampled fit.
const SAMPLE_BLOCK: usize = 4096;

/// Fits `w1 ~ w0 + step * u` by least squares (float32 words as little-endian bytes,
/// every slice of the same length), over all words, or with `sample_words` over about
/// that many in evenly spaced blocks (an encoder's quick look: a tensor that does not
/// fit costs little). Deterministic: blocks are summed in order. Unequal lengths are an
/// [`Error::InvalidArgument`].
pub fn fit(w0: &[u8], w1: &[u8], m: &[u8], v: &[u8], sample_words: Option<usize>) -> Result<Fit> {
    check_words(&[w0.len(), w1.len(), m.len(), v.len()])?;
    let words = w0.len() / 4;
    let (b, starts): (usize, Vec<usize>) = match sample_words {
        Some(s) if s < words => {
            let blocks = s.div_ceil(SAMPLE_BLOCK).max(1);
            let span = words - SAMPLE_BLOCK.min(words);
            let starts = (0..blocks).map(|k| span * k / blocks.max(2).saturating_sub(1));
            (SAMPLE_BLOCK, starts.collect())
        }
        _ => (BLOCK, (0..words).step_by(BLOCK).collect()),
    };
    let parts: Vec<[f64; 3]> = starts
        .par_iter()
        .map(|&k| {
            let r = 4 * k..4 * (k + b).min(words);
            sums(&w0[r.clone()], &w1[r.clone()], &m[r.clone()], &v[r])
        })
        .collect();
    let [du, uu, dd] = parts
        .iter()
        .fold([0.0; 3], |a, s| [a[0] + s[0], a[1] + s[1], a[2] + s[2]]);
    if !(uu > 0.0 && dd > 0.0 && du.is_finite() && uu.is_finite() && dd.is_finite()) {
        return Ok(Fit { step: 0.0, r2: 0.0 });
    }
    Ok(Fit {
        step: du / uu,
        r2: (du * du / (uu * dd)).clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(x: &[f32]) -> Vec<u8> {
        x.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    fn floats(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The prediction written out plainly, word by word, as the module doc states it.
    fn reference_word(w0: f32, m: f32, v: f32, step: f64) -> u32 {
        let flush = |x: f32| {
            if x.is_subnormal() {
                0.0f32.copysign(x)
            } else {
                x
            }
        };
        let tame = |x: f32| if x.abs() < 2f32.powi(-100) { 0.0 } else { x };
        let den = tame(flush(v).sqrt() + 1e-8);
        let d = tame(step as f32 * tame(flush(m) / den));
        let p = tame(flush(w0) + d);
        if p.is_nan() {
            w0.to_bits()
        } else {
            p.to_bits()
        }
    }

    /// Any float32, specials included.
    fn word() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<u32>().prop_map(f32::from_bits),
            Just(0.0f32),
            Just(-0.0f32),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::MIN_POSITIVE / 3.0),
            Just(-f32::MIN_POSITIVE),
            (-1.0f32..1.0),
            (0.0f32..1e-6),
        ]
    }

    proptest! {
        #[test]
        fn predict_matches_the_plain_formula(
            words in prop::collection::vec((word(), word(), word()), 0..300),
            step in prop_oneof![Just(1e-4f64), -1e3f64..1e3, Just(MIN_STEP), Just(-MAX_STEP)],
        ) {
            let w0: Vec<f32> = words.iter().map(|w| w.0).collect();
            let m: Vec<f32> = words.iter().map(|w| w.1).collect();
            let v: Vec<f32> = words.iter().map(|w| w.2).collect();
            let mut out = vec![0u8; 4 * words.len()];
            predict(&bytes(&w0), &bytes(&m), &bytes(&v), step, &mut out).unwrap();
            for (k, got) in floats(&out).iter().enumerate() {
                prop_assert_eq!(got.to_bits(), reference_word(w0[k], m[k], v[k], step));
            }
        }
    }

    #[test]
    fn unequal_lengths_and_bad_steps_are_refused() {
        let (a, mut out) = (vec![0u8; 8], vec![0u8; 8]);
        let bad = |r: Result<()>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(bad(predict(&a, &a, &a[..4], 1e-3, &mut out)));
        assert!(bad(predict(&a[..6], &a[..6], &a[..6], 1e-3, &mut out[..6])));
        for step in [0.0, f64::NAN, f64::INFINITY, 1e13, -1e-13] {
            assert!(bad(predict(&a, &a, &a, step, &mut out)), "{step}");
        }
        assert!(bad(fit(&a, &a, &a, &a[..4], None).map(|_| ())));
    }

    #[test]
    fn predicted_words_are_never_subnormal_and_nan_keeps_the_weight() {
        let w0 = [1e-38f32, f32::NAN, 1.0, -2.5e-38, 0.0];
        let m = [1e-30f32, 1.0, -0.0, 1e-39, f32::INFINITY];
        let v = [1.0f32, 1.0, 4.0, 1e-40, f32::INFINITY];
        let mut out = vec![0u8; 20];
        predict(&bytes(&w0), &bytes(&m), &bytes(&v), 1e-3, &mut out).unwrap();
        let got = floats(&out);
        assert!(got.iter().all(|x| !x.is_subnormal()));
        assert_eq!(got[1].to_bits(), f32::NAN.to_bits()); // the weight's own NaN
        assert_eq!(got[2], 1.0);
        assert_eq!(got[4].to_bits(), 0.0f32.to_bits()); // inf / inf: NaN, weight kept
    }

    /// FTZ and DAZ set in MXCSR (as some libraries leave them) change nothing.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(deprecated)]
    fn flush_to_zero_flags_do_not_change_predictions() {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        let n = 5000;
        let w0: Vec<f32> = (0..n)
            .map(|i| f32::from_bits(i * 7919 % 0x0200_0000))
            .collect();
        let m: Vec<f32> = (0..n)
            .map(|i| f32::from_bits((i * 104_729) % 0x0180_0000))
            .collect();
        let v: Vec<f32> = (0..n)
            .map(|i| f32::from_bits(i * 31 % 0x0100_0000))
            .collect();
        let (w0, m, v) = (bytes(&w0), bytes(&m), bytes(&v));
        let run = |step| {
            let mut out = vec![0u8; w0.len()];
            predict_dispatch(&w0, &m, &v, step as f32, &mut out);
            out
        };
        for step in [1e-12, 1e-6, 1e6] {
            let plain = run(step);
            // SAFETY: only the flush bits change, restored right after.
            let flushed = unsafe {
                let saved = _mm_getcsr();
                _mm_setcsr(saved | 0x8040);
                let out = run(step);
                _mm_setcsr(saved);
                out
            };
            assert_eq!(plain, flushed, "step {step}");
        }
    }

    #[test]
    fn fit_recovers_the_step_of_an_exact_adam_move() {
        let n = 10_000;
        let m: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-4)
            .collect();
        let v: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 + 1.0) * 1e-8).collect();
        let w0: Vec<f32> = (0..n).map(|i| (i as f32).sin() * 0.05).collect();
        let mut w1 = vec![0u8; 4 * n];
        predict(&bytes(&w0), &bytes(&m), &bytes(&v), -2e-4, &mut w1).unwrap();
        for sample in [None, Some(5000), Some(1)] {
            let f = fit(&bytes(&w0), &w1, &bytes(&m), &bytes(&v), sample).unwrap();
            assert!((f.step / -2e-4 - 1.0).abs() < 1e-3, "{f:?}");
            assert!(f.r2 > 0.999, "{f:?}");
        }
        let none = fit(&bytes(&w0), &bytes(&w0), &bytes(&m), &bytes(&v), None).unwrap();
        // The vector sums agree with the scalar ones (up to the order of additions), with
        // non-finite words skipped.
        let mut w1 = floats(&w1);
        w1[3] = f32::NAN;
        w1[n - 2] = f32::INFINITY;
        let args = (bytes(&w0), bytes(&w1), bytes(&m), bytes(&v));
        let (a, b) = (
            sums(&args.0, &args.1, &args.2, &args.3),
            sums_scalar(&args.0, &args.1, &args.2, &args.3),
        );
        for k in 0..3 {
            assert!((a[k] - b[k]).abs() <= 1e-9 * b[k].abs(), "{a:?} {b:?}");
        }
        assert_eq!(none, Fit { step: 0.0, r2: 0.0 });
    }
}

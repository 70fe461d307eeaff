//! Relative-error quantization of non-negative tensors (e.g. Adam's second moment), in the
//! float's own bit pattern: for positive floats the bits grow like a piecewise-linear log2
//! of the value, so a step of `S` units in the last place is a relative step of at most
//! `S * 2^-mantissa_bits`. Integer arithmetic only: every platform (and a GPU) rebuilds the
//! same bits, with no `exp`/`log` whose last bit could differ.
//!
//! Per element x with prediction p (the reference's bits plus a median offset, or a base
//! for references that are not positive): `+0.0` is code 0; a positive finite x is code
//! `zigzag(round((bits(x) - p) / S)) + 1` and decodes to bits `p + q * S`; the encoder checks
//! `|decoded - x| / x <= r` and stores any miss, and every other value, exactly (escapes).

use crate::dtype::DType;
use crate::quant::{by_float, Float, Quantized, Relative};

/// Codes beyond this magnitude are escapes.
const MAX_CODE: i64 = 1 << 29;

/// The step in last-place units for relative bound `r` on a type with `mant` mantissa bits
/// (half a step is `r` relative at the bottom of a binade, less above).
pub fn step_for(r: f64, dtype: DType) -> u64 {
    let mant = by_float!(dtype, mant_of());
    ((2.0 * r * (mant as f64).exp2()).floor() as u64).max(1)
}

fn mant_of<T: Float>() -> u32 {
    T::MANT
}

#[inline(always)]
fn bits<T: Float>(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a[..T::W].copy_from_slice(&b[..T::W]);
    u64::from_le_bytes(a) as i64
}

#[inline(always)]
fn put_bits<T: Float>(v: i64, b: &mut [u8]) {
    b[..T::W].copy_from_slice(&(v as u64).to_le_bytes()[..T::W]);
}

/// Offset and base of a tensor's plan from a strided sample (<= 65536 elements): the median
/// of `bits(x) - bits(r)` over pairs of positive finite values, and the median of
/// `bits(x)` over positive finite x.
pub fn fit(raw: &[u8], reference: Option<&[u8]>, dtype: DType) -> (i64, i64) {
    by_float!(dtype, fit_t(raw, reference))
}

fn fit_t<T: Float>(raw: &[u8], reference: Option<&[u8]>) -> (i64, i64) {
    let n = raw.len() / T::W;
    let stride = (n / 65536).max(1);
    let (mut shifts, mut values) = (Vec::new(), Vec::new());
    for i in (0..n).step_by(stride) {
        let xb = &raw[i * T::W..];
        if !positive::<T>(xb) {
            continue;
        }
        values.push(bits::<T>(xb));
        if let Some(rf) = reference {
            let rb = &rf[i * T::W..];
            if positive::<T>(rb) {
                shifts.push(bits::<T>(xb) - bits::<T>(rb));
            }
        }
    }
    (median(&mut shifts), median(&mut values))
}

fn median(v: &mut [i64]) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// Whether the element at the start of `b` is positive and finite.
#[inline(always)]
fn positive<T: Float>(b: &[u8]) -> bool {
    let v = T::load(b);
    v > 0.0 && v.is_finite()
}

/// The prediction (bits) for an element whose reference word is `rb`.
#[inline(always)]
fn predict<T: Float>(rb: Option<&[u8]>, rel: &Relative) -> i64 {
    match rb {
        Some(b) if positive::<T>(b) => bits::<T>(b).wrapping_add(rel.offset),
        _ => rel.base,
    }
}

/// Quantizes a chunk under relative bound `r` (see the module doc); like
/// [`crate::quant::quantize`], with `max_error` the largest relative error.
pub fn quantize(
    raw: &[u8],
    reference: Option<&[u8]>,
    dtype: DType,
    r: f64,
    rel: &Relative,
    codes: &mut [u32],
    decoded: &mut [u8],
) -> Quantized {
    by_float!(dtype, quantize_t(raw, reference, r, rel, codes, decoded))
}

fn quantize_t<T: Float>(
    raw: &[u8],
    reference: Option<&[u8]>,
    r: f64,
    rel: &Relative,
    codes: &mut [u32],
    decoded: &mut [u8],
) -> Quantized {
    let mut out = Quantized::default();
    let s = rel.step as i64;
    let words = raw.chunks_exact(T::W).zip(decoded.chunks_exact_mut(T::W));
    for (i, ((xb, dst), code)) in words.zip(codes.iter_mut()).enumerate() {
        let x = T::load(xb);
        let xbits = bits::<T>(xb);
        if xbits == 0 {
            *code = 0; // +0.0, exactly
            dst.copy_from_slice(xb);
            continue;
        }
        let mut ok = false;
        if x > 0.0 && x.is_finite() {
            let p = predict::<T>(reference.map(|rf| &rf[i * T::W..]), rel);
            let d = xbits.wrapping_sub(p);
            let q = (d + (s / 2) * d.signum()) / s;
            let y = p.wrapping_add(q.wrapping_mul(s));
            if q.abs() < MAX_CODE && y > 0 {
                put_bits::<T>(y, dst);
                let back = T::load(dst);
                // The ratio, not `err <= r * x`: for a subnormal x, `r * x` rounds (up, at
                // times, to the smallest subnormal) and would pass errors above r relative.
                let rel_err = (back - x).abs() / x;
                if back.is_finite() && back > 0.0 && rel_err <= r {
                    out.max_error = out.max_error.max(rel_err);
                    *code = ((((q << 1) ^ (q >> 63)) as u64) + 1) as u32;
                    ok = true;
                }
            }
        }
        if !ok {
            *code = 0;
            dst.copy_from_slice(xb);
            out.escapes.push(i as u32);
        }
    }
    out
}

/// Rebuilds a chunk from its codes (escapes are written afterwards by the caller).
pub fn dequantize(
    codes: &[u32],
    reference: Option<&[u8]>,
    dtype: DType,
    rel: &Relative,
    out: &mut [u8],
) {
    by_float!(dtype, dequantize_t(codes, reference, rel, out))
}

fn dequantize_t<T: Float>(codes: &[u32], reference: Option<&[u8]>, rel: &Relative, out: &mut [u8]) {
    let s = rel.step as i64;
    for (i, (&z, dst)) in codes.iter().zip(out.chunks_exact_mut(T::W)).enumerate() {
        if z == 0 {
            put_bits::<T>(0, dst);
            continue;
        }
        let z = (z - 1) as i64;
        let q = (z >> 1) ^ -(z & 1);
        let p = predict::<T>(reference.map(|rf| &rf[i * T::W..]), rel);
        put_bits::<T>(p.wrapping_add(q.wrapping_mul(s)), dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store_one<T: Float>(v: f64, b: &mut [u8]) {
        T::store(v, b)
    }
    fn load_one<T: Float>(b: &[u8]) -> f64 {
        T::load(b)
    }

    /// Found by the `lossy_chunk` fuzzer: for a subnormal f64 `x`, `r * x` rounds up to the
    /// smallest subnormal, so a one-unit error passed `err <= r * x` at a relative error of
    /// 1.003 r. The check is on `err / x`, which is what `max_error` reports.
    #[test]
    fn subnormal_f64_keeps_the_relative_bound() {
        let words: [(u64, u64); 3] = [
            (0, 0x0055_55ff_ffff_ff55),
            (0x0022_3b00_0000_0000, 0x0005_0000_0000_0000),
            (0x0000_00ff_3aff_ffff, 0xffff_ffff_ff7f_5555),
        ];
        let raw: Vec<u8> = words.iter().flat_map(|w| w.0.to_le_bytes()).collect();
        let rf: Vec<u8> = words.iter().flat_map(|w| w.1.to_le_bytes()).collect();
        let r = (-40f64).exp2();
        let rel = Relative {
            step: step_for(r, DType::F64),
            offset: -123,
            base: 0,
        };
        let (mut codes, mut dec) = (vec![0u32; 3], vec![0u8; 24]);
        let qz = quantize(&raw, Some(&rf), DType::F64, r, &rel, &mut codes, &mut dec);
        assert!(
            qz.max_error <= r,
            "max error {:e} above {r:e}",
            qz.max_error
        );
        for i in 0..3 {
            let x = f64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().unwrap());
            let y = f64::from_le_bytes(dec[8 * i..8 * i + 8].try_into().unwrap());
            assert!(x == y || (y - x).abs() / x <= r, "x={x:e} y={y:e}");
        }
    }

    proptest! {
        #[test]
        fn relative_bound_holds(
            vals in proptest::collection::vec(prop_oneof![4 => 1e-12f64..1e3, 1 => Just(0.0),
                1 => any::<f64>(), 1 => Just(f64::NAN), 1 => Just(-0.0),
                1 => (1u64..1 << 52).prop_map(f64::from_bits)], 0..500),
            refs in proptest::collection::vec(prop_oneof![1e-12f64..1e3, Just(0.0), Just(-1.0)], 500),
            r in prop_oneof![Just(0.2), 1e-4f64..0.9], use_ref in any::<bool>(), d in 0usize..4) {
            let dtype = [DType::F16, DType::BF16, DType::F32, DType::F64][d];
            let w = dtype.size();
            let enc = |v: &[f64]| -> Vec<u8> {
                v.iter().flat_map(|&x| { let mut b = vec![0u8; w];
                    by_float!(dtype, store_one(x, &mut b)); b }).collect()
            };
            let raw = enc(&vals);
            let rf = enc(&refs[..vals.len()]);
            let rf = use_ref.then_some(&rf[..]);
            let (offset, base) = fit(&raw, rf, dtype);
            let rel = Relative { step: step_for(r, dtype), offset, base };
            let n = vals.len();
            let (mut codes, mut dec) = (vec![0u32; n], vec![0u8; raw.len()]);
            let qz = quantize(&raw, rf, dtype, r, &rel, &mut codes, &mut dec);
            for i in 0..n {
                let (x, y) = (by_float!(dtype, load_one(&raw[i * w..])),
                              by_float!(dtype, load_one(&dec[i * w..])));
                if qz.escapes.contains(&(i as u32)) || x == 0.0 {
                    prop_assert_eq!(&dec[i * w..(i + 1) * w], &raw[i * w..(i + 1) * w]);
                } else {
                    prop_assert!((y - x).abs() / x <= r, "x={} y={} r={}", x, y, r);
                }
            }
            let mut again = vec![0u8; raw.len()];
            dequantize(&codes, rf, dtype, &rel, &mut again);
            for &e in &qz.escapes {
                let e = e as usize;
                again[e * w..(e + 1) * w].copy_from_slice(&raw[e * w..(e + 1) * w]);
            }
            prop_assert_eq!(again, dec);
        }
    }
}

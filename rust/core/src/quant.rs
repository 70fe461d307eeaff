//! Error-bounded quantization of float tensors (the near-lossless mode).
//!
//! Each element x is predicted as `p = alpha * r` from the *decoded* reference r (or
//! p = 0 without one) and coded as the integer `q = round((x - p) / step)`; the decoder
//! rebuilds `y = p + q * step` in f64 and rounds it to the tensor's dtype (nearest, ties
//! to even), clamping at 0 for non-negative classes. With `step = 2 * bound` every element
//! lands within `bound` of x before the final rounding; the encoder checks the rounded
//! value too, and stores any element that misses (or is not finite) exactly, as an escape.
//! So `|decoded - x| <= bound` holds for every element, by construction and by check.
//! Pruning sets the code of every residual below `prune_threshold` to 0 (y = p): those
//! elements are then bounded by the threshold instead.

use crate::container::value::Value;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Everything the decoder needs, and what the file states about a quantized tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Quantizer step (2 x bound).
    pub step: f64,
    /// Prediction scale: p = alpha x reference (0: no reference used).
    pub alpha: f64,
    /// Guaranteed absolute error of unpruned elements.
    pub bound: f64,
    /// Residuals below this are pruned to the prediction (0: no pruning).
    pub prune_threshold: f64,
    /// Decoded values are clamped at 0 (second moments stay non-negative).
    pub nonneg: bool,
    /// Codes per block for block-sparse packing ([`crate::sparse`]).
    pub block: u32,
    /// A per-element relative bound instead ([`crate::relquant`]): `bound` is then the
    /// relative bound r, and these are the quantizer's integer parameters.
    pub relative: Option<Relative>,
}

/// Parameters of the relative-error quantizer ([`crate::relquant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relative {
    /// Step in units in the last place of the float's bit pattern.
    pub step: u64,
    /// Median shift from reference bits to value bits (prediction = reference + offset).
    pub offset: i64,
    /// Prediction for elements whose reference is not positive (median of the bits).
    pub base: i64,
}

/// Largest accepted block size.
pub const MAX_BLOCK: u32 = 1 << 16;
/// Codes beyond this magnitude are escapes (keeps codes and their zigzag in 32 bits).
const MAX_CODE: u32 = 1 << 30;

impl Plan {
    /// The per-element error limit: the bound, or the pruning threshold if larger.
    pub fn limit(&self) -> f64 {
        self.bound.max(self.prune_threshold)
    }

    /// Reads the decoder's fields from a tensor's params map, validating them.
    pub fn from_value(v: &Value) -> Result<Plan> {
        let get = |k: &str| -> Option<&Value> {
            match v {
                Value::Map(items) => items
                    .iter()
                    .find(|(key, _)| matches!(key, Value::Str(s) if s == k))
                    .map(|(_, val)| val),
                _ => None,
            }
        };
        let num = |k: &str| -> Result<f64> {
            match get(k) {
                Some(Value::Float(f)) if f.is_finite() => Ok(*f),
                _ => Err(Error::Format(format!(
                    "quantized tensor: bad or missing {k:?}"
                ))),
            }
        };
        let int = |k: &str| -> Result<i64> {
            match get(k) {
                Some(Value::Int(i)) => Ok(*i),
                _ => Err(Error::Format(format!(
                    "quantized tensor: bad or missing {k:?}"
                ))),
            }
        };
        let relative = match get("relative") {
            Some(Value::Bool(true)) => Some(Relative {
                step: u64::try_from(int("rel_step")?)
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| Error::Format("quantized tensor: bad rel_step".into()))?,
                offset: int("offset")?,
                base: int("base")?,
            }),
            _ => None,
        };
        let plan = Plan {
            relative,
            step: num("step")?,
            alpha: num("alpha")?,
            bound: num("bound")?,
            prune_threshold: num("prune_threshold")?,
            nonneg: matches!(get("nonneg"), Some(Value::Bool(true))),
            block: match get("block") {
                Some(Value::Int(b)) if *b >= 1 && *b <= MAX_BLOCK as i64 => *b as u32,
                _ => return Err(Error::Format("quantized tensor: bad block size".into())),
            },
        };
        if plan.step <= 0.0 {
            return Err(Error::Format(
                "quantized tensor: step must be positive".into(),
            ));
        }
        Ok(plan)
    }

    /// The decoder's fields as map entries (the container adds descriptive ones).
    pub fn to_entries(&self) -> Vec<(Value, Value)> {
        let s = |k: &str| Value::Str(k.to_owned());
        let mut items = vec![
            (s("step"), Value::Float(self.step)),
            (s("alpha"), Value::Float(self.alpha)),
            (s("bound"), Value::Float(self.bound)),
            (s("prune_threshold"), Value::Float(self.prune_threshold)),
            (s("nonneg"), Value::Bool(self.nonneg)),
            (s("block"), Value::Int(self.block as i64)),
        ];
        if let Some(r) = &self.relative {
            items.extend([
                (s("relative"), Value::Bool(true)),
                (s("rel_step"), Value::Int(r.step as i64)),
                (s("offset"), Value::Int(r.offset)),
                (s("base"), Value::Int(r.base)),
            ]);
        }
        items
    }
}

/// Whether `dtype` can be quantized (IEEE-style floats of 16 bits or more).
pub fn quantizable(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// A float element type: its bytes to f64 and back (round to nearest, ties to even).
pub trait Float {
    /// Bytes per element.
    const W: usize;
    /// Explicit mantissa bits.
    const MANT: u32;
    /// The value of the element at the start of `b`.
    fn load(b: &[u8]) -> f64;
    /// Writes `v` rounded to this type into `b`.
    fn store(v: f64, b: &mut [u8]);
    /// `v` rounded to this type, as f64 (what [`Float::store`] then [`Float::load`] give).
    fn round(v: f64) -> f64;
}

macro_rules! float_impl {
    ($name:ident, $w:expr, $mant:expr, $load:expr, $store:expr, $round:expr) => {
        /// Marker for one float element type.
        pub struct $name;
        impl Float for $name {
            const W: usize = $w;
            const MANT: u32 = $mant;
            #[inline(always)]
            fn load(b: &[u8]) -> f64 {
                let a: [u8; $w] = b[..$w].try_into().unwrap();
                $load(a)
            }
            #[inline(always)]
            fn store(v: f64, b: &mut [u8]) {
                let bytes: [u8; $w] = $store(v);
                b[..$w].copy_from_slice(&bytes);
            }
            #[inline(always)]
            fn round(v: f64) -> f64 {
                $round(v)
            }
        }
    };
}

float_impl!(
    F16,
    2,
    10,
    |a| half::f16::from_le_bytes(a).to_f64(),
    |v| half::f16::from_f64(v).to_le_bytes(),
    |v| half::f16::from_f64(v).to_f64()
);
float_impl!(
    BF16,
    2,
    7,
    |a| half::bf16::from_le_bytes(a).to_f64(),
    |v| half::bf16::from_f64(v).to_le_bytes(),
    |v| half::bf16::from_f64(v).to_f64()
);
float_impl!(
    F32,
    4,
    23,
    |a| f32::from_le_bytes(a) as f64,
    |v| (v as f32).to_le_bytes(),
    |v| (v as f32) as f64
);
float_impl!(
    F64,
    8,
    52,
    f64::from_le_bytes,
    |v: f64| v.to_le_bytes(),
    |v: f64| v
);

/// Calls `$f::<T>(args)` for the float type of `$dtype` (which must be quantizable).
macro_rules! by_float {
    ($dtype:expr, $f:ident ( $($a:expr),* )) => {
        match $dtype {
            $crate::dtype::DType::F16 => $f::<$crate::quant::F16>($($a),*),
            $crate::dtype::DType::BF16 => $f::<$crate::quant::BF16>($($a),*),
            $crate::dtype::DType::F32 => $f::<$crate::quant::F32>($($a),*),
            _ => $f::<$crate::quant::F64>($($a),*),
        }
    };
}
pub(crate) use by_float;

/// Sums over a chunk that fix a tensor's plan: energy of x, and the least-squares fit of
/// x against its reference.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Finite elements.
    pub count: f64,
    /// Sum of x^2 over finite x.
    pub xx: f64,
    /// Sum of x*r over pairs with both finite.
    pub xr: f64,
    /// Sum of r^2 over those pairs.
    pub rr: f64,
    /// Sum of x^2 over those pairs.
    pub pxx: f64,
}

impl Stats {
    /// Sums of two disjoint parts.
    pub fn merge(self, o: Stats) -> Stats {
        Stats {
            count: self.count + o.count,
            xx: self.xx + o.xx,
            xr: self.xr + o.xr,
            rr: self.rr + o.rr,
            pxx: self.pxx + o.pxx,
        }
    }

    /// Root mean square of the finite elements.
    pub fn rms(&self) -> f64 {
        if self.count > 0.0 {
            (self.xx / self.count).sqrt()
        } else {
            0.0
        }
    }

    /// The prediction scale: the least-squares alpha when it removes at least 10% of the
    /// energy (else 0: standalone is as good and needs no reference).
    pub fn alpha(&self) -> f64 {
        if self.rr <= 0.0 || !(self.rr.is_finite() && self.xr.is_finite()) {
            return 0.0;
        }
        let a = self.xr / self.rr;
        let left = self.pxx - a * self.xr; // residual energy at the optimum
        if a.is_finite() && left < 0.9 * self.pxx {
            a
        } else {
            0.0
        }
    }
}

/// [`Stats`] of one chunk (`reference` of the same length, if any).
pub fn stats(raw: &[u8], reference: Option<&[u8]>, dtype: DType) -> Stats {
    by_float!(dtype, stats_t(raw, reference))
}

fn stats_t<T: Float>(raw: &[u8], reference: Option<&[u8]>) -> Stats {
    let mut s = Stats::default();
    for (i, xb) in raw.chunks_exact(T::W).enumerate() {
        let x = T::load(xb);
        if !x.is_finite() {
            continue;
        }
        s.count += 1.0;
        s.xx += x * x;
        if let Some(rf) = reference {
            let r = T::load(&rf[i * T::W..]);
            if r.is_finite() {
                s.xr += x * r;
                s.rr += r * r;
                s.pxx += x * x;
            }
        }
    }
    s
}

/// The residual magnitude below which a fraction `prune` of the tensor's residuals lies,
/// estimated on a strided sample of at most 65536 elements.
pub fn prune_threshold(
    raw: &[u8],
    reference: Option<&[u8]>,
    dtype: DType,
    alpha: f64,
    prune: f64,
) -> f64 {
    if prune <= 0.0 {
        return 0.0;
    }
    by_float!(dtype, threshold_t(raw, reference, alpha, prune))
}

fn threshold_t<T: Float>(raw: &[u8], reference: Option<&[u8]>, alpha: f64, prune: f64) -> f64 {
    let n = raw.len() / T::W;
    let stride = (n / 65536).max(1);
    let mut d: Vec<f64> = (0..n)
        .step_by(stride)
        .map(|i| residual_of::<T>(raw, reference, alpha, i).abs())
        .filter(|v| v.is_finite())
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    let k = ((prune.min(1.0) * d.len() as f64) as usize).min(d.len() - 1);
    *d.select_nth_unstable_by(k, f64::total_cmp).1
}

#[inline(always)]
fn residual_of<T: Float>(raw: &[u8], reference: Option<&[u8]>, alpha: f64, i: usize) -> f64 {
    T::load(&raw[i * T::W..]) - predict::<T>(reference, alpha, i)
}

/// The prediction of element `i`.
#[inline(always)]
fn predict<T: Float>(reference: Option<&[u8]>, alpha: f64, i: usize) -> f64 {
    match reference {
        Some(rf) if alpha != 0.0 => alpha * T::load(&rf[i * T::W..]),
        _ => 0.0,
    }
}

/// What quantizing a chunk produced besides its codes.
#[derive(Debug, Default)]
pub struct Quantized {
    /// Indices of elements stored exactly.
    pub escapes: Vec<u32>,
    /// Largest |decoded - original| over the chunk.
    pub max_error: f64,
}

/// Quantizes a chunk: zigzag codes into `codes` and the decoded values into `decoded`
/// (exactly what [`dequantize`] and the escapes will rebuild).
pub fn quantize(
    raw: &[u8],
    reference: Option<&[u8]>,
    dtype: DType,
    plan: &Plan,
    codes: &mut [u32],
    decoded: &mut [u8],
) -> Quantized {
    if let Some(rel) = &plan.relative {
        let rf = reference.filter(|_| plan.alpha != 0.0);
        return crate::relquant::quantize(raw, rf, dtype, plan.bound, rel, codes, decoded);
    }
    by_float!(dtype, quantize_t(raw, reference, plan, codes, decoded))
}

fn quantize_t<T: Float>(
    raw: &[u8],
    reference: Option<&[u8]>,
    plan: &Plan,
    codes: &mut [u32],
    decoded: &mut [u8],
) -> Quantized {
    let mut out = Quantized::default();
    match reference {
        Some(rf) if plan.alpha != 0.0 => {
            let preds = rf.chunks_exact(T::W).map(|r| plan.alpha * T::load(r));
            quantize_loop::<T>(raw, preds, plan, codes, decoded, &mut out)
        }
        _ => quantize_loop::<T>(raw, std::iter::repeat(0.0), plan, codes, decoded, &mut out),
    }
    out
}

/// The element loop of [`quantize`], over the predictions `preds`.
#[inline(always)]
fn quantize_loop<T: Float>(
    raw: &[u8],
    preds: impl Iterator<Item = f64>,
    plan: &Plan,
    codes: &mut [u32],
    decoded: &mut [u8],
    out: &mut Quantized,
) {
    let inv = 1.0 / plan.step;
    let limit = plan.limit();
    let words = raw.chunks_exact(T::W).zip(decoded.chunks_exact_mut(T::W));
    for (((xb, dst), code), p) in words.zip(codes.iter_mut()).zip(preds) {
        let x = T::load(xb);
        let d = x - p;
        let pruned = d.abs() < plan.prune_threshold;
        // Round half away from zero through a saturating i32 conversion (NaN -> 0); the
        // decoder rebuilds from the same i32, so -0.0 and +0.0 codes agree.
        let t = d * inv;
        let qi = if pruned {
            0
        } else {
            (t + 0.5f64.copysign(t)) as i32
        };
        let y = T::round(rebuild(p, qi as f64, plan));
        // Any non-finite x, p or y fails this comparison (NaN or infinite error).
        let err = (y - x).abs();
        let fine = err <= if pruned { limit } else { plan.bound };
        if fine && qi.unsigned_abs() <= MAX_CODE {
            out.max_error = out.max_error.max(err);
            *code = ((qi << 1) ^ (qi >> 31)) as u32;
            T::store(y, dst);
        } else {
            *code = ESCAPE;
            dst.copy_from_slice(xb);
        }
    }
    collect_escapes(codes, &mut out.escapes);
}

/// Marks an escaped element in the first pass (no valid code is this large), so the hot
/// loop has no call that could grow a vector.
const ESCAPE: u32 = u32::MAX;

/// Turns [`ESCAPE`] marks into code 0 plus an entry in `escapes`.
fn collect_escapes(codes: &mut [u32], escapes: &mut Vec<u32>) {
    for (i, c) in codes.iter_mut().enumerate() {
        if *c == ESCAPE {
            *c = 0;
            escapes.push(i as u32);
        }
    }
}

/// The decoded value of code `q` (as f64) at prediction `p`.
#[inline(always)]
fn rebuild(p: f64, q: f64, plan: &Plan) -> f64 {
    let y = p + q * plan.step;
    if plan.nonneg && y < 0.0 {
        0.0
    } else {
        y
    }
}

/// Rebuilds a chunk from its zigzag codes (escapes are written afterwards by the caller).
pub fn dequantize(
    codes: &[u32],
    reference: Option<&[u8]>,
    dtype: DType,
    plan: &Plan,
    out: &mut [u8],
) {
    if let Some(rel) = &plan.relative {
        let rf = reference.filter(|_| plan.alpha != 0.0);
        return crate::relquant::dequantize(codes, rf, dtype, rel, out);
    }
    by_float!(dtype, dequantize_t(codes, reference, plan, out))
}

fn dequantize_t<T: Float>(codes: &[u32], reference: Option<&[u8]>, plan: &Plan, out: &mut [u8]) {
    for (i, (&z, dst)) in codes.iter().zip(out.chunks_exact_mut(T::W)).enumerate() {
        let q = ((z >> 1) as i32 ^ -((z & 1) as i32)) as f64;
        let p = predict::<T>(reference, plan.alpha, i);
        T::store(rebuild(p, q, plan), dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(bound: f64, alpha: f64, prune: f64, nonneg: bool) -> Plan {
        Plan {
            step: 2.0 * bound,
            alpha,
            bound,
            prune_threshold: prune,
            nonneg,
            block: 16,
            relative: None,
        }
    }

    proptest! {
        #[test]
        fn bound_holds_and_dequantize_agrees(
            vals in proptest::collection::vec(prop_oneof![any::<f32>(), -3.0f32..3.0,
                Just(f32::NAN), Just(f32::INFINITY), Just(-0.0f32), Just(1e-42f32)], 0..400),
            refs in proptest::collection::vec(prop_oneof![any::<f32>(), -3.0f32..3.0], 400),
            bound in 1e-6f64..1.0, alpha in prop_oneof![Just(0.0), -2.0f64..2.0],
            prune in prop_oneof![Just(0.0), 0.0f64..2.0], nonneg in any::<bool>(),
            d in 0usize..4) {
            let dtype = [DType::F16, DType::BF16, DType::F32, DType::F64][d];
            let w = dtype.size();
            let to = |v: f32| -> Vec<u8> {
                let mut b = vec![0u8; w];
                by_float!(dtype, store_one(v as f64, &mut b));
                b
            };
            fn store_one<T: Float>(v: f64, b: &mut [u8]) { T::store(v, b) }
            fn load_one<T: Float>(b: &[u8]) -> f64 { T::load(b) }
            let raw: Vec<u8> = vals.iter().flat_map(|&v| to(v)).collect();
            let rf: Vec<u8> = refs[..vals.len()].iter().flat_map(|&v| to(v)).collect();
            let p = plan(bound, alpha, prune, nonneg);
            let n = vals.len();
            let (mut codes, mut dec) = (vec![0u32; n], vec![0u8; raw.len()]);
            let q = quantize(&raw, Some(&rf), dtype, &p, &mut codes, &mut dec);
            for i in 0..n {
                let (x, y) = (by_float!(dtype, load_one(&raw[i * w..])),
                              by_float!(dtype, load_one(&dec[i * w..])));
                if q.escapes.contains(&(i as u32)) {
                    prop_assert_eq!(&dec[i * w..(i + 1) * w], &raw[i * w..(i + 1) * w]);
                } else {
                    prop_assert!((y - x).abs() <= p.limit(), "x={} y={}", x, y);
                    prop_assert!(!nonneg || x < 0.0 || y >= 0.0);
                }
            }
            let mut again = vec![0u8; raw.len()];
            dequantize(&codes, Some(&rf), dtype, &p, &mut again);
            for &e in &q.escapes {
                let e = e as usize;
                again[e * w..(e + 1) * w].copy_from_slice(&raw[e * w..(e + 1) * w]);
            }
            prop_assert_eq!(again, dec);
        }
    }

    #[test]
    fn alpha_fits_a_scaled_reference() {
        let r: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
            .collect();
        let x: Vec<f32> = r.iter().map(|v| 0.5 * v).collect();
        let b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|f| f.to_le_bytes()).collect() };
        let s = stats(&b(&x), Some(&b(&r)), DType::F32);
        assert!((s.alpha() - 0.5).abs() < 1e-9);
        let unrelated: Vec<f32> = (0..1000).map(|i| (i * 53 % 97) as f32 - 48.0).collect();
        assert_eq!(stats(&b(&unrelated), Some(&b(&r)), DType::F32).alpha(), 0.0);
    }
}
